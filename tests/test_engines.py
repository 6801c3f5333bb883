"""The HF generation engine and the resumable sampling file, on the tiny random model."""

from __future__ import annotations

from harness.config import ModelConfig
from harness.engines import HFEngine, SamplingConfig
from harness.models import model_path
from methods.sampling import _whole_batches

TINY = ModelConfig(source="tiny-random-llama", dtype="float32", max_length=256)
PROMPTS = [[{"role": "user", "content": f"Question {i}?"}] for i in range(5)]


def test_batches_are_the_same_whether_run_straight_or_resumed():
    engine = HFEngine.load(model_path(TINY), TINY, "cpu")
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=8, batch_size=2)
    straight = dict(engine.generate_batches(PROMPTS, 3, sampling, seed=7))
    resumed = dict(engine.generate_batches(PROMPTS, 3, sampling, seed=7, start_batch=1))
    assert list(straight) == [0, 1, 2] and list(resumed) == [1, 2]
    assert resumed == {number: straight[number] for number in (1, 2)}
    assert [len(group) for group in straight[2]] == [3]  # the last batch holds the fifth prompt alone
    completion = straight[0][0][0]
    assert completion.finish_reason in ("stop", "length") and 1 <= completion.token_count <= 8


def test_greedy_generation_is_deterministic():
    engine = HFEngine.load(model_path(TINY), TINY, "cpu")
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=6, batch_size=4)
    first = engine.generate(PROMPTS[:2], 1, greedy, seed=0)
    assert first == engine.generate(PROMPTS[:2], 1, greedy, seed=123)


def test_a_torn_last_batch_is_cut_off_before_resuming(tmp_path):
    partial = tmp_path / "samples.partial.jsonl"
    partial.write_text("".join(f'{{"n": {i}}}\n' for i in range(7)) + '{"n": 7, "tex')
    assert _whole_batches(partial, lines_per_batch=3) == 2
    assert partial.read_text().count("\n") == 6
    assert _whole_batches(tmp_path / "missing.jsonl", 3) == 0
