"""`harness profile` on the smoke profile: real subprocesses, real stage profiles, the table and the chart."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from conftest import harness


@pytest.mark.smoke
def test_profile_dpo_smoke(tmp_path):
    out = tmp_path / "profile"
    result = harness("profile", "--profile", "smoke", "--methods", "dpo", "--steps", "1", "--repeats", "2",
                     "--out", str(out), cwd=tmp_path)
    assert "| dpo | training |" in result.stdout
    summary = json.loads((out / "profile.json").read_text())
    assert {p.name for p in out.iterdir()} >= {"profile.json", "profile.csv", "profile.md", "profile.png", "base"}
    assert (out / "profile.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rows = summary["measurements"]
    assert [(r["method"], r["stage"], r["repeat"]) for r in rows] == [("dpo", "dpo", 0), ("dpo", "dpo", 1)]
    for row in rows:
        assert row["peak_bytes"] > 100 * 2**20 and row["wall_s"] > 0
        assert row["throughput"]["train_tokens"] > 0 and row["throughput"]["train_samples_per_s"] > 0
        if not torch.cuda.is_available():  # the CUDA path is skipped with its reason, never silently
            assert "no CUDA device" in row["cuda"]["skipped"]
    (phase,) = summary["phases"]
    peaks = sorted(r["peak_bytes"] for r in rows)
    assert phase["peak_bytes"] == {"median": sum(peaks) / 2, "min": peaks[0], "max": peaks[1], "n": 2}
    # each repeat ran in its own fresh process: a reused stage would have raised
    assert summary["produced_by"]["overrides"][:2] == ["evaluate=[]", "data.prompts.limit=4"]
    # the analytic estimate is fed the same settings; on this CPU it lands within 30% of the measured peak
    (method,) = summary["methods"]
    assert abs(method["error_percent"]) < 30, method
    with open(out / "profile.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [r["phase"] for r in table] == ["training", "peak (max over phases)"]

    # the DPO length fed to the estimate is the longest padded batch drawn (1 step of the smoke batch), counted
    # while the stage's records existed; it never exceeds the stage's max_length
    lengths = summary["produced_by"]["token_lengths"]["dpo"]
    assert 0 < lengths["training"] <= 128 and "HF Trainer's order" in lengths["source"]["training"]
    assert summary["estimate_breakdown"]["dpo"][0]["workload"]["seq_len"] == lengths["training"]

    # each `harness run` puts its analytic estimate beside the measured peak in results.json, where reports read it
    from reports.tables import estimated_bytes

    run_results = json.loads((out / "repeat-0" / "dpo" / "results.json").read_text())
    estimated = run_results["methods"]["dpo"]["profile"]["estimated"]
    assert "skipped" not in estimated, estimated
    assert estimated_bytes(run_results["methods"]["dpo"]) == estimated["peak_bytes"]
    assert estimated["token_lengths"]["training"] == lengths["training"]
    assert abs(estimated["peak_bytes"] / method["estimated_bytes"] - 1) < 0.05  # baselines measured apart

    # --re-estimate: recomputed from the stored folder, nothing measured again. Without the stored lengths
    # (an older profile.json) it recounts them from the records left in base/: the same numbers.
    stored = json.loads((out / "profile.json").read_text())
    del stored["produced_by"]["token_lengths"]
    (out / "profile.json").write_text(json.dumps(stored))
    again = harness("profile", "--re-estimate", str(out), cwd=tmp_path)
    assert "Estimates recomputed from the stored measurements" in again.stdout
    redone = json.loads((out / "profile.json").read_text())
    assert redone["measurements"] == summary["measurements"]
    assert redone["methods"][0]["estimated_bytes"] == method["estimated_bytes"]
    assert redone["produced_by"]["token_lengths"]["dpo"] == lengths


def test_re_estimate_names_a_missing_folder(tmp_path):
    result = harness("profile", "--re-estimate", str(tmp_path / "nowhere"), cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert f"{tmp_path / 'nowhere' / 'profile.json'}: not found" in result.stderr


def test_hf_trainer_order_is_accelerates_seedable_sampler():
    # The order `harness profile` assumes for TRL trainers, against the DataLoader accelerate prepares for the
    # HF Trainer (use_seedable_sampler, data_seed), over two epochs of 10 records in batches of 4.
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration
    from torch.utils.data import DataLoader

    from harness.profile_command import hf_trainer_order
    from profiling.batch_lengths import trainer_batches

    accelerator = Accelerator(cpu=True, dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True,
                                                                                  data_seed=3))
    loader = accelerator.prepare(DataLoader(list(range(10)), batch_size=4, shuffle=True))
    drawn = [batch.tolist() for _ in range(2) for batch in loader]
    assert drawn == trainer_batches(10, 4, 6, hf_trainer_order(3)(10))


def test_profile_rejects_unknown_method(tmp_path):
    result = harness("profile", "--profile", "smoke", "--methods", "kto", "--out", str(tmp_path / "p"),
                     cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert "cannot profile kto; profiled methods: rs, rsdpo, dpo-bw, dpo, ppo" in result.stderr
