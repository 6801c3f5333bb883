"""``harness run --launcher accelerate --num-gpus N``: training stages under ``accelerate launch``.

Stages whose method is marked ``distributed`` (the TRL-trained sft, reward_model, rs, dpo, rsdpo, dpo-bw,
grpo, rloo, and our PPO) run as ``accelerate launch --config_file <yaml> --num_processes N -m
harness._stage_worker ...``, with DeepSpeed ZeRO-2 (default) or ZeRO-3 from the JSON configs shipped in
``harness/launch_configs/``, or plain DDP (``--zero 0``); every other stage (data, sampling, scoring,
pair selection, evaluations) runs once, in the harness process. accelerate runs DeepSpeed on CUDA GPUs
only; DDP also runs on a machine without one, each process on the CPU over gloo (the tests do this).
The harness process keeps all the bookkeeping (stats.json, profile.json, DONE, manifest): a launched
stage only runs ``method.run`` and hands its stats back through ``<stage>/.launch/``.

The global batch of a launched stage is per_device_train_batch_size x gradient_accumulation_steps x N.
Like the device, N is not part of stage keys: it is recorded in the manifest and the stage's stats.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from harness.method import StageContext
from harness.pipeline import PipelineError, PlannedStage
from harness.store import write_yaml

LAUNCHERS = ("none", "accelerate")
ZERO_STAGES = (0, 2, 3)  # 0: plain DDP, no DeepSpeed
WORKER_MODULE = "harness._stage_worker"
HANDOFF_DIR = ".launch"  # inside the stage folder: what the launched processes hand back
LAUNCH_DIR = "launch"  # inside the run folder: the generated accelerate configs


def check_zero(zero: int) -> None:
    if zero not in ZERO_STAGES:
        raise PipelineError(f"--zero must be one of {', '.join(map(str, ZERO_STAGES))}, found {zero}")


def strategy_name(zero: int) -> str:
    return f"deepspeed-zero{zero}" if zero else "ddp"


def deepspeed_config_path(zero: int) -> Path:
    """The DeepSpeed JSON shipped with the package for ZeRO stage ``zero`` (2 or 3)."""
    check_zero(zero)
    if zero == 0:
        raise PipelineError("--zero 0 is plain DDP: it has no DeepSpeed config")
    return Path(str(files("harness") / "launch_configs" / f"zero{zero}.json"))


def accelerate_config(num_processes: int, zero: int) -> dict:
    """An accelerate config (what ``accelerate config`` would write): DeepSpeed with our JSON, or DDP.

    No ``mixed_precision`` here: with a ``deepspeed_config_file`` accelerate refuses it, and either way the
    stage's own config decides (TRL's bf16 flag, which the JSON's ``"auto"`` follows)."""
    if zero == 0:
        # MULTI_GPU makes accelerate start the processes with torchrun; without CUDA the worker makes them
        # CPU processes over gloo (accelerate's MULTI_CPU launcher would want mpirun instead).
        backend = {"distributed_type": "MULTI_GPU"}
    else:
        backend = {
            "distributed_type": "DEEPSPEED",
            "deepspeed_config": {
                "deepspeed_config_file": str(deepspeed_config_path(zero)),
                # Models are loaded before the TRL config exists, so zero.Init could not apply anyway.
                "zero3_init_flag": False,
            },
        }
    return {
        "compute_environment": "LOCAL_MACHINE",
        **backend,
        "machine_rank": 0,
        "main_training_function": "main",
        "num_machines": 1,
        "num_processes": num_processes,
        "rdzv_backend": "static",
        "same_network": True,
        "use_cpu": False,
    }


def write_accelerate_config(run_root: Path, num_processes: int, zero: int) -> Path:
    path = Path(run_root) / LAUNCH_DIR / f"accelerate-{strategy_name(zero)}-{num_processes}gpu.yaml"
    write_yaml(path, accelerate_config(num_processes, zero))
    return path


def accelerate_executable() -> str:
    """The ``accelerate`` script of this environment (beside the running Python), else the one on PATH."""
    beside = Path(sys.executable).parent / "accelerate"
    return str(beside) if beside.exists() else (shutil.which("accelerate") or "accelerate")


def die_with_parent() -> None:
    """Linux: this process is SIGKILLed when its parent dies. torchrun starts its workers in sessions of
    their own, out of reach of a signal to the run's process group: without this a killed run would leave
    them training, and writing into the stage its rerun resumes. Elsewhere: nothing."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG


def worker_command(config_file: Path, num_processes: int, run_root: Path, profile: str, requested: list[str],
                   overrides: list[str], stage_key: str, resumed: bool = False) -> list[str]:
    """The exact ``accelerate launch`` command that runs one planned stage in ``num_processes`` processes."""
    command = [
        accelerate_executable(), "launch",
        "--config_file", str(config_file),
        "--num_processes", str(num_processes),
        "-m", WORKER_MODULE,
        "--run-dir", str(run_root),
        "--profile", profile,
        "--methods", ",".join(requested),
        "--stage-key", stage_key,
    ]
    if resumed:
        command.append("--resumed")
    for override in overrides:
        command += ["--set", override]
    return command


@dataclass
class AccelerateLauncher:
    """``execute_stage`` for ``run_stages``: distributed stages under accelerate, the rest in process."""

    run_root: Path
    profile: str
    requested: list[str]
    overrides_by_key: dict[str, list[str]]  # stage key -> the --set overrides of its sweep point
    num_processes: int
    zero: int = 2
    run_command: Callable[[list[str]], int] = field(
        default=lambda cmd: subprocess.run(cmd, check=False, preexec_fn=die_with_parent).returncode)

    def __post_init__(self):
        if self.num_processes < 1:
            raise PipelineError(f"--num-gpus must be at least 1, found {self.num_processes}")
        check_zero(self.zero)

    def launches(self, stage: PlannedStage) -> bool:
        return bool(getattr(stage.method, "distributed", False))

    def command(self, stage: PlannedStage, resumed: bool = False) -> list[str]:
        config_file = write_accelerate_config(self.run_root, self.num_processes, self.zero)
        return worker_command(config_file, self.num_processes, self.run_root, self.profile, self.requested,
                              self.overrides_by_key[stage.key], stage.key, resumed)

    def describe(self, stage: PlannedStage) -> str:
        """One line per stage for ``--dry-run``: where it runs and, when launched, the exact command."""
        if not self.launches(stage):
            return f"{stage.name}: in the harness process (single-process stage)"
        return f"{stage.name}: {shlex.join(self.command(stage))}"

    def __call__(self, stage: PlannedStage, ctx: StageContext) -> dict:
        if not self.launches(stage):
            return stage.method.run(ctx) or {}
        if self.zero and not default_num_gpus():
            raise PipelineError(f"stage '{stage.name}': --zero {self.zero} runs DeepSpeed, which accelerate runs on "
                                "CUDA GPUs only, and torch sees none; use --zero 0 (DDP, CPU processes over gloo)")
        handoff = ctx.dir / HANDOFF_DIR
        shutil.rmtree(handoff, ignore_errors=True)
        command = self.command(stage, resumed=ctx.resumed)
        print(f"harness: launching {stage.name}: {shlex.join(command)}", file=sys.stderr)
        code = self.run_command(command)
        if code != 0:
            raise PipelineError(f"stage '{stage.name}': accelerate launch exited with status {code}; "
                                f"the command was: {shlex.join(command)}")
        return collect_handoff(handoff, stage.name, self.num_processes, self.zero)


def collect_handoff(handoff: Path, stage_name: str, num_processes: int, zero: int) -> dict:
    """Rank 0's stats, plus every rank's CUDA peak, from the files the launched processes wrote."""
    ranks = {}
    for path in sorted(handoff.glob("rank-*.json")):
        record = json.loads(path.read_text())
        ranks[record["rank"]] = record
    if 0 not in ranks or len(ranks) != num_processes:
        raise PipelineError(f"stage '{stage_name}': expected {num_processes} rank files in {handoff}, "
                            f"found ranks {sorted(ranks)}")
    stats = dict(ranks[0]["stats"])
    stats["launch"] = {
        "launcher": "accelerate",
        "num_processes": num_processes,
        "strategy": strategy_name(zero),
        "cuda_peak_allocated_bytes_per_rank": [ranks[r].get("cuda_peak_allocated_bytes") for r in sorted(ranks)],
    }
    shutil.rmtree(handoff, ignore_errors=True)
    return stats


def default_num_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def make_launcher(launcher: str, run_root: Path, profile: str, requested: list[str], points: list, plans: list,
                  num_gpus: int | None, zero: int = 2) -> AccelerateLauncher:
    """The launcher for ``harness run --launcher``; ``points``/``plans``: the sweep points and their plans."""
    if launcher not in LAUNCHERS or launcher == "none":
        raise PipelineError(f"make_launcher needs a launcher from {', '.join(LAUNCHERS[1:])}, found '{launcher}'")
    count = num_gpus if num_gpus is not None else default_num_gpus()
    if count < 1:
        raise PipelineError("--launcher accelerate: torch sees no CUDA device; pass --num-gpus N "
                            "(with --dry-run to only print the commands)")
    overrides_by_key: dict[str, list[str]] = {}
    for point, stages in zip(points, plans):
        for stage in stages:
            overrides_by_key.setdefault(stage.key, list(point.overrides))
    return AccelerateLauncher(Path(run_root).resolve(), profile, list(requested), overrides_by_key, count, zero)


def dry_run(requested: list[str], profile: str, run_dir: Path | None, overrides: list[str], launcher: str,
            num_gpus: int | None, zero: int = 2) -> list[str]:
    """What ``harness run`` would do, stage by stage, without running anything: one line per stage, with
    the exact command of each launched stage (the accelerate config it names is written, so the command
    can be run by hand). Finished stages are marked and would be reused."""
    from harness.registry import methods
    from harness.runner import check_available, resolve_run_config
    from harness.store import RunStore
    from harness.sweep import merge_plans, sweep_points
    from harness.pipeline import plan

    check_available(requested, methods)
    points = sweep_points(list(overrides))
    plans = [plan(requested, resolve_run_config(requested, profile, p.overrides), methods) for p in points]
    stages = merge_plans(points, plans)
    store = RunStore(Path(run_dir) if run_dir else Path("runs") / profile)
    chosen = make_launcher(launcher, store.root, profile, requested, points, plans, num_gpus, zero) \
        if launcher != "none" else None
    lines = []
    for stage in stages:
        if store.is_done(stage.folder_name):
            lines.append(f"{stage.name}: done, reused ({store.stage_dir(stage.folder_name)})")
        elif chosen is None:
            lines.append(f"{stage.name}: in the harness process")
        else:
            lines.append(chosen.describe(stage))
    return lines
