"""Benchmarks of the hot code we own (pytest-benchmark): GAE and log-prob gathering from PPO's math.
Pair selection's benchmark lives in test_pair_selection.py. CI runs these once with --benchmark-disable;
``pytest tests/test_benchmarks.py --benchmark-enable`` times them. Each also checks its result."""

from __future__ import annotations

import torch

from methods.ppo_math import gae, logprobs_from_logits

# PPO-sized batches: 64 rollouts x 128 response tokens; log-probs over a 32k vocabulary (Llama-2).
B, T, V = 64, 128, 32000


def gae_loop(rewards, values, mask, gamma, lam):
    """Advantages one row and one step at a time, for the check."""
    advantages = torch.zeros_like(rewards)
    for b in range(rewards.shape[0]):
        length = int(mask[b].sum())
        next_advantage, next_value = 0.0, 0.0
        for t in reversed(range(length)):
            delta = rewards[b, t] + gamma * next_value - values[b, t]
            next_advantage = delta + gamma * lam * next_advantage
            advantages[b, t] = next_advantage
            next_value = values[b, t]
    return advantages


def test_benchmark_gae(benchmark):
    generator = torch.Generator().manual_seed(0)
    rewards = torch.randn(B, T, generator=generator, dtype=torch.float64)
    values = torch.randn(B, T, generator=generator, dtype=torch.float64)
    lengths = torch.randint(1, T + 1, (B,), generator=generator)
    mask = (torch.arange(T) < lengths.unsqueeze(1)).to(torch.float64)
    advantages, returns = benchmark(gae, rewards, values, mask, 1.0, 0.95)
    expected = gae_loop(rewards[:4], values[:4], mask[:4], 1.0, 0.95)
    torch.testing.assert_close(advantages[:4], expected)
    torch.testing.assert_close(returns[mask.bool()], (advantages + values)[mask.bool()])


def test_benchmark_logprobs_from_logits(benchmark):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(8, T, V, generator=generator)  # one PPO micro-batch of 8 rollouts
    tokens = torch.randint(0, V, (8, T), generator=generator)
    logprobs = benchmark(logprobs_from_logits, logits, tokens, 0.7)
    expected = torch.log_softmax(logits[:2] / 0.7, dim=-1).gather(-1, tokens[:2].unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(logprobs[:2], expected, rtol=1e-5, atol=1e-5)
    assert logprobs.shape == (8, T) and bool((logprobs <= 0).all())
