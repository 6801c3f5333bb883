"""RS, DPO, RS-DPO and DPO-BW on the smoke profile through the CLI, and what each stage leaves on disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import harness
from harness.store import read_jsonl
from methods.pair_selection import pair_statistics, rsdpo_pairs
from methods.sampling import reward_matrix

pytestmark = pytest.mark.smoke

METHODS = ["rs", "dpo", "rsdpo", "dpo-bw"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("methods") / "run"
    harness("run", "--profile", "smoke", "--methods", ",".join(METHODS), "--run-dir", str(run_dir),
            cwd=run_dir.parent)
    return run_dir


def stage(run: Path, name: str) -> Path:
    return run / json.loads((run / "manifest.json").read_text())["stages"][name]["dir"]


def stats(run: Path, name: str) -> dict:
    return json.loads((stage(run, name) / "stats.json").read_text())


def test_samples_are_drawn_once_scored_once_and_shared(run):
    manifest = json.loads((run / "manifest.json").read_text())
    assert [name for name in manifest["stages"] if name.startswith(("samples", "scored_samples"))] == [
        "samples", "scored_samples"
    ]
    scored = read_jsonl(stage(run, "scored_samples") / "scored_samples.jsonl")
    assert len(scored) == 8 * 4  # smoke: 8 prompts, k = 4
    assert set(scored[0]) >= {"prompt_id", "sample_id", "text", "token_count", "finish_reason", "reward"}
    assert {s["finish_reason"] for s in scored} <= {"stop", "length"}
    assert all(0 < s["token_count"] <= 16 for s in scored)
    for method in ("rs", "rsdpo", "dpo-bw"):
        assert json.loads((stage(run, method) / "fingerprint.json").read_text())["inputs"]["scored_samples"] == (
            manifest["stages"]["scored_samples"]["key"]
        )


def test_rsdpo_trains_on_exactly_the_pairs_of_algorithm_1(run):
    prompt_ids, rewards, _ = reward_matrix(read_jsonl(stage(run, "scored_samples") / "scored_samples.jsonl"))
    config = json.loads((stage(run, "rsdpo") / "fingerprint.json").read_text())["config"]
    selection = rsdpo_pairs(rewards, tau=config["tau"], eta=config["eta"])
    pairs = read_jsonl(stage(run, "rsdpo") / "pairs.jsonl")
    expected = [f"{prompt_ids[p]}:{j}>{l}" for p, j, l in
                zip(selection.prompt_index, selection.chosen_index, selection.rejected_index)]
    assert [p["id"] for p in pairs] == expected and len(pairs) > 0
    gap = config["tau"] * np.log(config["eta"] / (1 - config["eta"]))
    assert all(p["chosen_reward"] - p["rejected_reward"] > gap for p in pairs)
    assert stats(run, "rsdpo")["pair_selection"] == pair_statistics(selection)
    assert stats(run, "rsdpo")["train_pairs"] == len(pairs)


def test_dpo_bw_pairs_the_best_and_worst_sample_of_each_prompt(run):
    scored = read_jsonl(stage(run, "scored_samples") / "scored_samples.jsonl")
    pairs = read_jsonl(stage(run, "dpo-bw") / "pairs.jsonl")
    for pair in pairs:
        rewards = [s["reward"] for s in scored if s["prompt_id"] == pair["id"].split(":")[0]]
        assert pair["chosen_reward"] == max(rewards) and pair["rejected_reward"] == min(rewards)


def test_pair_stats_name_the_selector_and_the_samples_used(run):
    for method, selector in (("rsdpo", "threshold"), ("dpo-bw", "best_vs_worst")):
        pair_stats = json.loads((stage(run, method) / "pair_stats.json").read_text())
        assert (pair_stats["selection"], pair_stats["k"]) == (selector, 4)  # smoke: samples.k = 4, all used
        assert (stats(run, method)["selection"], stats(run, method)["k"]) == (selector, 4)
    assert stats(run, "rs")["k"] == 4


def test_rs_fine_tunes_on_the_best_of_k(run):
    scored = read_jsonl(stage(run, "scored_samples") / "scored_samples.jsonl")
    selected = read_jsonl(stage(run, "rs") / "selected.jsonl")
    assert len(selected) == 8
    for sample in selected:
        assert sample["reward"] == max(s["reward"] for s in scored if s["prompt_id"] == sample["prompt_id"])
    assert stats(run, "rs")["train_records"] == 8


def test_dpo_trains_on_the_human_pairs_with_the_sft_policy_as_reference(run):
    dpo = stats(run, "dpo")
    assert dpo["train_pairs"] == 16 and dpo["global_step"] == 2
    assert dpo["reference"] == str(stage(run, "sft") / "policy")


def test_every_method_is_a_result_row_with_its_policy_and_evaluation(run):
    results = json.loads((run / "results.json").read_text())
    assert list(results["methods"]) == ["sft", *METHODS]
    for name, row in results["methods"].items():
        assert (run / row["policy"] / "model.safetensors").exists(), name
        reward = row["evaluations"]["heldout_reward"]["reward"]
        assert reward["n"] == 8 and reward["ci_low"] <= reward["mean"] <= reward["ci_high"]
    assert set(results["comparisons"]["heldout_reward"]) >= {"rsdpo - sft", "dpo - sft", "rs - rsdpo"}
    accuracy = results["stages"]["reward_model"]["stats"]["heldout_accuracy"]
    assert 0.0 <= accuracy <= 1.0 and results["stages"]["reward_model"]["stats"]["heldout_pairs"] == 4


def test_an_eta_sweep_reuses_samples_and_rewards(run):
    harness("run", "--profile", "smoke", "--methods", "rsdpo", "--run-dir", str(run),
            "--set", "rsdpo.eta=0.6,0.9", cwd=run.parent)
    manifest = json.loads((run / "manifest.json").read_text())
    records = manifest["stages"]
    for shared in ("sft", "samples", "scored_samples", "reward_model"):
        assert records[shared]["status"] == "reused"
    swept = [records["rsdpo[rsdpo.eta=0.6]"], records["rsdpo[rsdpo.eta=0.9]"]]
    assert [r["status"] for r in swept] == ["ran", "ran"] and swept[0]["key"] != swept[1]["key"]
    kept = [json.loads((run / r["dir"] / "stats.json").read_text())["pair_selection"]["pairs_kept"] for r in swept]
    assert kept[0] >= kept[1]  # a higher eta keeps a subset of the pairs
    results = json.loads((run / "results.json").read_text())
    assert results["sweep"]["keys"] == ["rsdpo.eta"]
    assert {"rsdpo[rsdpo.eta=0.6]", "rsdpo[rsdpo.eta=0.9]"} <= set(results["methods"])
