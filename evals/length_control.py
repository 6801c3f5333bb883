"""Length-controlled win rate (Dubois et al. 2024, arXiv 2404.04475): fit a GLM of the judge's preference on
the length difference and the instruction's difficulty, then predict every preference as if both outputs had
the same length, and average.

alpaca_eval's ``length_controlled_v1`` model is
``logit P(policy preferred) = theta * tanh(std_delta_len) + phi * instruction_difficulty + psi``,
with ``std_delta_len = (len(reference) - len(output)) / std(...)`` in characters, fitted on the
annotations' soft preferences. Ours fits that formula by maximum likelihood (Newton's method, a small L2
penalty for stability); alpaca_eval additionally regularises toward its "gamed" baselines from
``df_gamed.csv`` (a hub file) and cross-validates an L1 penalty, so values can differ slightly from theirs.
"""

from __future__ import annotations

import numpy as np

L2 = 1e-2  # keeps the fit finite when preferences separate perfectly (few instructions, a one-sided judge)


def fit_logistic(features: np.ndarray, targets: np.ndarray, l2: float = L2, steps: int = 50) -> np.ndarray:
    """Weights maximising sum(t log p + (1 - t) log(1 - p)) - l2/2 |w|^2, p = sigmoid(X w), for soft t in [0, 1]."""
    weights = np.zeros(features.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-features @ weights))
        gradient = features.T @ (targets - p) - l2 * weights
        hessian = features.T @ (features * (p * (1 - p))[:, None]) + l2 * np.eye(features.shape[1])
        step = np.linalg.solve(hessian, gradient)
        weights += step
        if np.max(np.abs(step)) < 1e-10:
            break
    return weights


def length_controlled_win_rate(preferences: list[float], reference_lengths: list[int], output_lengths: list[int],
                               difficulty: list[float]) -> dict:
    """LC win rate in percent from preferences on alpaca_eval's 1..2 scale (None entries are dropped)."""
    rows = [(p - 1, r, o, d) for p, r, o, d in zip(preferences, reference_lengths, output_lengths, difficulty)
            if p is not None]
    if len(rows) < 3:
        raise ValueError(f"a length-controlled win rate needs at least 3 judged instructions, found {len(rows)}")
    target, ref_len, out_len, diff = (np.asarray(c, dtype=float) for c in zip(*rows))
    delta = ref_len - out_len
    scale = delta.std(ddof=1) or 1.0  # pandas' std (ddof=1), as alpaca_eval computes it
    features = np.column_stack([np.tanh(delta / scale), diff, np.ones_like(diff)])
    theta, phi, psi = fit_logistic(features, target)
    same_length = 1 / (1 + np.exp(-(phi * diff + psi)))
    return {
        "length_controlled_win_rate": float(100 * same_length.mean()),
        "glm_weights": {"np.tanh(std_delta_len)": float(theta), "instruction_difficulty": float(phi),
                        "not_gamed_baseline": float(psi)},
        "n": len(rows),
    }
