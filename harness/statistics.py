"""Confidence intervals by bootstrap, on plain numbers: a mean, and a paired difference on shared items."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

RESAMPLES = 10_000
LEVEL = 0.95


def bootstrap_mean(values: Sequence[float], seed: int = 0, resamples: int = RESAMPLES, level: float = LEVEL) -> dict:
    """Mean with a percentile bootstrap interval over items."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("bootstrap_mean needs at least one value")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return {"mean": float(x.mean()), "ci_low": float(low), "ci_high": float(high), "level": level, "n": int(x.size)}


def paired_difference(a: Mapping[str, float], b: Mapping[str, float], seed: int = 0, **kwargs) -> dict:
    """Mean of a[i] - b[i] over the items both have, with its bootstrap interval; significant when the
    interval excludes 0."""
    shared = sorted(set(a) & set(b))
    if not shared:
        raise ValueError("paired_difference: the two sides share no item")
    result = bootstrap_mean([a[i] - b[i] for i in shared], seed=seed, **kwargs)
    result["significant"] = bool(result["ci_low"] > 0 or result["ci_high"] < 0)
    return result
