"""Stage planning and keys, with small stages of our own in a private registry."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from harness.config import build_run_config
from harness.method import Method, StageContext
from harness.pipeline import PipelineError, plan, run_stages, stage_order
from harness.registry import Registry
from harness.store import RunStore


@dataclass
class Scale:
    factor: int = 2


def make_registry() -> Registry:
    registry = Registry("method", "harness.tests.pipeline")

    @registry.register()
    class Numbers(Method):
        name = "numbers"
        produces = "data"
        uses = ("seed",)

        def run(self, ctx: StageContext) -> dict:
            (ctx.dir / "numbers.txt").write_text(" ".join(str(ctx.seed + i) for i in range(3)))
            return {"count": 3}

    @registry.register()
    class Scaled(Method):
        name = "scaled"
        config_class = Scale
        needs = ("numbers",)

        def run(self, ctx: StageContext) -> dict:
            numbers = [int(x) for x in (ctx.input("numbers") / "numbers.txt").read_text().split()]
            (ctx.dir / "scaled.txt").write_text(" ".join(str(n * ctx.config.factor) for n in numbers))
            return {"sum": sum(n * ctx.config.factor for n in numbers)}

    @registry.register()
    class Unrelated(Method):
        name = "unrelated"
        config_class = Scale

        def run(self, ctx: StageContext) -> dict:
            return {}

    return registry


def resolve(registry: Registry, *overrides: str):
    """A run config for the private registry (no evaluation stages: they live in the real one)."""
    plugins = {n: registry.get(n).config_class for n in registry.names()}
    return build_run_config("test", {"evaluate": []}, list(overrides), plugins)


def keys(registry: Registry, *overrides: str, requested=("scaled", "unrelated")) -> dict[str, str]:
    config = resolve(registry, *overrides)
    return {stage.name: stage.key for stage in plan(list(requested), config, registry)}


def test_dependencies_come_first_and_once():
    registry = make_registry()
    assert stage_order(["scaled", "numbers", "unrelated"], registry) == ["numbers", "scaled", "unrelated"]


def test_a_changed_setting_changes_only_the_keys_that_depend_on_it():
    registry = make_registry()
    base = keys(registry)
    scaled = keys(registry, "scaled.factor=3")
    assert scaled["numbers"] == base["numbers"] and scaled["unrelated"] == base["unrelated"]
    assert scaled["scaled"] != base["scaled"]
    reseeded = keys(registry, "seed=5")  # numbers uses the seed; scaled inherits through its input key
    assert reseeded["numbers"] != base["numbers"] and reseeded["scaled"] != base["scaled"]
    assert reseeded["unrelated"] == base["unrelated"]
    assert keys(registry) == base  # keys are stable across processes and calls


def test_cycles_are_reported_with_their_path():
    registry = Registry("method", "harness.tests.cycle")
    for name, need in (("a", "b"), ("b", "a")):
        registry.register(name)(type(name, (Method,), {"name": name, "needs": (need,)}))
    with pytest.raises(PipelineError, match="cycle: a -> b -> a"):
        stage_order(["a"], registry)


def test_finished_stages_are_reused_and_failed_ones_left_unfinished(tmp_path):
    registry = make_registry()
    config = resolve(registry)
    store = RunStore(tmp_path / "run")
    first = run_stages(plan(["scaled"], config, registry), store, "cpu")
    assert [r["status"] for r in first.values()] == ["ran", "ran"]
    scaled_dir = store.root / first["scaled"]["dir"]
    assert (scaled_dir / "scaled.txt").read_text() == "0 2 4"
    assert {p.name for p in scaled_dir.iterdir()} >= {"DONE", "stats.json", "profile.json", "fingerprint.json"}
    mtime = (scaled_dir / "scaled.txt").stat().st_mtime_ns

    again = run_stages(plan(["scaled"], config, registry), store, "cpu")
    assert [r["status"] for r in again.values()] == ["reused", "reused"]
    assert (scaled_dir / "scaled.txt").stat().st_mtime_ns == mtime

    def explode(self, ctx):
        raise RuntimeError("stage failed")

    registry.get("scaled").run = explode
    changed = resolve(registry, "scaled.factor=5")
    stages = plan(["scaled"], changed, registry)
    with pytest.raises(RuntimeError, match="stage failed"):
        run_stages(stages, store, "cpu")
    assert not store.is_done(stages[1].folder_name)
    assert store.is_done(stages[0].folder_name)


def test_evaluations_run_once_per_policy_and_follow_their_policy():
    registry = make_registry()

    @registry.register()
    class Score(Method):
        name = "score"
        needs = ("numbers",)
        produces = "evaluation"
        evaluates_policies = True

    plugins = {n: registry.get(n).config_class for n in registry.names()}
    config = build_run_config("test", {"evaluate": ["score"]}, [], plugins)
    stages = {s.name: s for s in plan(["scaled"], config, registry)}
    assert list(stages) == ["numbers", "scaled", "score@scaled"]  # numbers is data, not a policy
    assert stages["score@scaled"].inputs == {"numbers": "numbers", "policy": "scaled"}
    changed = {s.name: s for s in plan(["scaled"], build_run_config("test", {"evaluate": ["score"]},
                                                                  ["scaled.factor=9"], plugins), registry)}
    assert changed["score@scaled"].key != stages["score@scaled"].key
    assert changed["numbers"].key == stages["numbers"].key
