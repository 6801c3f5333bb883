"""Which scored samples become training data: RS-DPO's preference pairs (Khaki et al. 2024, arXiv 2402.10038,
Algorithm 1), the DPO-BW ablation's best-vs-worst pairs, best vs the sample nearest mean - 2 std (Xiao et al.
2025, arXiv 2502.16825), and rejection sampling's best-of-k and reward threshold.

Input everywhere is a rewards matrix ``r`` of shape (prompts, k): ``r[p, j]`` is the reward model's score of
sample ``y_j`` for prompt ``x_p``. Pure numpy, vectorised; the only Python loop walks memory-sized chunks of
prompts (``GAP_ENTRIES_PER_CHUNK``).

Pair selectors are plugins: a function ``select(rewards, config) -> PairSelection`` registered by name in the
entry-point group ``harness.pair_selectors`` (ours: ``threshold``, ``best_vs_worst``, ``mean_minus_2std``, at
the end of this module). ``config`` is the consuming method's config section; a selector reads the settings
it needs from it (``threshold`` reads ``tau`` and ``eta``) and ignores the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

# Gap entries (prompts * k * k) computed at once: 2**21 float64 gaps are 16 MiB, plus a 2 MiB mask. Bounds
# rsdpo_pairs' working memory whatever the number of prompts (k=16: 8192 prompts per chunk).
GAP_ENTRIES_PER_CHUNK = 1 << 21


@dataclass(frozen=True, eq=False)  # eq=False: field-wise == on arrays is ambiguous; identity is honest
class PairSelection:
    """Preference pairs chosen from a (prompts, k) rewards matrix, one entry per pair, ordered by prompt,
    then chosen index, then rejected index.

    prompt_index: row p of the pair's prompt (int64).
    chosen_index: sample j preferred (int64).
    rejected_index: sample l dispreferred (int64).
    reward_gap: r[p, j] - r[p, l] (float64).
    num_prompts, k: shape of the rewards matrix it came from, so prompts without pairs still count.
    """

    prompt_index: np.ndarray
    chosen_index: np.ndarray
    rejected_index: np.ndarray
    reward_gap: np.ndarray
    num_prompts: int
    k: int

    def __post_init__(self):
        lengths = {len(self.prompt_index), len(self.chosen_index), len(self.rejected_index), len(self.reward_gap)}
        if len(lengths) != 1:
            raise ValueError(
                "PairSelection arrays must have one length; got prompt_index, chosen_index, rejected_index, "
                f"reward_gap lengths {len(self.prompt_index)}, {len(self.chosen_index)}, "
                f"{len(self.rejected_index)}, {len(self.reward_gap)}"
            )

    def __len__(self) -> int:
        return len(self.prompt_index)

    def pairs_per_prompt(self) -> np.ndarray:
        """Number of pairs of each prompt, shape (num_prompts,)."""
        return np.bincount(self.prompt_index, minlength=self.num_prompts)


def check_rewards(rewards: ArrayLike, min_samples: int = 2) -> np.ndarray:
    """``rewards`` as a float64 (prompts, k) array, or ValueError saying what is wrong and where.

    min_samples: the least k accepted; 2 where pairs are needed, 1 for best-of-k and thresholds.
    """
    try:
        r = np.asarray(rewards, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"rewards must be a 2-D array of numbers (prompts x k samples); {err}") from None
    if r.ndim != 2:
        raise ValueError(f"rewards must be 2-D (prompts x k samples); got {r.ndim}-D with shape {r.shape}")
    if r.shape[1] < min_samples:
        raise ValueError(
            f"rewards have k={r.shape[1]} samples per prompt; this selection needs at least {min_samples}"
        )
    bad = np.argwhere(~np.isfinite(r))
    if len(bad):
        p, j = bad[0]  # first in row-major order: the earliest prompt, then its earliest sample
        raise ValueError(f"reward of prompt {p}, sample {j} is {r[p, j]}; every sample needs a finite reward")
    return r


def rsdpo_pairs(rewards: ArrayLike, tau: float = 1.0, eta: float = 0.85) -> PairSelection:
    """RS-DPO's pairs (Algorithm 1): every ordered pair (y_j, y_l) of one prompt's samples with
    sigmoid((r_j - r_l) / tau) > eta becomes (chosen y_j, rejected y_l). Defaults tau=1.0, eta=0.85: the paper's.

    A sample is never paired with itself. Equal rewards give sigmoid(0) = 0.5, so ties form pairs only when
    eta < 0.5, and then in both directions (j over l and l over j).
    """
    r = check_rewards(rewards)
    tau, eta = float(tau), float(eta)
    if not 0 < eta < 1:
        raise ValueError(f"eta must be in (0, 1) (the paper uses 0.85); got {eta}")
    if not (tau > 0 and math.isfinite(tau)):
        raise ValueError(f"tau must be a finite number > 0 (the paper uses 1.0); got {tau}")

    # sigmoid is increasing and tau > 0, so sigmoid(gap / tau) > eta  <=>  gap > tau * ln(eta / (1 - eta)).
    # Same rule, but no exp per pair: exp overflows for large negative arguments, and the sigmoid rounds to
    # exactly 1.0 for large positive ones, which would compare wrongly against eta close to 1.
    min_gap = tau * math.log(eta / (1 - eta))
    num_prompts, k = r.shape
    not_self = ~np.eye(k, dtype=bool)  # diagonal gaps are 0, which passes min_gap < 0 when eta < 0.5
    step = max(1, GAP_ENTRIES_PER_CHUNK // (k * k))

    parts = []
    for start in range(0, num_prompts, step):
        chunk = r[start:start + step]
        gaps = chunk[:, :, None] - chunk[:, None, :]  # gaps[p, j, l] = r_j - r_l
        keep = (gaps > min_gap) & not_self
        # Flat indices are in C order (by prompt, then chosen, then rejected); unravelling them is ~3x faster
        # than np.nonzero on the 3-D mask.
        kept = np.flatnonzero(keep)
        p, j, l = np.unravel_index(kept, keep.shape)
        parts.append((p + start, j, l, gaps.ravel()[kept]))
    return _selection(parts, num_prompts, k)


def best_vs_worst_pairs(rewards: ArrayLike) -> PairSelection:
    """DPO-BW (the paper's ablation): one pair per prompt, chosen = highest reward, rejected = lowest (first
    index on ties). Prompts whose samples all score the same have no preference, so no pair."""
    r = check_rewards(rewards)
    num_prompts, k = r.shape
    best, worst = np.argmax(r, axis=1), np.argmin(r, axis=1)
    prompts = np.arange(num_prompts)
    gap = r[prompts, best] - r[prompts, worst]
    has_pair = gap > 0
    return _selection([(prompts[has_pair], best[has_pair], worst[has_pair], gap[has_pair])], num_prompts, k)


def mean_minus_std_pairs(rewards: ArrayLike, num_std: float = 2.0) -> PairSelection:
    """One pair per prompt: chosen = highest reward, rejected = the sample whose reward is nearest to
    mean - num_std * std of that prompt's rewards (population std; first index on ties). Xiao et al. 2025
    (arXiv 2502.16825) found rejected at mean - 2 std beats the minimum as k grows. With few samples
    (k <= 5 and num_std=2) mean - 2 std lies below every reward, so this picks the same pair as best-vs-worst.
    Prompts whose two picks score the same have no preference, so no pair."""
    r = check_rewards(rewards)
    if not (math.isfinite(num_std) and num_std >= 0):
        raise ValueError(f"num_std must be a finite number >= 0 (the paper uses 2); got {num_std}")
    num_prompts, k = r.shape
    target = r.mean(axis=1) - num_std * r.std(axis=1)
    best, rejected = np.argmax(r, axis=1), np.argmin(np.abs(r - target[:, None]), axis=1)
    prompts = np.arange(num_prompts)
    gap = r[prompts, best] - r[prompts, rejected]
    has_pair = gap > 0
    return _selection([(prompts[has_pair], best[has_pair], rejected[has_pair], gap[has_pair])], num_prompts, k)


def best_of_k(rewards: ArrayLike) -> np.ndarray:
    """Rejection sampling's best-of-k: index of each prompt's highest-reward sample (the first on ties)."""
    return np.argmax(check_rewards(rewards, min_samples=1), axis=1).astype(np.int64)


def above_threshold(rewards: ArrayLike, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Rejection sampling's reward-threshold rule: (prompt_index, sample_index) of every sample with
    reward >= threshold, ordered by prompt then sample."""
    r = check_rewards(rewards, min_samples=1)
    if math.isnan(threshold):
        raise ValueError("threshold is nan; it must be a number (or +-inf to keep none or all)")
    prompt_index, sample_index = np.nonzero(r >= threshold)
    return prompt_index.astype(np.int64), sample_index.astype(np.int64)


def pair_statistics(selection: PairSelection, bins: int = 20) -> dict:
    """What a selection kept, as plain JSON-ready numbers and lists (for stats.json / results.json).

    pairs_per_prompt.histogram maps a pair count (as a string, so the dict survives a JSON round trip) to
    the number of prompts with that many pairs. max_possible_pairs = prompts * k * (k - 1): every ordered pair,
    the most RS-DPO could keep.
    """
    if not (isinstance(bins, (int, np.integer)) and bins >= 1):
        raise ValueError(f"bins must be a positive integer; got {bins!r}")
    per_prompt = selection.pairs_per_prompt()
    counts, prompts_with_count = np.unique(per_prompt, return_counts=True)
    if len(selection):
        gap_counts, bin_edges = np.histogram(selection.reward_gap, bins=bins)
        gap_histogram = {"bin_edges": bin_edges.tolist(), "counts": gap_counts.tolist()}
    else:
        gap_histogram = {"bin_edges": [], "counts": []}
    has_prompts = selection.num_prompts > 0
    return {
        "pairs_kept": len(selection),
        "prompts": selection.num_prompts,
        "prompts_without_pairs": int(np.sum(per_prompt == 0)),
        "pairs_per_prompt": {
            "mean": float(per_prompt.mean()) if has_prompts else None,
            "min": int(per_prompt.min()) if has_prompts else None,
            "max": int(per_prompt.max()) if has_prompts else None,
            "histogram": {str(c): int(n) for c, n in zip(counts.tolist(), prompts_with_count.tolist())},
        },
        "reward_gap_histogram": gap_histogram,
        "max_possible_pairs": selection.num_prompts * selection.k * (selection.k - 1),
    }


def _selection(parts: list[tuple], num_prompts: int, k: int) -> PairSelection:
    """One PairSelection from per-chunk (prompt, chosen, rejected, gap) arrays, in chunk order."""
    if not parts:  # zero prompts: no chunks
        parts = [(np.empty(0, np.int64),) * 3 + (np.empty(0, np.float64),)]
    prompt, chosen, rejected, gap = (np.concatenate(column) for column in zip(*parts))
    return PairSelection(
        prompt_index=prompt.astype(np.int64, copy=False),
        chosen_index=chosen.astype(np.int64, copy=False),
        rejected_index=rejected.astype(np.int64, copy=False),
        reward_gap=gap.astype(np.float64, copy=False),
        num_prompts=int(num_prompts),
        k=int(k),
    )


# ------------------------------------------------------------------------------------------- pair selectors
# Registered in pyproject.toml under ``harness.pair_selectors``; ``rsdpo.selection`` names one of them.


def select_threshold(rewards: ArrayLike, config: Any) -> PairSelection:
    """the paper's rule: every ordered pair with sigmoid((r_j - r_l) / tau) > eta (reads tau, eta)"""
    return rsdpo_pairs(rewards, tau=config.tau, eta=config.eta)


def select_best_vs_worst(rewards: ArrayLike, config: Any) -> PairSelection:
    """one pair per prompt: the best sample against the worst (the paper's DPO-BW ablation)"""
    return best_vs_worst_pairs(rewards)


def select_mean_minus_2std(rewards: ArrayLike, config: Any) -> PairSelection:
    """one pair per prompt: the best sample against the one nearest mean - 2 std (arXiv 2502.16825)"""
    return mean_minus_std_pairs(rewards, num_std=2.0)
