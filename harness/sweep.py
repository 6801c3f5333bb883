"""Sweeps: ``--set rsdpo.eta=0.8,0.85,0.9`` (a comma list) runs one grid point per value; several swept
keys form a grid. Stages whose key is the same at every point (SFT, samples, rewards...) run once; the
others are named per point, e.g. ``rsdpo[rsdpo.eta=0.8]``."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from harness.pipeline import PlannedStage


@dataclass(frozen=True)
class SweepPoint:
    values: dict[str, str]  # swept key -> its value at this point
    overrides: list[str]  # the fixed overrides plus this point's values

    @property
    def label(self) -> str:
        return ",".join(f"{key}={value}" for key, value in self.values.items())


def sweep_points(overrides: list[str]) -> list[SweepPoint]:
    """The grid that ``--set`` overrides describe; one point (no values) when nothing is swept."""
    fixed, swept = [], []
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep and "," in value and not value.strip().startswith(("[", "{")):  # YAML lists are values
            swept.append((key.strip(), [v.strip() for v in value.split(",")]))
        else:
            fixed.append(override)
    if not swept:
        return [SweepPoint({}, fixed)]
    keys = [key for key, _ in swept]
    return [
        SweepPoint(dict(zip(keys, combo)), fixed + [f"{k}={v}" for k, v in zip(keys, combo)])
        for combo in itertools.product(*(values for _, values in swept))
    ]


def merge_plans(points: list[SweepPoint], plans: list[list[PlannedStage]]) -> list[PlannedStage]:
    """One list of stages for all points: shared stages once, the rest suffixed with the swept values they
    depend on. In a grid over reward_model.label_noise and rsdpo.eta, the reward model is named by its
    label_noise alone, so it is listed (and run) once per noise level, not once per grid point."""
    keys_at = [{stage.name: stage.key for stage in stages} for stages in plans]
    swept = list(points[0].values)

    def depends_on(name: str, swept_key: str) -> bool:
        # In a full grid, a stage depends on a swept key when changing that key alone changes its key.
        return any(
            keys_at[a].get(name) != keys_at[b].get(name)
            for a, b in itertools.combinations(range(len(points)), 2)
            if [k for k in swept if points[a].values[k] != points[b].values[k]] == [swept_key]
        )

    names = {stage.name for stages in plans for stage in stages}
    label_keys = {name: [k for k in swept if depends_on(name, k)] for name in names}
    merged: dict[str, PlannedStage] = {}
    for point, stages in zip(points, plans):
        def renamed(name: str) -> str:
            label = ",".join(f"{k}={point.values[k]}" for k in label_keys[name])
            return f"{name}[{label}]" if label else name

        for stage in stages:
            merged.setdefault(renamed(stage.name), replace(
                stage, name=renamed(stage.name),
                inputs={alias: renamed(source) for alias, source in stage.inputs.items()},
            ))
    return list(merged.values())
