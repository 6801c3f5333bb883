"""Training in several processes, for real, on this CPU.

- ``harness run --launcher accelerate --num-gpus 2 --zero 0``: accelerate starts two processes (torchrun)
  that train with DDP over gloo: the TRL stages and our PPO, with a killed PPO resumed.
- DeepSpeed ZeRO-3 shards a model over two processes, and the policy save must gather it whole.
accelerate runs DeepSpeed only on CUDA, so ZeRO-2/3 through ``harness run`` are not run here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import harness
from zero3_save_worker import TINY, lora_policy
from harness.models import model_path

LAUNCH = ("--profile", "smoke", "--launcher", "accelerate", "--num-gpus", "2", "--zero", "0", "--set", "evaluate=[]")
PPO_KILLED = ("--methods", "ppo", "--set", "ppo.steps=4", "--set", "ppo.save_steps=1")


def stage(run: Path, name: str) -> tuple[Path, dict]:
    folder = next((run / "stages").glob(f"{name}-*"))
    return folder, json.loads((folder / "stats.json").read_text())


def train_log(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    harness("run", "--methods", "ppo,rsdpo", *LAUNCH, "--run-dir", str(root / "run"), cwd=root, timeout=900)
    return root / "run"


@pytest.mark.smoke
def test_trained_stages_run_in_two_processes_that_split_the_data(ddp_run):
    for name in ("sft", "reward_model", "ppo", "rsdpo"):
        assert stage(ddp_run, name)[1]["launch"] | {"cuda_peak_allocated_bytes_per_rank": None} == {
            "launcher": "accelerate", "num_processes": 2, "strategy": "ddp", "cuda_peak_allocated_bytes_per_rank": None}
    for name in ("samples", "scored_samples"):
        assert "launch" not in stage(ddp_run, name)[1]  # single-process stages ran once, in the harness
    # smoke SFT: 16 demonstrations, 4 per process per step, 2 steps. One epoch means each process saw half.
    folder, stats = stage(ddp_run, "sft")
    assert stats["global_step"] == 2 and train_log(folder)[-1]["epoch"] == 1.0
    manifest = json.loads((ddp_run / "manifest.json").read_text())
    assert manifest["launch"] == {"launcher": "accelerate", "num_processes": 2, "strategy": "ddp"}


@pytest.mark.smoke
def test_ppo_in_two_processes_rolls_out_its_share_and_saves_one_trained_policy(ddp_run):
    folder, stats = stage(ddp_run, "ppo")
    assert (stats["processes"], stats["rollouts_per_process"], stats["episodes"]) == (2, 4, 2 * 8)
    assert [entry["step"] for entry in train_log(folder)] == [1, 2]
    assert not (folder / "checkpoints").exists()
    trained = load_file(folder / "policy" / "model.safetensors")
    start = load_file(stage(ddp_run, "sft")[0] / "policy" / "model.safetensors")
    assert trained.keys() == start.keys()
    assert any(not torch.equal(trained[name], start[name]) for name in trained)


@pytest.mark.smoke
def test_a_killed_two_process_ppo_resumes_from_its_checkpoint(ddp_run):
    command = [sys.executable, "-m", "harness", "run", *PPO_KILLED, *LAUNCH, "--run-dir", str(ddp_run)]
    first = subprocess.Popen(command, cwd=ddp_run.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.monotonic() + 600
    try:
        # sft and reward_model are reused from the fixture's run; the new PPO stage checkpoints every step.
        while not list((ddp_run / "stages").glob("ppo-*/checkpoints/ppo_state.pt")):
            assert first.poll() is None, "harness run ended before PPO wrote a checkpoint"
            assert time.monotonic() < deadline, "no PPO checkpoint after 600 s"
            time.sleep(0.2)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the harness and accelerate; the workers die with accelerate
        first.wait()
    assert not survivors(ddp_run), "a worker outlived the killed run"
    harness("run", *PPO_KILLED, *LAUNCH, "--run-dir", str(ddp_run), cwd=ddp_run.parent, timeout=900)
    folders = [f for f in (ddp_run / "stages").glob("ppo-*") if json.loads((f / "stats.json").read_text())["steps"] == 4]
    (folder,) = folders
    stats = json.loads((folder / "stats.json").read_text())
    assert stats["resumed_from_step"] >= 1 and stats["episodes"] == 4 * 8
    assert [entry["step"] for entry in train_log(folder)] == [1, 2, 3, 4]


def survivors(run: Path, wait_s: float = 10) -> list[int]:
    """Processes still working on ``run`` after ``wait_s`` seconds."""
    import psutil

    deadline = time.monotonic() + wait_s
    while True:
        alive = []
        for process in psutil.process_iter(["pid", "cmdline"]):
            if str(run) in " ".join(process.info["cmdline"] or []):
                alive.append(process.info["pid"])
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None


@pytest.mark.skipif(not HAS_DEEPSPEED and not os.environ.get("CI"),  # `make setup` installs it: CI must run this
                    reason="deepspeed is not installed (pip install -e '.[dev]')")
def test_zero3_sharded_policy_is_saved_whole_with_lora_merged(tmp_path):
    worker = Path(__file__).with_name("zero3_save_worker.py")
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    str(worker), str(tmp_path)], check=True, timeout=600, capture_output=True)
    for rank in (0, 1):
        shards = json.loads((tmp_path / f"rank-{rank}.json").read_text())
        assert shards["sharded"] == shards["parameters"] > 0  # every weight was a shard when the save began
    saved = load_file(tmp_path / "policy" / "model.safetensors")
    expected = lora_policy().merge_and_unload().state_dict()
    base = load_file(Path(model_path(TINY)) / "model.safetensors")
    assert saved.keys() == base.keys()
    for name, tensor in saved.items():
        assert torch.equal(tensor, expected[name]), name
    assert any(not torch.equal(saved[name], base[name]) for name in saved)  # the adapters were merged in
