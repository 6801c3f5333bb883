"""methods/pair_selection.py against plain-Python loops that follow the paper's wording literally."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from methods import pair_selection
from methods.pair_selection import (
    PairSelection,
    above_threshold,
    best_of_k,
    best_vs_worst_pairs,
    check_rewards,
    mean_minus_std_pairs,
    pair_statistics,
    rsdpo_pairs,
)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def brute_force_rsdpo(rewards: np.ndarray, tau: float, eta: float) -> list[tuple[int, int, int, float]]:
    """Algorithm 1 as written: every ordered pair (j, l), j != l, with sigmoid((r_j - r_l) / tau) > eta."""
    r = rewards.tolist()
    pairs = []
    for p in range(len(r)):
        for j in range(len(r[p])):
            for l in range(len(r[p])):
                if j != l and sigmoid((r[p][j] - r[p][l]) / tau) > eta:
                    pairs.append((p, j, l, r[p][j] - r[p][l]))
    return pairs


def as_tuples(selection: PairSelection) -> list[tuple[int, int, int, float]]:
    return list(zip(
        selection.prompt_index.tolist(), selection.chosen_index.tolist(),
        selection.rejected_index.tolist(), selection.reward_gap.tolist(),
    ))


# Paper's default, eta < 0.5, eta = 0.5, eta close to 1 with a small and a large tau.
TAU_ETA = [(1.0, 0.85), (0.5, 0.3), (1.0, 0.01), (1.0, 0.5), (0.5, 0.999), (0.1, 0.99999)]


@pytest.mark.parametrize("k", [2, 4, 16])
@pytest.mark.parametrize("tau,eta", TAU_ETA)
def test_rsdpo_pairs_match_brute_force(k, tau, eta):
    rng = np.random.default_rng(1000 * k + int(100 * tau))
    rewards = rng.normal(0.0, 2.0, size=(60, k))
    selection = rsdpo_pairs(rewards, tau=tau, eta=eta)
    # Exact: same pairs, same order, same gaps (float64 subtraction is the same in numpy and Python).
    assert as_tuples(selection) == brute_force_rsdpo(rewards, tau, eta)
    assert (selection.num_prompts, selection.k) == (60, k)
    assert 0 < len(selection) < 60 * k * (k - 1)  # the rule decided something both ways
    for array in (selection.prompt_index, selection.chosen_index, selection.rejected_index):
        assert array.dtype == np.int64


@pytest.mark.parametrize("tau,eta", [(1.0, 0.85), (1.0, 0.5), (1.0, 0.3), (0.7, 0.01), (0.4, 0.95)])
def test_rsdpo_pairs_with_ties_match_brute_force(tau, eta):
    # Integer rewards in a small range: many ties. The thresholds tau * ln(eta / (1 - eta)) above are not
    # integers (or are 0, for eta = 0.5, where both sides agree that sigmoid(0) = 0.5 is not > 0.5).
    rewards = np.random.default_rng(7).integers(0, 4, size=(50, 8)).astype(float)
    assert as_tuples(rsdpo_pairs(rewards, tau=tau, eta=eta)) == brute_force_rsdpo(rewards, tau, eta)


def test_ties_pair_both_ways_only_below_one_half():
    rewards = [[1.0, 1.0, 0.0]]
    # eta >= 0.5: the tie (0, 1) never pairs; only gap 1 does while sigmoid(1) = 0.731 > eta.
    for eta, expected in [(0.5, {(0, 2), (1, 2)}), (0.7, {(0, 2), (1, 2)}), (0.75, set())]:
        assert {(j, l) for _, j, l, _ in as_tuples(rsdpo_pairs(rewards, eta=eta))} == expected
    low = {(j, l) for _, j, l, _ in as_tuples(rsdpo_pairs(rewards, eta=0.4))}
    assert {(0, 1), (1, 0)} <= low  # the tie, in both directions
    assert all(j != l for j, l in low)  # never a sample with itself, though gap 0 passes eta < 0.5
    assert low == {(0, 1), (1, 0), (0, 2), (1, 2)}


def test_small_chunks_give_the_same_pairs(monkeypatch):
    rewards = np.random.default_rng(3).normal(size=(37, 5))
    whole = as_tuples(rsdpo_pairs(rewards, eta=0.6))
    monkeypatch.setattr(pair_selection, "GAP_ENTRIES_PER_CHUNK", 4 * 5 * 5)  # 4 prompts a chunk, last one short
    assert as_tuples(rsdpo_pairs(rewards, eta=0.6)) == whole == brute_force_rsdpo(rewards, 1.0, 0.6)


@pytest.mark.parametrize("eta", [0.5, 0.85, 0.99])
def test_all_equal_rewards_give_no_pairs(eta):
    selection = rsdpo_pairs(np.full((4, 6), 2.5), eta=eta)
    assert len(selection) == 0 and selection.num_prompts == 4 and selection.k == 6


def test_no_prompts_give_no_pairs():
    selection = rsdpo_pairs(np.empty((0, 4)))
    assert len(selection) == 0 and selection.prompt_index.dtype == np.int64
    assert pair_statistics(selection)["max_possible_pairs"] == 0


@pytest.mark.parametrize("bad,shown", [(math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf")])
def test_non_finite_reward_names_prompt_and_sample(bad, shown):
    rewards = np.zeros((5, 7))
    rewards[3, 5] = bad
    rewards[4, 0] = bad  # a later one: the message names the first
    message = f"reward of prompt 3, sample 5 is {shown}; every sample needs a finite reward"
    for select in (rsdpo_pairs, best_vs_worst_pairs, best_of_k, check_rewards):
        with pytest.raises(ValueError, match=f"^{message}$"):
            select(rewards)


@pytest.mark.parametrize("rewards,match", [
    ([1.0, 2.0, 3.0], "must be 2-D .* got 1-D with shape \\(3,\\)"),
    (np.zeros((2, 3, 4)), "must be 2-D .* got 3-D"),
    ([[1.0], [2.0]], "k=1 samples per prompt; this selection needs at least 2"),
    ([[1.0, 2.0], [3.0]], "must be a 2-D array of numbers"),
    ([["a", "b"]], "must be a 2-D array of numbers"),
])
def test_malformed_rewards_raise(rewards, match):
    with pytest.raises(ValueError, match=match):
        rsdpo_pairs(rewards)


@pytest.mark.parametrize("tau,eta,match", [
    (1.0, 0.0, "eta must be in \\(0, 1\\)"), (1.0, 1.0, "eta must be in"), (1.0, 1.5, "eta must be in"),
    (1.0, math.nan, "eta must be in"), (0.0, 0.85, "tau must be a finite number > 0"),
    (-1.0, 0.85, "tau must be"), (math.inf, 0.85, "tau must be"), (math.nan, 0.85, "tau must be"),
])
def test_bad_tau_or_eta_raise(tau, eta, match):
    with pytest.raises(ValueError, match=match):
        rsdpo_pairs([[0.0, 1.0]], tau=tau, eta=eta)


def test_sigmoid_threshold_identity():
    # The rewrite rsdpo_pairs relies on: sigmoid((a - b) / tau) > eta  <=>  a - b > tau * ln(eta / (1 - eta)).
    # Within rounding of the boundary the two sides may disagree in floating point; draws within 1e-9 of it
    # are skipped (continuous draws land there with probability ~0, so this skips nothing in practice).
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(20_000):
        a, b = rng.uniform(-10, 10, size=2).tolist()
        tau = float(rng.uniform(0.1, 5.0))  # (0.1, 5]: the closed end has probability 0 anyway
        eta = float(rng.uniform(0.01, 0.99))
        boundary = tau * math.log(eta / (1 - eta))
        if abs((a - b) - boundary) < 1e-9:
            continue
        assert (sigmoid((a - b) / tau) > eta) == (a - b > boundary), (a, b, tau, eta)
        checked += 1
    assert checked > 19_900


def test_rsdpo_pairs_survive_huge_gaps():
    # math.exp would overflow on these; the log-odds comparison never calls it.
    selection = rsdpo_pairs([[1e6, -1e6, 0.0]], tau=0.01, eta=1 - 1e-12)
    assert [(j, l) for _, j, l, _ in as_tuples(selection)] == [(0, 1), (0, 2), (2, 1)]


def test_best_of_k_matches_loop_and_takes_first_on_ties():
    rewards = np.random.default_rng(5).integers(0, 3, size=(200, 6)).astype(float)
    expected = [max(range(6), key=lambda j: (row[j], -j)) for row in rewards.tolist()]  # highest, then lowest j
    chosen = best_of_k(rewards)
    assert chosen.tolist() == expected and chosen.dtype == np.int64
    assert best_of_k([[2.0, 5.0, 5.0], [1.0, 1.0, 1.0], [3.0, 0.0, 0.0]]).tolist() == [1, 0, 0]
    assert best_of_k([[4.0], [2.0]]).tolist() == [0, 0]  # k = 1 is allowed: no pairs needed


def test_above_threshold_matches_loop():
    rewards = np.random.default_rng(6).normal(size=(100, 8))
    rewards[0, 0] = 0.25  # exactly at the threshold: kept (>=)
    prompts, samples = above_threshold(rewards, 0.25)
    expected = [(p, j) for p, row in enumerate(rewards.tolist()) for j, r in enumerate(row) if r >= 0.25]
    assert list(zip(prompts.tolist(), samples.tolist())) == expected
    assert (0, 0) in expected
    assert prompts.dtype == samples.dtype == np.int64
    assert len(above_threshold(rewards, math.inf)[0]) == 0
    assert len(above_threshold(rewards, -math.inf)[0]) == rewards.size
    with pytest.raises(ValueError, match="threshold is nan"):
        above_threshold(rewards, math.nan)


def test_best_vs_worst_pairs():
    rewards = [
        [0.0, 3.0, -1.0, 3.0],   # best 1 (first of the tied 3.0s), worst 2
        [2.0, 2.0, 2.0, 2.0],    # all equal: no pair
        [-1.0, -5.0, -5.0, 0.5],  # best 3, worst 1 (first of the tied -5.0s)
    ]
    selection = best_vs_worst_pairs(rewards)
    assert as_tuples(selection) == [(0, 1, 2, 4.0), (2, 3, 1, 5.5)]
    assert (selection.num_prompts, selection.k) == (3, 4)
    assert selection.pairs_per_prompt().tolist() == [1, 0, 1]


def test_best_vs_worst_pairs_match_loop():
    rewards = np.random.default_rng(8).integers(0, 3, size=(300, 4)).astype(float)
    expected = []
    for p, row in enumerate(rewards.tolist()):
        best = max(range(4), key=lambda j: (row[j], -j))
        worst = min(range(4), key=lambda j: (row[j], j))
        if row[best] > row[worst]:
            expected.append((p, best, worst, row[best] - row[worst]))
    assert as_tuples(best_vs_worst_pairs(rewards)) == expected


def test_pair_statistics_by_hand():
    # tau = 1, eta = 0.85: keep gaps > ln(0.85 / 0.15) = 1.7346.
    rewards = [
        [0.0, 1.0, 3.0],  # (2, 0) gap 3 and (2, 1) gap 2; (1, 0) gap 1 is too small
        [2.0, 2.0, 2.0],  # none
        [5.0, 0.0, 0.0],  # (0, 1) gap 5 and (0, 2) gap 5
    ]
    selection = rsdpo_pairs(rewards)
    assert as_tuples(selection) == [(0, 2, 0, 3.0), (0, 2, 1, 2.0), (2, 0, 1, 5.0), (2, 0, 2, 5.0)]
    stats = pair_statistics(selection, bins=3)
    assert stats == {
        "pairs_kept": 4,
        "prompts": 3,
        "prompts_without_pairs": 1,
        "pairs_per_prompt": {"mean": 4 / 3, "min": 0, "max": 2, "histogram": {"0": 1, "2": 2}},
        # gaps 2, 3, 5, 5 over [2, 5] in 3 bins: [2, 3) holds 2, [3, 4) holds 3, [4, 5] holds both 5s
        "reward_gap_histogram": {"bin_edges": [2.0, 3.0, 4.0, 5.0], "counts": [1, 1, 2]},
        "max_possible_pairs": 3 * 3 * 2,
    }
    assert json.loads(json.dumps(stats)) == stats  # plain Python: survives results.json unchanged


def test_pair_statistics_without_pairs():
    stats = pair_statistics(rsdpo_pairs(np.zeros((2, 4))))
    assert stats["pairs_kept"] == 0 and stats["prompts_without_pairs"] == 2
    assert stats["pairs_per_prompt"] == {"mean": 0.0, "min": 0, "max": 0, "histogram": {"0": 2}}
    assert stats["reward_gap_histogram"] == {"bin_edges": [], "counts": []}
    assert stats["max_possible_pairs"] == 2 * 4 * 3
    with pytest.raises(ValueError, match="bins must be a positive integer"):
        pair_statistics(rsdpo_pairs(np.zeros((2, 4))), bins=0)


def test_pair_selection_arrays_must_agree():
    with pytest.raises(ValueError, match="must have one length"):
        PairSelection(np.zeros(2, np.int64), np.zeros(2, np.int64), np.zeros(1, np.int64), np.zeros(2), 1, 2)


def test_benchmark_rsdpo_pairs(benchmark):
    # The paper's scale: 100k prompts, k = 16. Chunking bounds the gap matrix to 16 MiB at a time.
    rewards = np.random.default_rng(0).normal(size=(100_000, 16))
    selection = benchmark(rsdpo_pairs, rewards)
    assert selection.num_prompts == 100_000 and len(selection) > 0
    # Spot check against the loop on a slice that straddles the first chunk boundary.
    step = pair_selection.GAP_ENTRIES_PER_CHUNK // (16 * 16)
    lo, hi = step - 5, step + 5
    rows = (selection.prompt_index >= lo) & (selection.prompt_index < hi)
    got = list(zip(
        (selection.prompt_index[rows] - lo).tolist(), selection.chosen_index[rows].tolist(),
        selection.rejected_index[rows].tolist(), selection.reward_gap[rows].tolist(),
    ))
    assert got == brute_force_rsdpo(rewards[lo:hi], 1.0, 0.85)


def test_mean_minus_2std_pairs_by_hand():
    rewards = np.array([
        [-10.0, -3.0, -3.0] + [1.0] * 13,  # mean -0.1875, std 2.855: target -5.898 is nearest -3 (first of two)
        [1.0] * 16,                        # all equal: no pair
        [0.0] * 15 + [4.0],                # mean 0.25, std 0.968: target -1.686 is nearest 0 (first of 15)
    ])
    selection = mean_minus_std_pairs(rewards)
    assert as_tuples(selection) == [(0, 3, 1, 4.0), (2, 15, 0, 4.0)]  # the minimum -10 is not the rejected one
    assert (selection.num_prompts, selection.k) == (3, 16)
    # num_std=0 rejects the sample nearest the mean; in row 0 that is a 1.0 as good as the best: no pair.
    assert mean_minus_std_pairs(rewards, num_std=0.0).pairs_per_prompt().tolist() == [0, 0, 1]


def test_mean_minus_2std_pairs_match_loop():
    rewards = np.random.default_rng(9).normal(size=(200, 16))
    expected = []
    for p, row in enumerate(rewards.tolist()):
        mean = sum(row) / len(row)
        std = math.sqrt(sum((x - mean) ** 2 for x in row) / len(row))
        best = max(range(16), key=lambda j: (row[j], -j))
        rejected = min(range(16), key=lambda j: (abs(row[j] - (mean - 2 * std)), j))
        if row[best] > row[rejected]:
            expected.append((p, best, rejected, row[best] - row[rejected]))
    got = as_tuples(mean_minus_std_pairs(rewards))
    assert [t[:3] for t in got] == [t[:3] for t in expected]
    assert [t[3] for t in got] == pytest.approx([t[3] for t in expected])
    # k=16 normal rewards: the minimum is usually nearest mean - 2 std, but not always (7 of these 200 prompts).
    assert sum(a[2] != b[2] for a, b in zip(got, as_tuples(best_vs_worst_pairs(rewards)))) > 0


def test_with_few_samples_mean_minus_2std_is_best_vs_worst():
    rewards = np.random.default_rng(10).normal(size=(500, 4))  # k <= 5: mean - 2 std is below every sample
    assert as_tuples(mean_minus_std_pairs(rewards)) == as_tuples(best_vs_worst_pairs(rewards))


def test_mean_minus_std_rejects_bad_num_std():
    with pytest.raises(ValueError, match="num_std must be a finite number >= 0"):
        mean_minus_std_pairs(np.zeros((1, 3)), num_std=-1.0)


def test_pair_selectors_are_registered_plugins_with_one_interface():
    from types import SimpleNamespace

    from harness.registry import UnknownPlugin, pair_selectors

    assert {"threshold", "best_vs_worst", "mean_minus_2std"} <= set(pair_selectors.names())
    rewards = np.random.default_rng(11).normal(size=(50, 8))
    config = SimpleNamespace(tau=0.5, eta=0.7)  # what a method's config section offers; extras are ignored
    expected = {
        "threshold": rsdpo_pairs(rewards, tau=0.5, eta=0.7),
        "best_vs_worst": best_vs_worst_pairs(rewards),
        "mean_minus_2std": mean_minus_std_pairs(rewards, num_std=2.0),
    }
    for name, selection in expected.items():
        assert as_tuples(pair_selectors.get(name)(rewards, config)) == as_tuples(selection), name
    with pytest.raises(UnknownPlugin, match="did you mean 'threshold'"):
        pair_selectors.get("treshold")
