"""PPO, GRPO and RLOO on the smoke profile through the CLI."""

from __future__ import annotations

import json

import pytest

from conftest import harness
from harness.store import read_jsonl

pytestmark = pytest.mark.smoke

DIAGNOSTICS = {"objective/scores", "objective/kl", "policy/entropy", "policy/clipfrac", "loss/value",
               "policy/approx_kl", "val/response_length"}


def test_ppo_grpo_and_rloo_train_policies_from_sft(tmp_path):
    run = tmp_path / "run"
    harness("run", "--profile", "smoke", "--methods", "ppo,grpo,rloo", "--run-dir", str(run), cwd=tmp_path)
    results = json.loads((run / "results.json").read_text())
    assert list(results["methods"]) == ["sft", "ppo", "grpo", "rloo"]
    for name in ("ppo", "grpo", "rloo"):
        row = results["methods"][name]
        assert (run / row["policy"] / "model.safetensors").exists()
        assert row["stats"]["reference"].endswith("policy")
        assert "heldout_reward" in row["evaluations"]
    ppo = results["methods"]["ppo"]
    log = read_jsonl(run / ppo["dir"] / "train_log.jsonl")
    assert len(log) == ppo["stats"]["steps"] == 2 and DIAGNOSTICS <= set(log[-1])
    assert not (run / ppo["dir"] / "checkpoints").exists()
    assert results["methods"]["grpo"]["stats"]["global_step"] == 2
