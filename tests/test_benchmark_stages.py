"""MT-Bench and AlpacaEval as stages of a run: answers and judgments in the upstream formats, judged by a
real `transformers serve`, with a judge cache that makes a second run call nobody."""

from __future__ import annotations

import json

import pytest

from conftest import harness

pytestmark = pytest.mark.smoke

BENCHMARKS = ["--set", "evaluate=[mt_bench,alpaca_eval]"]


def eval_set_override(shared_data) -> list[str]:
    path = shared_data / "alpaca_eval" / "eval_set" / "alpaca_eval_gpt4_baseline.json"
    return ["--set", f"alpaca_eval_answers.eval_set={path}"]


def run_benchmarks(tmp_path, shared_data, name: str, *extra: str) -> dict:
    harness("run", "--profile", "smoke", "--methods", "sft", "--run-dir", str(tmp_path / name),
            *BENCHMARKS, *eval_set_override(shared_data), *extra, cwd=tmp_path)
    return json.loads((tmp_path / name / "results.json").read_text())


def stage_dir(run: dict, tmp_path, name: str, stage: str):
    return tmp_path / name / run["stages"][stage]["dir"]


def test_benchmark_files_are_in_upstream_formats_and_rerun_makes_no_calls(tmp_path, shared_data, monkeypatch):
    monkeypatch.setenv("HARNESS_JUDGE_CACHE", str(tmp_path / "judge_cache"))
    first = run_benchmarks(tmp_path, shared_data, "first")
    mt, ae = first["methods"]["sft"]["evaluations"]["mt_bench"], first["methods"]["sft"]["evaluations"]["alpaca_eval"]
    assert mt["questions"] == 8 and mt["judgments"] == 16 and mt["judge_usage"]["requests"] == 16
    assert mt["judge"]["model"] == "tiny-random-llama (local transformers serve)"
    assert mt["parse_failures"] + sum(1 for _ in []) <= 16 and mt["parse_failure_rate"] == mt["parse_failures"] / 16
    assert ae["instructions"] == 5 and ae["judge_usage"]["requests"] == 5 and ae["reference"] == "gpt4_1106_preview"
    assert ae["length_controlled"].startswith("not available")

    answers = [json.loads(line) for line in
               (stage_dir(first, tmp_path, "first", "mt_bench_answers@sft") / "model_answer.jsonl").open()]
    assert set(answers[0]) == {"question_id", "answer_id", "model_id", "choices", "tstamp"}
    assert answers[0]["model_id"] == "sft" and len(answers[0]["choices"][0]["turns"]) == 2

    # Our judgment and annotation files read back through the importers that reproduce published results.
    judgments = stage_dir(first, tmp_path, "first", "mt_bench@sft") / "judgments.jsonl"
    imported = json.loads(harness("eval", "import-mtbench", str(judgments), "--json", cwd=tmp_path).stdout)
    assert imported["models"].get("sft", {}).get("overall") == mt["overall"]
    assert imported["models"].get("sft", {"dropped": 16})["dropped"] == mt["parse_failures"]
    annotations = stage_dir(first, tmp_path, "first", "alpaca_eval@sft") / "annotations.json"
    imported = json.loads(harness("eval", "import-alpaca", str(annotations), "--json", cwd=tmp_path).stdout)
    assert {k: imported[k] for k in ("win_rate", "n_wins", "n_draws", "n_total")} == \
        {k: ae[k] for k in ("win_rate", "n_wins", "n_draws", "n_total")}
    outputs = json.loads((stage_dir(first, tmp_path, "first", "alpaca_eval_answers@sft") / "model_outputs.json").read_text())
    assert len(outputs) == 5 and set(outputs[0]) == {"instruction", "output", "generator", "dataset"}
    assert sorted(o["dataset"] for o in outputs) == ["helpful_base", "koala", "oasst", "selfinstruct", "vicuna"]

    # A new run folder regenerates the same answers (seeded) and finds every judgment in the cache.
    second = run_benchmarks(tmp_path, shared_data, "second")
    for evaluation in ("mt_bench", "alpaca_eval"):
        usage = second["methods"]["sft"]["evaluations"][evaluation]["judge_usage"]
        assert usage["requests"] == 0 and usage["cached"] == first["methods"]["sft"]["evaluations"][evaluation]["judge_usage"]["requests"]


def test_an_unreachable_judge_fails_the_stage_in_one_line_and_keeps_the_answers(tmp_path, shared_data, monkeypatch):
    monkeypatch.setenv("HARNESS_JUDGE_CACHE", str(tmp_path / "judge_cache"))
    from evals.judges import free_port

    result = harness("run", "--profile", "smoke", "--methods", "sft", "--run-dir", str(tmp_path / "run"),
                     "--set", "evaluate=[mt_bench]", "--set", "mt_bench.judge.backend=openai",
                     "--set", f"mt_bench.judge.base_url=http://127.0.0.1:{free_port()}/v1",
                     "--set", "mt_bench.judge.retries=0", cwd=tmp_path, check=False)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("harness: error: MT-Bench judging of sft: 16 of 16 judge calls") and "APIConnectionError" in last
    stages = tmp_path / "run" / "stages"
    (answers,) = stages.glob("mt_bench_answers@sft-*")
    (judged,) = stages.glob("mt_bench@sft-*")
    assert (answers / "DONE").exists() and not (judged / "DONE").exists()
    rows = [json.loads(line) for line in (judged / "judgments.jsonl").open()]
    assert len(rows) == 16 and all(r["failed_calls"] == 1 and "APIConnectionError" in r["error"] for r in rows)


@pytest.mark.real
def test_smollm2_judges_through_transformers_serve(tmp_path, shared_data, monkeypatch):
    """The quick profile's judge: the packaged SmolLM2 behind a real `transformers serve`."""
    monkeypatch.setenv("HARNESS_JUDGE_CACHE", str(tmp_path / "judge_cache"))
    smollm2 = ["--set", "mt_bench.judge.model=smollm2-135m-instruct", "--set", "alpaca_eval.judge.model=smollm2-135m-instruct",
               "--set", "mt_bench.judge.max_tokens=24", "--set", "alpaca_eval.judge.max_tokens=2",
               "--set", "alpaca_eval.judge.reply_prefix=true",
               "--set", "mt_bench_answers.question_ids=[81,111]", "--set", "mt_bench_answers.per_category=null",
               "--set", "alpaca_eval_answers.per_dataset=null", "--set", "alpaca_eval_answers.eval_set="
               f"{shared_data / 'alpaca_eval' / 'eval_set' / 'alpaca_eval_gpt4_baseline.json'}"]
    first = run_benchmarks(tmp_path, shared_data, "first", *smollm2[:-2], "--set", "alpaca_eval_answers.per_dataset=1")
    mt = first["methods"]["sft"]["evaluations"]["mt_bench"]
    assert mt["judge"]["model"] == "smollm2-135m-instruct (local transformers serve)"
    assert mt["judge_usage"]["requests"] == 4 and mt["judge_usage"]["completion_tokens"] > 0
    rows = [json.loads(line) for line in (stage_dir(first, tmp_path, "first", "mt_bench@sft") / "judgments.jsonl").open()]
    assert all(r["judgment"].strip() for r in rows)  # a real model writes text, parseable or not
    # With its reply started at "Output (", even a 135M judge picks a side every time.
    ae = first["methods"]["sft"]["evaluations"]["alpaca_eval"]
    assert ae["parse_failures"] == 0 and ae["n_total"] == 5 and ae["judge"]["reply_prefix"] is True
    second = run_benchmarks(tmp_path, shared_data, "second", *smollm2[:-2], "--set", "alpaca_eval_answers.per_dataset=1")
    assert second["methods"]["sft"]["evaluations"]["mt_bench"]["judge_usage"]["requests"] == 0
    assert second["methods"]["sft"]["evaluations"]["alpaca_eval"]["judge_usage"]["requests"] == 0
