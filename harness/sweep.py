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
    """One list of stages for all points: shared stages once, the rest suffixed with their point."""
    keys_by_name: dict[str, set[str]] = {}
    for stages in plans:
        for stage in stages:
            keys_by_name.setdefault(stage.name, set()).add(stage.key)
    merged: dict[str, PlannedStage] = {}
    for point, stages in zip(points, plans):
        rename = {s.name: s.name if len(keys_by_name[s.name]) == 1 else f"{s.name}[{point.label}]" for s in stages}
        for stage in stages:
            renamed = replace(stage, name=rename[stage.name],
                              inputs={alias: rename[source] for alias, source in stage.inputs.items()})
            merged.setdefault(renamed.name, renamed)
    return list(merged.values())
