"""The `smoke` pipeline through the real CLI, in subprocesses: run folder, reuse, resume after SIGKILL."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import harness

pytestmark = pytest.mark.smoke

SFT = ["run", "--profile", "smoke", "--methods", "sft"]


def tree_digest(folder: Path) -> dict[str, str]:
    """Content hash and mtime of every file below ``folder``: proof that a reused stage was not rewritten."""
    return {
        str(p.relative_to(folder)): f"{hashlib.sha256(p.read_bytes()).hexdigest()}:{p.stat().st_mtime_ns}"
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def stage_records(run_dir: Path) -> dict[str, dict]:
    return json.loads((run_dir / "manifest.json").read_text())["stages"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    result = harness(*SFT, "--run-dir", str(run_dir), cwd=run_dir.parent)
    assert f"results: {run_dir / 'results.json'}" in result.stdout
    return run_dir


def test_the_run_folder_is_laid_out_as_designed(smoke_run):
    config = yaml.safe_load((smoke_run / "config.yaml").read_text())
    assert config["profile"] == "smoke" and config["model"]["source"] == "tiny-random-llama"
    assert config["sft"]["max_steps"] == 2

    manifest = json.loads((smoke_run / "manifest.json").read_text())
    env = manifest["harness_environment"]
    assert env["versions"]["torch"] and env["versions"]["trl"] and env["versions"]["rsdpo-harness"]
    assert env["hardware"]["cpu_count"] >= 1 and "git" in env
    assert manifest["seeds"] == {"seed": 0}
    # sft, then the default evaluation of every policy: held-out reward (it needs a reward model).
    assert list(manifest["stages"]) == [
        "demonstrations", "sft", "heldout_prompts", "preferences", "reward_model", "heldout_reward@sft"
    ]

    for name, record in manifest["stages"].items():
        folder = smoke_run / record["dir"]
        assert folder.name == f"{name}-{record['key']}" and record["status"] == "ran" and record["wall_s"] > 0
        assert {"DONE", "stats.json", "profile.json", "fingerprint.json"} <= {p.name for p in folder.iterdir()}
        profile = json.loads((folder / "profile.json").read_text())
        assert profile["peak_rss_bytes"] > 0
        assert profile["cuda"].get("skipped") or profile["cuda"].get("devices")

    sft_dir = smoke_run / manifest["stages"]["sft"]["dir"]
    assert (sft_dir / "policy" / "model.safetensors").exists()
    assert (sft_dir / "policy" / "tokenizer_config.json").exists()
    assert not (sft_dir / "checkpoints").exists()
    stats = json.loads((sft_dir / "stats.json").read_text())
    assert stats["global_step"] == 2 and stats["train_records"] == 16

    results = json.loads((smoke_run / "results.json").read_text())
    assert results["methods"]["sft"]["stats"] == stats
    assert results["methods"]["sft"]["evaluations"]["heldout_reward"]["reward"]["n"] == 8
    assert results["methods"]["sft"]["policy"] == f"{manifest['stages']['sft']['dir']}/policy"
    assert results["produced_by"]["model"]["source"] == "tiny-random-llama"
    assert results["produced_by"]["seed"] == 0 and results["produced_by"]["versions"]["trl"]


def test_rerunning_reuses_every_finished_stage(smoke_run):
    before = tree_digest(smoke_run / "stages")
    harness(*SFT, "--run-dir", str(smoke_run), cwd=smoke_run.parent)
    assert {r["status"] for r in stage_records(smoke_run).values()} == {"reused"}
    assert tree_digest(smoke_run / "stages") == before


def test_a_changed_setting_reruns_only_what_depends_on_it(smoke_run):
    before = stage_records(smoke_run)
    harness(*SFT, "--run-dir", str(smoke_run), "--set", "sft.learning_rate=5e-4", cwd=smoke_run.parent)
    after = stage_records(smoke_run)
    for unchanged in ("demonstrations", "heldout_prompts", "preferences", "reward_model"):
        assert after[unchanged]["status"] == "reused" and after[unchanged]["key"] == before[unchanged]["key"]
    for downstream in ("sft", "heldout_reward@sft"):
        assert after[downstream]["status"] == "ran" and after[downstream]["key"] != before[downstream]["key"]
    assert yaml.safe_load((smoke_run / "config.yaml").read_text())["sft"]["learning_rate"] == 5e-4


def test_a_killed_run_resumes_and_reuses_finished_stages(tmp_path):
    run_dir = tmp_path / "run"
    # Long enough to be killed mid-training, after a checkpoint.
    args = [*SFT, "--run-dir", str(run_dir), "--set", "sft.max_steps=40", "--set", "sft.save_steps=4"]
    process = subprocess.Popen(
        [sys.executable, "-m", "harness", *args], cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + 300
    checkpoint = None
    while time.monotonic() < deadline and process.poll() is None:
        found = sorted(run_dir.glob("stages/sft-*/checkpoints/checkpoint-*/trainer_state.json"))
        if found:
            checkpoint = found[0]
            break
        time.sleep(0.1)
    assert checkpoint is not None, "the run ended or timed out before its first checkpoint"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()

    killed = stage_records(run_dir)
    assert list(killed) == ["demonstrations"]  # sft was running: not recorded as finished
    sft_dir = checkpoint.parents[2]
    assert not (sft_dir / "DONE").exists()
    finished_before = tree_digest(run_dir / killed["demonstrations"]["dir"])

    harness(*args, cwd=tmp_path)
    resumed = stage_records(run_dir)
    assert resumed["demonstrations"]["status"] == "reused"
    assert resumed["demonstrations"]["key"] == killed["demonstrations"]["key"]
    assert tree_digest(run_dir / killed["demonstrations"]["dir"]) == finished_before
    assert resumed["sft"]["status"] == "resumed" and (sft_dir / "DONE").exists()
    stats = json.loads((sft_dir / "stats.json").read_text())
    assert stats["resumed_from"].startswith("checkpoint-") and stats["global_step"] == 40


def test_a_third_party_plugin_runs_as_a_stage(tmp_path):
    run_dir = tmp_path / "run"
    harness("run", "--profile", "smoke", "--methods", "prompt-lengths", "--set", "prompt-lengths.unit=chars",
            "--run-dir", str(run_dir), cwd=tmp_path)
    record = stage_records(run_dir)["prompt-lengths"]
    lengths = [json.loads(line) for line in (run_dir / record["dir"] / "prompt_lengths.jsonl").read_text().splitlines()]
    prompts = [json.loads(line) for line in
               (run_dir / stage_records(run_dir)["prompts"]["dir"] / "prompts.jsonl").read_text().splitlines()]
    assert [row["length"] for row in lengths] == [len(p["prompt"][-1]["content"]) for p in prompts]


def test_methods_not_available_yet_are_named_before_any_work(tmp_path):
    result = harness("run", "--methods", "rs,kto,sft,orpo,rsdpo", "--run-dir", str(tmp_path / "run"),
                     cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        "harness: error: not available yet: kto, orpo (available methods: "
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n{oops\n',
         "record 2"),
        ('{"messages": [{"role": "user", "content": "hi"}]}\n', "field 'messages'"),
        ('{"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "x"}]}\n',
         "field 'messages[0].content'"),
        ("", "no records"),
    ],
    ids=["bad-json", "missing-reply", "wrong-type", "empty"],
)
def test_malformed_data_fails_in_one_line_and_leaves_no_done(tmp_path, content, problem):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    run_dir = tmp_path / "run"
    result = harness(*SFT, "--run-dir", str(run_dir), "--set", f"data.demonstrations.path={bad}",
                     "--set", "data.demonstrations.format=internal", cwd=tmp_path, check=False)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"harness: error: {bad}") and problem in last, last
    assert "Traceback" not in result.stderr
    assert list(run_dir.glob("stages/*/DONE")) == []
