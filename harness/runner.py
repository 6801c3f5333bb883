"""``harness run``: resolve the config, plan the stages, run them, and record how the results were made."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from harness.config import DEFAULT_PROFILE, RunConfig, resolve_config, to_plain
from harness.engines import select_engine
from harness.pipeline import PipelineError, now, pick_device, plan, run_lock, run_stages, stage_order
from harness.provenance import environment
from harness.registry import PluginLoadError, Registry, methods
from harness.statistics import paired_difference
from harness.store import RunStore, write_json, write_yaml
from harness.sweep import merge_plans, sweep_points


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


def plugin_config_classes(registry: Registry, required: list[str]) -> dict[str, type]:
    """Config dataclasses of every installed plugin; one that fails to load only matters when required."""
    classes = {}
    for name in registry.names():
        try:
            classes[name] = registry.get(name).config_class
        except PluginLoadError:
            if name in required:
                raise
    return classes


def resolve_run_config(
    requested: list[str], profile: str = DEFAULT_PROFILE, overrides: list[str] = (), registry: Registry = methods
) -> RunConfig:
    return resolve_config(profile, list(overrides), plugin_config_classes(registry, stage_order(requested, registry)))


def execute(
    requested: list[str],
    profile: str = DEFAULT_PROFILE,
    run_dir: Path | None = None,
    overrides: list[str] = (),
    registry: Registry = methods,
    launcher: str = "none",
    num_gpus: int | None = None,
    zero: int = 2,
) -> RunOutcome:
    """Plan and run; ``launcher="accelerate"`` runs training stages in ``num_gpus`` processes (harness.launch)."""
    check_available(requested, registry)
    points = sweep_points(list(overrides))
    configs = [resolve_run_config(requested, profile, point.overrides, registry) for point in points]
    plans = [plan(requested, config, registry) for config in configs]
    stages = merge_plans(points, plans)
    run_config = configs[0]
    device = pick_device(run_config.core.device)
    select_engine(run_config.core.engine, device)  # an engine that cannot run here fails before any work
    store = RunStore(Path(run_dir) if run_dir else Path("runs") / profile)
    sweep = {
        "keys": list(points[0].values),
        "points": [{"label": p.label, "values": p.values} for p in points],
    } if points[0].values else None
    with run_lock(store):
        saved = run_config.to_dict()
        if sweep:
            saved["sweep"] = {key: [p.values[key] for p in points] for key in sweep["keys"]}
        write_yaml(store.config_path, saved)
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
            sweep=sweep,
            stages={},
        )
        execute_stage = None
        manifest["launch"] = {"launcher": launcher}
        if launcher != "none":
            from harness.launch import make_launcher, strategy_name

            execute_stage = make_launcher(launcher, store.root, profile, requested, points, plans, num_gpus, zero)
            manifest["launch"].update(num_processes=execute_stage.num_processes, strategy=strategy_name(zero))

        def record(name: str, stage_record: dict) -> None:
            manifest["stages"][name] = stage_record
            manifest["updated"] = now()
            write_json(store.manifest_path, manifest)

        records = run_stages(stages, store, device, on_stage_done=record, execute_stage=execute_stage)
        results = build_results(store, run_config, stages, records, manifest)
        write_json(store.results_path, results)
    return RunOutcome(store=store, stages=records)


BASELINES = ("sft", "rsdpo")  # paired differences are reported against these rows when present


def build_results(store: RunStore, run_config: RunConfig, stages: list, records: dict, manifest: dict) -> dict:
    """Every stage's stats; per method its policy and evaluations; paired differences between methods."""
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
        "sweep": manifest.get("sweep"),
        "comparisons": {},
        "stages": {},
    }
    for stage in stages:
        record = records[stage.name]
        folder = store.root / record["dir"]
        entry = {
            "key": record["key"],
            "dir": record["dir"],
            "stats": json.loads((folder / "stats.json").read_text()),
            "profile": json.loads((folder / "profile.json").read_text()),
            "point": sweep_label(stage.name),
            "inputs": dict(stage.inputs),
        }
        results["stages"][stage.name] = entry
        if stage.method.produces == "policy":
            results["methods"][stage.name] = {**entry, "policy": f"{record['dir']}/policy", "evaluations": {}}
        elif stage.method.evaluates_policies:
            policy = stage.inputs["policy"]
            results["methods"][policy]["evaluations"][stage.section] = entry["stats"]
    add_memory_estimates(store, run_config, stages, results, manifest["device"])
    results["comparisons"] = paired_comparisons(store, stages, records, run_config.core.seed)
    results["judging"] = judging_totals(results["stages"])
    return results


def add_memory_estimates(store: RunStore, run_config: RunConfig, stages: list, results: dict, device: str) -> None:
    """Each policy stage's analytic peak-memory estimate as ``profile["estimated"]`` (reports read it beside
    the measured peak). Tokenizer only, no model; never fails the run: a failure is recorded instead."""
    names = [stage.name for stage in stages if stage.method.produces == "policy"]
    try:
        from harness.profile_command import run_estimates

        estimated = run_estimates(store.root, run_config, names, device)
    except Exception as err:  # noqa: BLE001 - an estimate is a by-product; the run's results come first
        estimated = {name: {"skipped": f"{type(err).__name__}: {err}"} for name in names}
    for name, estimate in estimated.items():
        results["stages"][name]["profile"]["estimated"] = estimate  # shared with results["methods"][name]


def judging_totals(stage_entries: dict) -> dict | None:
    """Judge calls, tokens and estimated cost summed over the run's judging stages (None: nothing judged)."""
    usages = [e["stats"]["judge_usage"] for e in stage_entries.values() if "judge_usage" in e["stats"]]
    if not usages:
        return None
    keys = ("requests", "cached", "failed", "prompt_tokens", "completion_tokens", "estimated_cost_usd")
    return {key: sum(u.get(key) or 0 for u in usages) for key in keys}


def sweep_label(stage_name: str) -> str | None:
    """The sweep point a per-point stage belongs to ("rsdpo[rsdpo.eta=0.8]" -> "rsdpo.eta=0.8")."""
    return stage_name[stage_name.index("[") + 1:-1] if stage_name.endswith("]") else None


def paired_comparisons(store: RunStore, stages: list, records: dict, seed: int) -> dict:
    """For each evaluation with per-prompt scores: every method minus each baseline, on shared prompts."""
    scores: dict[str, dict[str, dict]] = {}
    for stage in stages:
        per_prompt = getattr(stage.method, "per_prompt_scores", None)
        if stage.method.evaluates_policies and per_prompt is not None:
            folder = store.root / records[stage.name]["dir"]
            scores.setdefault(stage.section, {})[stage.inputs["policy"]] = per_prompt(folder)
    comparisons: dict[str, dict] = {}
    for evaluation, by_policy in scores.items():
        for baseline in (b for b in BASELINES if b in by_policy):
            for policy, values in by_policy.items():
                reverse = f"{baseline} - {policy}"
                # No shared item (e.g. every judgment unparseable): nothing to compare, rather than an error.
                if policy != baseline and reverse not in comparisons.get(evaluation, {}) \
                        and set(values) & set(by_policy[baseline]):
                    comparisons.setdefault(evaluation, {})[f"{policy} - {baseline}"] = paired_difference(
                        values, by_policy[baseline], seed=seed
                    )
    return comparisons
