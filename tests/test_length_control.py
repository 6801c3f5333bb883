"""The length-controlled win rate: the GLM recovers known weights and removes a judge's length bias."""

from __future__ import annotations

import numpy as np
import pytest

from evals.length_control import fit_logistic, length_controlled_win_rate


def test_logistic_fit_recovers_known_weights_from_soft_labels():
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(size=20_000), rng.normal(size=20_000), np.ones(20_000)])
    true = np.array([1.5, -0.7, 0.3])
    p = 1 / (1 + np.exp(-x @ true))
    assert fit_logistic(x, p, l2=0.0) == pytest.approx(true, abs=1e-6)  # soft labels: exact at the optimum
    labels = (rng.random(20_000) < p).astype(float)
    assert fit_logistic(x, labels) == pytest.approx(true, abs=0.08)


def test_without_a_length_effect_the_lc_win_rate_is_the_win_rate():
    rng = np.random.default_rng(1)
    n = 2000
    prefs = list(np.where(rng.random(n) < 0.3, 2.0, 1.0))
    result = length_controlled_win_rate(prefs, list(rng.integers(100, 2000, n)), list(rng.integers(100, 2000, n)),
                                        list(rng.normal(size=n)))
    assert result["length_controlled_win_rate"] == pytest.approx(100 * (np.mean(prefs) - 1), abs=1.0)
    assert abs(result["glm_weights"]["np.tanh(std_delta_len)"]) < 0.2


def test_a_length_biased_judge_is_corrected_toward_even():
    """A judge that picks the longer output: a policy that is longer on 80% of instructions wins ~80% raw,
    but at equal length nothing distinguishes the two, so the LC win rate is near 50."""
    rng = np.random.default_rng(2)
    n = 4000
    reference = rng.integers(400, 600, n)
    output = np.where(rng.random(n) < 0.8, reference + rng.integers(200, 800, n), reference - rng.integers(200, 300, n))
    prefs = list(np.where(output > reference, 2.0, 1.0))
    result = length_controlled_win_rate(prefs, list(reference), list(output), list(rng.normal(size=n)))
    assert 100 * (np.mean(prefs) - 1) > 75
    assert 40 < result["length_controlled_win_rate"] < 60
    assert result["glm_weights"]["np.tanh(std_delta_len)"] < -2  # longer output (negative delta) wins


def test_too_few_judgments_are_refused():
    with pytest.raises(ValueError, match="at least 3 judged"):
        length_controlled_win_rate([2.0, None, 1.0], [1, 2, 3], [3, 2, 1], [0.0, 0.0, 0.0])
