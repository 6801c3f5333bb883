"""Scale-out on CPU: engine choice, the accelerate launch command and DeepSpeed configs, the dry run, and
the stage worker run for real (one process, without accelerate; tests/test_distributed.py launches two).
GPU paths are marked ``gpu`` and skipped here with the reason."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import yaml

from harness.config import ModelConfig
from harness.engines import EngineUnavailable, HFEngine, SamplingConfig, load_engine, select_engine
from harness.launch import (
    AccelerateLauncher, accelerate_config, deepspeed_config_path, worker_command, write_accelerate_config,
)
from harness.models import model_path
from harness.pipeline import plan, run_stages
from harness.registry import methods
from harness.runner import execute, resolve_run_config
from harness.store import RunStore
from conftest import harness

HAS_VLLM = importlib.util.find_spec("vllm") is not None
TINY = ModelConfig(source="tiny-random-llama", dtype="float32", max_length=256)
PROMPTS = [[{"role": "user", "content": f"Question {i}?"}] for i in range(5)]


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_auto_picks_hf_here_and_says_why():
    assert select_engine("auto", "cpu") == ("hf", "auto: the run's device is 'cpu', vllm needs CUDA")
    if not HAS_VLLM:
        assert select_engine("auto", "cuda") == ("hf", "auto: vllm is not installed")
    assert select_engine("hf", "cuda") == ("hf", "requested")
    engine = load_engine(model_path(TINY), TINY, "cpu", "auto")
    assert isinstance(engine, HFEngine) and engine.selection.startswith("auto: ")


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed here: forcing it cannot fail for lack of it")
def test_forcing_vllm_without_it_fails_before_any_work(tmp_path):
    with pytest.raises(EngineUnavailable, match="vllm is not installed.*--engine hf"):
        select_engine("vllm", "cuda")
    result = harness("run", "--methods", "sft", "--profile", "smoke", "--engine", "vllm", "--run-dir",
                     str(tmp_path / "run"), cwd=tmp_path, check=False, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("harness: error: engine 'vllm' requested but vllm")
    assert not (tmp_path / "run" / "stages").exists()  # nothing ran


def test_deepspeed_configs_ship_with_the_package_and_leave_batch_sizes_to_trl():
    for zero in (2, 3):
        config = json.loads(deepspeed_config_path(zero).read_text())
        assert config["zero_optimization"]["stage"] == zero
        # "auto" is filled by the HF Trainer integration from the stage's TRL config.
        assert config["train_micro_batch_size_per_gpu"] == "auto" and config["bf16"]["enabled"] == "auto"
    assert json.loads(deepspeed_config_path(3).read_text())["zero_optimization"][
        "stage3_gather_16bit_weights_on_model_save"] is True


def test_accelerate_config_and_command_parse_as_accelerate_reads_them(tmp_path):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    path = write_accelerate_config(tmp_path, 8, 2)
    assert yaml.safe_load(path.read_text()) == accelerate_config(8, 2)
    loaded = load_config_from_file(str(path))  # accelerate's own reader
    assert loaded.num_processes == 8 and loaded.distributed_type == "DEEPSPEED"
    assert loaded.deepspeed_config["deepspeed_config_file"] == str(deepspeed_config_path(2))
    assert loaded.mixed_precision is None  # accelerate refuses it beside a deepspeed_config_file

    command = worker_command(path, 8, tmp_path, "paper-hh", ["rsdpo"], ["rsdpo.eta=0.9"], "abc123", resumed=True)
    assert command[1:] == ["launch", "--config_file", str(path), "--num_processes", "8", "-m",
                           "harness._stage_worker", "--run-dir", str(tmp_path), "--profile", "paper-hh",
                           "--methods", "rsdpo", "--stage-key", "abc123", "--resumed", "--set", "rsdpo.eta=0.9"]
    args = launch_command_parser().parse_args(command[2:])
    assert (args.config_file, args.num_processes, args.module) == (str(path), 8, True)
    assert args.training_script == "harness._stage_worker" and "--stage-key" in args.training_script_args


def test_dry_run_prints_the_commands_and_runs_nothing(tmp_path):
    result = harness("run", "--methods", "rsdpo", "--profile", "smoke", "--launcher", "accelerate",
                     "--num-gpus", "8", "--dry-run", "--run-dir", str(tmp_path / "run"), cwd=tmp_path, timeout=120)
    lines = dict(line.split(": ", 1) for line in result.stdout.strip().splitlines())
    for trained in ("sft", "reward_model", "rsdpo"):
        assert " launch --config_file " in lines[trained] and "--num_processes 8 -m harness._stage_worker" in lines[trained]
    for single in ("samples", "scored_samples", "heldout_reward@sft"):
        assert lines[single].startswith("in the harness process")
    key = resolve_and_plan(["rsdpo"])["rsdpo"].key
    assert f"--stage-key {key}" in lines["rsdpo"]
    assert not (tmp_path / "run" / "stages").exists()
    assert (tmp_path / "run" / "launch" / "accelerate-deepspeed-zero2-8gpu.yaml").exists()  # the command's config


def resolve_and_plan(requested, overrides=()):
    config = resolve_run_config(requested, "smoke", list(overrides))
    return {stage.name: stage for stage in plan(requested, config, methods)}


def test_a_launched_stage_runs_in_the_worker_and_hands_its_stats_back(tmp_path):
    """The whole launcher path with one change: the worker is started by Python, not accelerate, as a
    single process (tests/test_distributed.py launches two). It re-plans the stage, trains it, and the harness process records it."""
    root = tmp_path / "run"
    execute(["demonstrations"], "smoke", root)
    stages = resolve_and_plan(["sft"])
    launched: list[list[str]] = []

    def without_accelerate(command: list[str]) -> int:
        launched.append(command)
        worker = command[command.index("-m"):]
        # One process, no rendezvous: without RANK/WORLD_SIZE the worker is rank 0 and accelerate stays local.
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
        return subprocess.run([sys.executable, *worker], cwd=tmp_path, env=env, timeout=300).returncode

    launcher = AccelerateLauncher(root.resolve(), "smoke", ["sft"], {s.key: [] for s in stages.values()}, 1,
                                  zero=0, run_command=without_accelerate)
    records = run_stages([stages["demonstrations"], stages["sft"]], RunStore(root), "cpu", execute_stage=launcher)
    assert records["demonstrations"]["status"] == "reused" and records["sft"]["status"] == "ran"
    assert len(launched) == 1 and "--stage-key" in launched[0]
    folder = root / records["sft"]["dir"]
    stats = json.loads((folder / "stats.json").read_text())
    assert stats["global_step"] == 2 and stats["launch"]["num_processes"] == 1
    assert stats["launch"]["cuda_peak_allocated_bytes_per_rank"] == [None]
    assert (folder / "policy" / "config.json").exists() and (folder / "DONE").exists()
    assert not (folder / ".launch").exists()


def test_deepspeed_without_cuda_is_refused_at_run_time_with_the_way_out(tmp_path):
    stages = resolve_and_plan(["sft"])
    launcher = AccelerateLauncher(tmp_path, "smoke", ["sft"], {s.key: [] for s in stages.values()}, 8, zero=3,
                                  run_command=lambda command: pytest.fail("must not launch"))
    assert "deepspeed-zero3" in launcher.describe(stages["sft"])  # the dry run still shows the command
    if _cuda():
        pytest.skip("CUDA is present: DeepSpeed is not refused here")
    from harness.pipeline import PipelineError

    class Ctx:
        dir, resumed = tmp_path, False

    with pytest.raises(PipelineError, match="CUDA GPUs only.*use --zero 0"):
        launcher(stages["sft"], Ctx())


def test_ddp_config_lets_torchrun_start_the_processes(tmp_path):
    from accelerate.commands.config.config_args import load_config_from_file

    loaded = load_config_from_file(str(write_accelerate_config(tmp_path, 2, 0)))
    assert loaded.distributed_type == "MULTI_GPU" and loaded.num_processes == 2 and not loaded.deepspeed_config
    with pytest.raises(Exception, match="plain DDP"):
        deepspeed_config_path(0)


# ------------------------------------------------------------------------------------------ GPU only

GPU_REASON = ("needs a CUDA GPU and vllm (pip install 'rsdpo-harness[vllm]' in a fresh environment); "
              f"here: CUDA {'yes' if _cuda() else 'no'}, vllm {'installed' if HAS_VLLM else 'not installed'}")
needs_vllm_gpu = pytest.mark.skipif(not (HAS_VLLM and _cuda()), reason=GPU_REASON)


@pytest.mark.gpu
@needs_vllm_gpu
def test_vllm_engine_samples_k_per_prompt_and_resumes_by_batch():
    engine = load_engine(model_path(TINY), TINY, "cuda", "vllm")
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=8, batch_size=2)
    straight = dict(engine.generate_batches(PROMPTS, 3, sampling, seed=7))
    resumed = dict(engine.generate_batches(PROMPTS, 3, sampling, seed=7, start_batch=1))
    assert resumed == {number: straight[number] for number in (1, 2)}
    assert [len(group) for group in straight[0]] == [3, 3]
    assert all(1 <= c.token_count <= 8 for groups in straight.values() for g in groups for c in g)


@pytest.mark.gpu
@needs_vllm_gpu
def test_vllm_weight_sync_changes_greedy_outputs_to_the_policy_s():
    import torch

    from harness.models import load_causal_lm

    engine = load_engine(model_path(TINY), TINY, "cuda", "vllm")
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=6, batch_size=4)
    policy = load_causal_lm(model_path(TINY), TINY, "cuda")
    with torch.no_grad():
        for param in policy.parameters():
            param.add_(torch.randn_like(param) * 0.5)
    assert engine.sync_weights(policy) > 0
    hf = HFEngine(policy, engine.tokenizer, "cuda")
    _, hf_ids = hf.generate_ids(PROMPTS[:2], 1, greedy)
    _, vllm_ids = engine.generate_ids(PROMPTS[:2], 1, greedy)
    assert hf_ids.tolist() == vllm_ids.tolist()  # same prompt ids, then the synced policy's greedy tokens


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.mark.gpu
@pytest.mark.skipif(_cuda_devices() < 2 or importlib.util.find_spec("deepspeed") is None,
                    reason=f"needs 2 CUDA GPUs and deepspeed; here: {_cuda_devices()} GPUs, deepspeed "
                           f"{'installed' if importlib.util.find_spec('deepspeed') else 'not installed'}")
def test_zero3_on_two_gpus_trains_ppo_and_rsdpo_and_saves_whole_policies(tmp_path):
    from safetensors.torch import load_file

    harness("run", "--methods", "ppo,rsdpo", "--profile", "smoke", "--set", "device=cuda", "--set", "evaluate=[]",
            "--launcher", "accelerate", "--num-gpus", "2", "--zero", "3", "--run-dir", str(tmp_path / "run"),
            cwd=tmp_path, timeout=1200)
    start = load_file(model_path(TINY) + "/model.safetensors")
    for name in ("sft", "ppo", "rsdpo"):
        folder = next((tmp_path / "run" / "stages").glob(f"{name}-*"))
        stats = json.loads((folder / "stats.json").read_text())
        assert stats["launch"]["strategy"] == "deepspeed-zero3" and stats["launch"]["num_processes"] == 2
        saved = load_file(folder / "policy" / "model.safetensors")
        assert {k: v.shape for k, v in saved.items()} == {k: v.shape for k, v in start.items() if k in saved}
