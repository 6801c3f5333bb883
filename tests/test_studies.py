"""Studies (issue 9): sweeps over any key share the stages their points have in common; a reward model
degraded on purpose (label noise, fewer pairs); a k sweep from one sampling pass; pair selectors compared in
one sweep; HH-RLHF harmless-base as a preference source."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_DATA, harness
from harness.config import ConfigError
from harness.pipeline import plan
from harness.registry import methods
from harness.runner import resolve_run_config
from harness.store import read_jsonl
from harness.sweep import merge_plans, sweep_points
from methods.pair_selection import mean_minus_std_pairs, rsdpo_pairs
from methods.reward_model import degrade, split_heldout
from methods.sampled_pairs import first_k
from methods.sampling import reward_matrix

HARMLESS = SHARED_DATA / "hh_rlhf" / "harmless-base" / "test.jsonl.gz"


def planned_names(requested: list[str], overrides: list[str]) -> list[str]:
    """Stage names of the merged sweep plan on the smoke profile (no model is loaded)."""
    points = sweep_points(overrides)
    configs = [resolve_run_config(requested, "smoke", point.overrides) for point in points]
    return [stage.name for stage in merge_plans(points, [plan(requested, c, methods) for c in configs])]


# ----------------------------------------------------------------------------------------- planning (fast)


def test_a_reward_model_sweep_shares_sft_and_samples_and_splits_what_reads_the_reward_model():
    names = planned_names(["ppo", "rsdpo"], ["reward_model.label_noise=0,0.3"])
    for shared in ("demonstrations", "sft", "preferences", "prompts", "samples", "heldout_prompts"):
        assert names.count(shared) == 1, shared
    for per_point in ("reward_model", "scored_samples", "ppo", "rsdpo", "heldout_reward@rsdpo"):
        assert [n for n in names if n.split("[")[0] == per_point] == [
            f"{per_point}[reward_model.label_noise=0]", f"{per_point}[reward_model.label_noise=0.3]"
        ]


def test_a_k_and_selection_grid_samples_and_scores_once():
    names = planned_names(["rs", "rsdpo"], ["rsdpo.k=2,4", "rsdpo.selection=threshold,mean_minus_2std"])
    for shared in ("sft", "samples", "reward_model", "scored_samples", "rs", "heldout_reward@rs"):
        assert names.count(shared) == 1, shared
    assert sorted(n for n in names if n.startswith("rsdpo[")) == [
        f"rsdpo[rsdpo.k={k},rsdpo.selection={s}]" for k in (2, 4) for s in ("mean_minus_2std", "threshold")
    ]


def test_a_samples_k_sweep_is_the_expensive_one():
    # Contrast with the above: sweeping samples.k itself re-samples per value.
    names = planned_names(["rsdpo"], ["samples.k=2,4"])
    assert "samples" not in names and {"samples[samples.k=2]", "samples[samples.k=4]"} <= set(names)


@pytest.mark.parametrize("override, message", [
    ("rsdpo.selection=best_vs_wrst", "'rsdpo.selection': unknown pair selector 'best_vs_wrst' (did you mean "
                                     "'best_vs_worst'?); available: best_vs_worst, mean_minus_2std, threshold"),
    ("rsdpo.k=0", "'rsdpo.k' must be at least 1"),
    ("dpo-bw.k=0", "'dpo-bw.k' must be at least 1"),
    ("rs.k=-1", "'rs.k' must be at least 1"),
    ("reward_model.label_noise=1.5", "'reward_model.label_noise' must be in [0, 1]; found 1.5"),
    ("reward_model.max_pairs=0", "'reward_model.max_pairs' must be at least 1"),
])
def test_bad_study_settings_fail_before_any_work(override, message):
    with pytest.raises(ConfigError) as err:
        resolve_run_config(["rsdpo"], "smoke", [override])
    assert message in str(err.value)


def test_degrading_a_reward_model_needs_one_to_train():
    with pytest.raises(ConfigError, match="do nothing with 'reward_model.pretrained'"):
        resolve_run_config(["rsdpo"], "smoke", ["reward_model.pretrained=some/model", "reward_model.label_noise=0.1"])


# ------------------------------------------------------------------------------------ reward-model noise


def pairs(n: int) -> list[dict]:
    return [{"id": f"p{i}", "prompt": [{"role": "user", "content": f"q{i}"}],
             "chosen": [{"role": "assistant", "content": f"good{i}"}],
             "rejected": [{"role": "assistant", "content": f"bad{i}"}]} for i in range(n)]


def test_label_noise_swaps_a_seeded_share_of_training_pairs_and_nests():
    train = pairs(40)
    noisy, flipped = degrade(train, 0.25, None, seed=0)
    assert len(flipped) == 10 and len(noisy) == 40
    for original, used in zip(train, noisy):
        swapped = original["id"] in flipped
        assert used["chosen"] == (original["rejected"] if swapped else original["chosen"])
        assert used["rejected"] == (original["chosen"] if swapped else original["rejected"])
    assert degrade(train, 0.25, None, seed=0)[1] == flipped  # reproducible
    assert degrade(train, 0.25, None, seed=1)[1] != flipped  # and seeded
    assert set(degrade(train, 0.1, None, seed=0)[1]) < set(flipped) < set(degrade(train, 0.5, None, seed=0)[1])
    assert degrade(train, 0.0, None, seed=0) == (train, [])
    assert train[0]["chosen"][0]["content"] == "good0"  # the caller's pairs are not modified


def test_max_pairs_keeps_the_first_pairs_then_noise_applies_to_them():
    noisy, flipped = degrade(pairs(40), 0.5, 6, seed=0)
    assert [p["id"] for p in noisy] == [f"p{i}" for i in range(6)] and len(flipped) == 3
    assert set(flipped) <= {f"p{i}" for i in range(6)}


def test_held_out_pairs_are_split_before_any_flip():
    train, heldout = split_heldout(pairs(40), 0.25, seed=0)
    _, flipped = degrade(train, 1.0, None, seed=0)
    assert len(flipped) == len(train) and not set(flipped) & {p["id"] for p in heldout}


# ------------------------------------------------------------------------------------------------ first k


def test_first_k_takes_the_first_samples_and_names_the_setting_when_too_many():
    rewards = np.arange(12.0).reshape(3, 4)
    assert first_k(rewards, None, "rsdpo.k", Path("x")) is rewards
    assert first_k(rewards, 2, "rsdpo.k", Path("x")).tolist() == [[0, 1], [4, 5], [8, 9]]
    with pytest.raises(ValueError, match=r"^rsdpo.k=8 but s.jsonl holds 4 samples per prompt \(samples.k=4\); "
                                         r"raise samples.k to at least 8 or lower rsdpo.k$"):
        first_k(rewards, 8, "rsdpo.k", Path("s.jsonl"))


# ------------------------------------------------------------------------------------ smoke pipelines


def stage_dir(run: Path, name: str) -> Path:
    return run / json.loads((run / "manifest.json").read_text())["stages"][name]["dir"]


def reward_model_of(results: dict, stage: str) -> str:
    """The reward_model stage a stage depends on, by walking the inputs recorded in results.json."""
    for source in results["stages"][stage]["inputs"].values():
        if source.split("[")[0] == "reward_model":
            return source
        if source.split("[")[0] != "sft" and (found := reward_model_of(results, source)):
            return found
    return ""


@pytest.fixture(scope="module")
def noise_run(tmp_path_factory) -> Path:
    """The issue's acceptance run: two reward models (clean, 30% flipped labels) under PPO and RS-DPO."""
    run = tmp_path_factory.mktemp("studies") / "run"
    harness("run", "--profile", "smoke", "--methods", "ppo,rsdpo", "--run-dir", str(run),
            "--set", "reward_model.label_noise=0,0.3", cwd=run.parent)
    return run


@pytest.mark.smoke
def test_a_label_noise_sweep_trains_sft_and_samples_once_and_two_points_per_method(noise_run):
    run = noise_run
    manifest = json.loads((run / "manifest.json").read_text())
    for shared in ("sft", "samples", "preferences", "prompts"):
        assert manifest["stages"][shared]["status"] == "ran"
        assert len(list((run / "stages").glob(f"{shared}-*"))) == 1, shared  # one folder: trained/drawn once

    clean, noisy = "reward_model[reward_model.label_noise=0]", "reward_model[reward_model.label_noise=0.3]"
    results = json.loads((run / "results.json").read_text())
    stats = {name: results["stages"][name]["stats"] for name in (clean, noisy)}
    # smoke: 16 pairs, a quarter held out -> 12 training pairs; 0.3 * 12 = 3.6 -> 4 flipped
    assert [(s["label_noise"], s["flipped_pairs"], s["train_pairs"], s["heldout_pairs"]) for s in stats.values()] == [
        (0.0, 0, 12, 4), (0.3, 4, 12, 4)
    ]
    flipped = json.loads((stage_dir(run, noisy) / "flipped_pairs.json").read_text())
    preferences = {p["id"]: p for p in read_jsonl(stage_dir(run, "preferences") / "preferences.jsonl")}
    for name in (clean, noisy):
        scores = read_jsonl(stage_dir(run, name) / "heldout_scores.jsonl")
        # The same clean held-out pairs for both points, none of them flipped; accuracy recomputes from them.
        assert [s["id"] for s in scores] == [s["id"] for s in read_jsonl(stage_dir(run, clean) / "heldout_scores.jsonl")]
        assert len(flipped) == 4 and not set(flipped) & {s["id"] for s in scores} and set(flipped) <= set(preferences)
        accuracy = np.mean([s["chosen_reward"] > s["rejected_reward"] for s in scores])
        assert stats[name]["heldout_accuracy"] == pytest.approx(accuracy)

    for method in ("ppo", "rsdpo"):
        points = [name for name in results["methods"] if name.split("[")[0] == method]
        assert points == [f"{method}[reward_model.label_noise=0]", f"{method}[reward_model.label_noise=0.3]"]
        for name in points:
            row = results["methods"][name]
            assert "reward" in row["evaluations"]["heldout_reward"]
            # The reward model's held-out accuracy is one lookup away from every method's scores.
            assert reward_model_of(results, name) == (clean if row["point"].endswith("=0") else noisy)
    assert results["sweep"]["keys"] == ["reward_model.label_noise"]
    # The report that `harness run` ends with plots each method's score against its reward model's accuracy.
    assert (run / "report" / "figures" / "rm_accuracy.png").stat().st_size > 0
    with open(run / "report" / "tables" / "ablation_reward_model_label_noise.csv") as fh:
        ablation = list(csv.DictReader(fh))
    assert sorted((r["method"], float(r["reward_model.label_noise"])) for r in ablation) == [
        ("ppo", 0.0), ("ppo", 0.3), ("rsdpo", 0.0), ("rsdpo", 0.3)]
    assert {float(r["reward_model_heldout_accuracy"]) for r in ablation} <= {
        stats[clean]["heldout_accuracy"], stats[noisy]["heldout_accuracy"]}


@pytest.mark.smoke
def test_a_k_and_selection_grid_runs_one_sampling_stage(noise_run):
    # In the same run folder: the clean point's samples and rewards are the ones every grid point reads.
    run = noise_run
    harness("run", "--profile", "smoke", "--methods", "rs,rsdpo", "--run-dir", str(run), "--set", "evaluate=[]",
            "--set", "rsdpo.k=2,4", "--set", "rsdpo.selection=threshold,mean_minus_2std", "--set", "rs.k=3",
            cwd=run.parent)
    manifest = json.loads((run / "manifest.json").read_text())
    assert [n for n in manifest["stages"] if n.startswith(("samples", "scored_samples"))] == ["samples", "scored_samples"]
    assert {manifest["stages"][n]["status"] for n in ("sft", "samples", "reward_model", "scored_samples")} == {"reused"}
    assert len(list((run / "stages").glob("samples-*"))) == 1
    assert [manifest["stages"][n]["status"] for n in manifest["stages"] if n.startswith("rsdpo[")] == ["ran"] * 4
    prompt_ids, rewards, _ = reward_matrix(read_jsonl(stage_dir(run, "scored_samples") / "scored_samples.jsonl"))
    assert rewards.shape == (8, 4)  # smoke: 8 prompts, samples.k = 4

    for k in (2, 4):
        for selection in ("threshold", "mean_minus_2std"):
            folder = stage_dir(run, f"rsdpo[rsdpo.k={k},rsdpo.selection={selection}]")
            pair_stats = json.loads((folder / "pair_stats.json").read_text())
            assert (pair_stats["selection"], pair_stats["k"]) == (selection, k)
            config = json.loads((folder / "fingerprint.json").read_text())["config"]
            expected = (rsdpo_pairs(rewards[:, :k], tau=config["tau"], eta=config["eta"]) if selection == "threshold"
                        else mean_minus_std_pairs(rewards[:, :k]))
            ids = [f"{prompt_ids[p]}:{j}>{l}" for p, j, l in
                   zip(expected.prompt_index, expected.chosen_index, expected.rejected_index)]
            assert [p["id"] for p in read_jsonl(folder / "pairs.jsonl")] == ids and ids
            assert all(int(i.split(":")[-1].split(">")[0]) < k and int(i.split(">")[1]) < k for i in ids)

    selected = read_jsonl(stage_dir(run, "rs") / "selected.jsonl")
    assert [s["sample_id"] for s in selected] == np.argmax(rewards[:, :3], axis=1).tolist()

    # k above samples.k: one line naming both settings, after the shared stages are reused.
    failed = harness("run", "--profile", "smoke", "--methods", "rsdpo", "--run-dir", str(run),
                     "--set", "rsdpo.k=8", "--set", "evaluate=[]", cwd=run.parent, check=False)
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines()[-1].startswith(
        "harness: error: rsdpo.k=8 but ") and "samples.k=4" in failed.stderr


@pytest.mark.smoke
@pytest.mark.skipif(not HARMLESS.is_file(), reason=f"shared data not found at {HARMLESS}")
def test_hh_rlhf_harmless_base_trains_a_reward_model(tmp_path):
    run = tmp_path / "harmless"
    harness("run", "--profile", "smoke", "--methods", "reward_model", "--run-dir", str(run),
            "--set", f"data.preferences.path={HARMLESS}", cwd=tmp_path)
    preferences = read_jsonl(stage_dir(run, "preferences") / "preferences.jsonl")
    assert len(preferences) == 16 and preferences[0]["id"] == "harmless-base/test:1"
    assert preferences[0]["chosen"][-1]["role"] == "assistant" and preferences[0]["prompt"][-1]["role"] == "user"
    stats = json.loads((stage_dir(run, "reward_model") / "stats.json").read_text())
    assert (stats["train_pairs"], stats["heldout_pairs"]) == (12, 4) and 0.0 <= stats["heldout_accuracy"] <= 1.0
