"""One stage in one launched process: ``accelerate launch ... -m harness._stage_worker --stage-key KEY ...``.

Every process re-plans the run from the same profile, methods and overrides as the harness process that
launched it, finds the stage by its key (so it runs exactly what was planned, or fails), and runs
``method.run`` with the TRL trainer inside doing the distributed work. Rank 0's stats and every rank's
CUDA peak go to ``<stage>/.launch/rank-<r>.json``; the launching process writes stats.json, profile.json
and DONE. The final model save is made main-process only, followed by a barrier, so no rank reads a
folder (the reward model's held-out check does) before it is whole.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from harness.launch import HANDOFF_DIR, die_with_parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m harness._stage_worker",
                                     description="run one planned stage in a process started by accelerate launch")
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--profile", required=True)
    parser.add_argument("--methods", required=True, help="the methods the harness run was asked for, comma-separated")
    parser.add_argument("--stage-key", required=True, help="key of the planned stage to run")
    parser.add_argument("--resumed", action="store_true", help="the stage folder holds an earlier attempt")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    die_with_parent()  # the accelerate launcher, which dies with the harness process
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))

    import torch

    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)  # models loaded with .to("cuda") land on this rank's GPU

    from harness.method import StageContext
    from harness.pipeline import PipelineError, pick_device, plan
    from harness.registry import methods
    from harness.runner import resolve_run_config
    from harness.store import RunStore, write_json

    requested = [name for name in args.methods.split(",") if name]
    run_config = resolve_run_config(requested, args.profile, args.overrides)
    planned = {stage.name: stage for stage in plan(requested, run_config, methods)}
    stage = next((s for s in planned.values() if s.key == args.stage_key), None)
    if stage is None:
        raise PipelineError(f"no planned stage has key {args.stage_key} (profile {args.profile}, methods "
                            f"{args.methods}, overrides {args.overrides}); keys: "
                            f"{', '.join(f'{s.name}={s.key}' for s in planned.values())}")
    device = pick_device(run_config.core.device)
    from accelerate import PartialState

    # Join the process group before any model loads: under ZeRO-3 transformers loads models as zero.Init
    # shards (TRL's DPO reference among them), and DeepSpeed sizes its batch from the group's world size.
    # On a CPU run the processes are CPU processes over gloo (--zero 0).
    PartialState(cpu=device == "cpu")
    store = RunStore(args.run_dir)
    inputs = {}
    for alias, source in stage.inputs.items():
        folder = planned[source].folder_name
        if not store.is_done(folder):
            raise PipelineError(f"stage '{stage.name}' needs '{source}', but {store.stage_dir(folder)} has no DONE")
        inputs[alias] = store.stage_dir(folder)
    ctx = StageContext(
        name=stage.name, key=stage.key, dir=store.stage_dir(stage.folder_name),
        config=run_config.sections[stage.section], run=run_config, inputs=inputs,
        device=device, resumed=args.resumed,
    )
    _save_on_main_process_only()
    stats = stage.method.run(ctx) or {}
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    write_json(ctx.dir / HANDOFF_DIR / f"rank-{rank}.json",
               {"rank": rank, "stats": stats if rank == 0 else None, "cuda_peak_allocated_bytes": peak})
    return 0


def _save_on_main_process_only() -> None:
    """Trained stages save through ``harness.training.save_pretrained``: only the main process writes the
    folder (all ranks hold the same weights under DDP and ZeRO-2), and every rank waits until it is whole."""
    import harness.training
    from accelerate import PartialState

    save = harness.training.save_pretrained

    def save_then_wait(model, tokenizer, folder):
        state = PartialState()
        if state.is_main_process:
            save(model, tokenizer, folder)
        state.wait_for_everyone()

    harness.training.save_pretrained = save_then_wait


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as err:  # noqa: BLE001  one line per rank, as the CLI does; HARNESS_DEBUG=1 for the traceback
        if os.environ.get("HARNESS_DEBUG"):
            raise
        print(f"harness worker (rank {os.environ.get('RANK', '0')}): error: {err}", file=sys.stderr)
        sys.exit(1)
