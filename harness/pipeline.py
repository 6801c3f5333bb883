"""Plan the stages a run needs, key them by content, and run the ones not yet done.

A stage's key hashes its own config section, the core sections it ``uses``, the keys of the stages it
``needs`` and the harness version: change eta and only the stages downstream of eta get new keys.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tqdm.auto import tqdm

from harness import __version__
from harness.config import RunConfig, to_plain
from harness.method import Method, StageContext
from harness.registry import Registry
from harness.store import RunStore, write_json
from profiling import measure, stage_throughput


class PipelineError(RuntimeError):
    """The requested stages cannot be planned or run (cycle, missing plugin, locked run...)."""


@dataclass
class PlannedStage:
    name: str  # unique in a run: the plugin name or "<evaluation>@<policy>", "[point]" added in sweeps
    section: str  # the plugin name: its config section
    method: Method
    inputs: dict[str, str]  # input name the stage reads -> planned stage that provides it
    key: str
    fingerprint: dict
    run_config: RunConfig

    @property
    def folder_name(self) -> str:
        return f"{self.name.split('[')[0]}-{self.key}"  # the key alone tells sweep points apart


def stage_order(requested: list[str], registry: Registry) -> list[str]:
    """The requested stages and everything they need, dependencies first."""
    order: list[str] = []
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise PipelineError(f"stages need each other in a cycle: {' -> '.join([*visiting, name])}")
        visiting.append(name)
        for need in registry.get(name).needs:
            visit(need)
        visiting.pop()
        order.append(name)

    for name in requested:
        visit(name)
    return order


def plan(requested: list[str], run_config: RunConfig, registry: Registry) -> list[PlannedStage]:
    """The requested stages with their dependencies, then each configured evaluation once per policy."""
    planned: dict[str, PlannedStage] = {}

    def add(name: str, section: str, inputs: dict[str, str]) -> None:
        fingerprint = {
            "stage": section,
            "harness": __version__,
            "config": to_plain(run_config.sections[section]),
            "uses": {used: to_plain(run_config.section(used)) for used in registry.get(section).uses},
            "inputs": {alias: planned[source].key for alias, source in inputs.items()},
        }
        key = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:12]
        planned[name] = PlannedStage(name, section, registry.get(section)(), inputs, key, fingerprint, run_config)

    def add_with_needs(names: list[str]) -> None:
        for name in stage_order(names, registry):
            if name not in planned:
                add(name, name, {need: need for need in registry.get(name).needs})

    def add_evaluation(evaluation: str, policy: str) -> str:
        """``<evaluation>@<policy>``; a need that itself evaluates policies (answers before their judgments)
        is planned for the same policy."""
        name = f"{evaluation}@{policy}"
        if name not in planned:
            cls = registry.get(evaluation)
            if not cls.evaluates_policies:
                raise PipelineError(f"'{evaluation}' in evaluate is not an evaluation of policies")
            inputs = {"policy": policy}
            for need in cls.needs:
                if registry.get(need).evaluates_policies:
                    inputs[need] = add_evaluation(need, policy)
                else:
                    add_with_needs([need])
                    inputs[need] = need
            add(name, evaluation, inputs)
        return name

    add_with_needs(requested)
    policies = [name for name, stage in planned.items() if stage.method.produces == "policy"]
    for evaluation in run_config.core.evaluate if policies else ():
        for policy in policies:
            add_evaluation(evaluation, policy)
    return list(planned.values())


def pick_device(requested: str) -> str:
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise PipelineError("device is 'cuda' but torch sees no CUDA device; use --set device=cpu or auto")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


@contextmanager
def run_lock(store: RunStore) -> Iterator[None]:
    """One ``harness run`` per run folder at a time; the OS drops the lock if the process is killed."""
    store.root.mkdir(parents=True, exist_ok=True)
    with open(store.root / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PipelineError(f"another harness process is running in {store.root}") from None
        fh.write(str(os.getpid()))
        fh.flush()
        yield


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_stages(
    stages: list[PlannedStage],
    store: RunStore,
    device: str,
    on_stage_done: Callable[[str, dict], None] = lambda name, record: None,
    execute_stage: Callable[[PlannedStage, StageContext], dict] | None = None,
) -> dict[str, dict]:
    """Run every stage whose DONE is missing; return a record per stage (status, key, timings).

    ``execute_stage`` runs one stage and returns its stats (default: ``method.run`` in this process;
    ``harness.launch`` runs training stages under ``accelerate launch``); the bookkeeping stays here."""
    records: dict[str, dict] = {}
    bar = tqdm(stages, desc="stages", unit="stage", dynamic_ncols=True)
    for stage in bar:
        bar.set_postfix_str(stage.name)
        folder = store.stage_dir(stage.folder_name)
        record = {"key": stage.key, "dir": str(folder.relative_to(store.root))}
        if store.is_done(stage.folder_name):
            profile = json.loads((folder / "profile.json").read_text())
            record.update(status="reused", wall_s=profile.get("wall_s"), finished=profile.get("finished"))
        else:
            resumed = folder.exists()
            folder.mkdir(parents=True, exist_ok=True)
            write_json(folder / "fingerprint.json", stage.fingerprint)
            ctx = StageContext(
                name=stage.name,
                key=stage.key,
                dir=folder,
                config=stage.run_config.sections[stage.section],
                run=stage.run_config,
                inputs={alias: store.root / records[source]["dir"] for alias, source in stage.inputs.items()},
                device=device,
                resumed=resumed,
            )
            started = now()
            with measure() as profile:
                stats = (execute_stage(stage, ctx) if execute_stage else stage.method.run(ctx)) or {}
            profile.update(started=started, finished=now(), resumed=resumed, device=device)
            profile["throughput"] = stage_throughput(stats, profile["wall_s"], _train_log(folder))
            write_json(folder / "stats.json", stats)
            write_json(folder / "profile.json", profile)
            store.mark_done(stage.folder_name)  # last: a stage without DONE runs again
            record.update(status="resumed" if resumed else "ran", wall_s=profile["wall_s"], finished=profile["finished"])
        records[stage.name] = record
        on_stage_done(stage.name, record)
    return records


def _train_log(folder: Path) -> list[dict] | None:
    """The trainer's log history a training stage wrote (TRL's ``num_tokens`` gives training tokens/s)."""
    path = folder / "train_log.jsonl"
    if not path.exists():
        return None
    from harness.store import read_jsonl

    return read_jsonl(path)
