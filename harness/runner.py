"""``harness run``: resolve the config, plan the stages, run them, and record how the results were made."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from harness.config import DEFAULT_PROFILE, RunConfig, read_profile, resolve_config, to_plain
from harness.pipeline import PipelineError, now, pick_device, plan, run_lock, run_stages, stage_order
from harness.provenance import environment
from harness.registry import PluginLoadError, Registry, UnknownPlugin, methods
from harness.store import RunStore, write_json, write_yaml


@dataclass
class RunOutcome:
    store: RunStore
    stages: dict[str, dict]


def check_available(requested: list[str], registry: Registry = methods) -> None:
    """Fail before any work when a requested method is not installed, naming all that are missing."""
    missing = [name for name in requested if name not in registry]
    if missing:
        raise PipelineError(
            f"not available yet: {', '.join(missing)} (available methods: {', '.join(registry.names())})"
        )


def plugin_config_classes(registry: Registry, required: list[str], raw_sections: list[str]) -> dict[str, type]:
    """Config dataclasses of the plugins a run touches: its stages and any section the profile sets."""
    classes = {}
    for name in dict.fromkeys([*required, *raw_sections]):
        try:
            classes[name] = registry.get(name).config_class
        except (UnknownPlugin, PluginLoadError):
            if name in required:
                raise
            # not a plugin: resolve_config reports it as an unknown key with the closest valid one
    return classes


def resolve_run_config(
    requested: list[str], profile: str = DEFAULT_PROFILE, overrides: list[str] = (), registry: Registry = methods
) -> RunConfig:
    order = stage_order(requested, registry)
    raw_sections = [key.partition("=")[0].split(".")[0] for key in overrides] + list(read_profile(profile))
    return resolve_config(profile, list(overrides), plugin_config_classes(registry, order, raw_sections))


def execute(
    requested: list[str],
    profile: str = DEFAULT_PROFILE,
    run_dir: Path | None = None,
    overrides: list[str] = (),
    registry: Registry = methods,
) -> RunOutcome:
    check_available(requested, registry)
    run_config = resolve_run_config(requested, profile, overrides, registry)
    stages = plan(requested, run_config, registry)
    device = pick_device(run_config.core.device)
    store = RunStore(Path(run_dir) if run_dir else Path("runs") / profile)
    with run_lock(store):
        write_yaml(store.config_path, run_config.to_dict())
        manifest = store.read_manifest()
        manifest.update(
            run=store.root.name,
            profile=profile,
            requested=requested,
            created=manifest.get("created", now()),
            updated=now(),
            harness_environment=environment(),
            seeds={"seed": run_config.core.seed},
            device=device,
            stages={},
        )

        def record(name: str, stage_record: dict) -> None:
            manifest["stages"][name] = stage_record
            manifest["updated"] = now()
            write_json(store.manifest_path, manifest)

        records = run_stages(stages, run_config, store, device, on_stage_done=record)
        write_json(store.results_path, build_results(store, run_config, records, manifest, registry))
    return RunOutcome(store=store, stages=records)


def build_results(store: RunStore, run_config: RunConfig, records: dict, manifest: dict, registry: Registry) -> dict:
    """Every stage's stats, with the policies (result rows) listed per method and how they were made."""
    env = manifest["harness_environment"]
    results = {
        "run": manifest["run"],
        "produced_by": {
            "profile": run_config.profile,
            "model": to_plain(run_config.core.model),
            "data": to_plain(run_config.core.data),
            "seed": run_config.core.seed,
            "device": manifest["device"],
            "versions": env["versions"],
            "git": env["git"],
            "config": "config.yaml",
        },
        "methods": {},
        "stages": {},
    }
    for name, record in records.items():
        folder = store.root / record["dir"]
        entry = {
            "key": record["key"],
            "dir": record["dir"],
            "stats": json.loads((folder / "stats.json").read_text()),
            "profile": json.loads((folder / "profile.json").read_text()),
        }
        results["stages"][name] = entry
        if registry.get(name).produces == "policy":
            results["methods"][name] = {**entry, "policy": f"{record['dir']}/policy"}
    return results
