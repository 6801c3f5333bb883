"""PPO math against plain loops over batch and time, on small random tensors with prefix masks."""

from __future__ import annotations

import math

import pytest
import torch

from methods.ppo_math import (
    AdaptiveKLController,
    FixedKLController,
    apply_missing_eos_penalty,
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
    gae,
    kl_penalized_rewards,
    logprobs_from_logits,
    masked_mean,
    masked_var,
    masked_whiten,
    per_token_kl,
    response_mask,
    sequence_end_index,
)

B, T, V = 5, 7, 11
DTYPE = torch.float64


def prefix_mask(seed: int = 0) -> tuple[torch.Tensor, list[int]]:
    """A [B, T] float mask of ones then zeros; row 0 has full length, row 1 length 1, the rest random."""
    g = torch.Generator().manual_seed(seed)
    lengths = [T, 1] + torch.randint(1, T + 1, (B - 2,), generator=g).tolist()
    mask = (torch.arange(T).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)).to(DTYPE)
    return mask, lengths


def with_garbage(x: torch.Tensor, mask: torch.Tensor, value: float = 1e6) -> torch.Tensor:
    """``x`` with every padded entry replaced by ``value``."""
    return torch.where(mask.bool(), x, torch.full_like(x, value))


# --- masked statistics -----------------------------------------------------------------------------------


def test_masked_mean_and_var_match_loops():
    torch.manual_seed(0)
    x = torch.randn(B, T, dtype=DTYPE)
    mask, lengths = prefix_mask()
    real = [x[b, t].item() for b in range(B) for t in range(lengths[b])]
    mean = sum(real) / len(real)
    var = sum((v - mean) ** 2 for v in real) / (len(real) - 1)
    assert masked_mean(x, mask).item() == pytest.approx(mean)
    assert masked_var(x, mask).item() == pytest.approx(var)
    assert masked_var(x, mask, unbiased=False).item() == pytest.approx(var * (len(real) - 1) / len(real))
    row_means = masked_mean(x, mask, dim=1)
    for b in range(B):
        assert row_means[b].item() == pytest.approx(sum(x[b, :lengths[b]].tolist()) / lengths[b])
    # padding is ignored, even when it holds inf
    assert masked_mean(with_garbage(x, mask, math.inf), mask).item() == pytest.approx(mean)


def test_masked_var_needs_two_entries():
    with pytest.raises(ValueError, match="at least 2"):
        masked_var(torch.ones(1, 3), torch.tensor([[1.0, 0.0, 0.0]]))


@pytest.mark.parametrize("shift_mean", [True, False])
def test_masked_whiten(shift_mean):
    torch.manual_seed(1)
    x = 3.0 + 2.0 * torch.randn(B, T, dtype=DTYPE)
    mask, lengths = prefix_mask(1)
    whitened = masked_whiten(x, mask, shift_mean=shift_mean)
    real = [x[b, t].item() for b in range(B) for t in range(lengths[b])]
    mean = sum(real) / len(real)
    std = math.sqrt(sum((v - mean) ** 2 for v in real) / (len(real) - 1) + 1e-8)
    for b in range(B):
        for t in range(T):
            expected = ((x[b, t].item() - mean) / std + (0.0 if shift_mean else mean)) if t < lengths[b] else 0.0
            assert whitened[b, t].item() == pytest.approx(expected)
    assert masked_mean(whitened, mask).item() == pytest.approx(0.0 if shift_mean else mean, abs=1e-9)
    assert masked_var(whitened, mask).item() == pytest.approx(1.0, rel=1e-6)
    # changing padded entries changes nothing
    torch.testing.assert_close(masked_whiten(with_garbage(x, mask), mask, shift_mean=shift_mean), whitened)


# --- rollout: masks and log-probabilities ----------------------------------------------------------------

EOS, PAD = 2, 0


def response_mask_loop(tokens: torch.Tensor, eos: int, pad: int | None) -> tuple[list[list[float]], list[bool]]:
    masks, has_eos = [], []
    for row in tokens.tolist():
        mask, found = [0.0] * len(row), False
        for t, token in enumerate(row):
            if token == eos:
                mask[t], found = 1.0, True
                break
            if pad is not None and token == pad:
                break
            mask[t] = 1.0
        masks.append(mask)
        has_eos.append(found)
    return masks, has_eos


@pytest.mark.parametrize("pad", [PAD, EOS, None], ids=["pad-distinct", "pad-is-eos", "no-pad"])
def test_response_mask(pad):
    other = pad if pad is not None else 7  # what follows the end of a response
    tokens = torch.tensor([
        [5, 6, 7, 8, 9, 5],              # no EOS
        [5, 6, EOS, other, other, other],  # EOS in the middle
        [EOS, other, other, other, other, other],  # EOS at position 0
        [5, 6, 7, 8, 9, EOS],            # EOS at the last position
        [5, EOS, 6, EOS, 7, 8],          # two EOS: the first ends the response
        [5, 6, 7, PAD, PAD, PAD] if pad == PAD else [5, 6, 7, 8, 9, 9],  # stops at a pad, no EOS
    ])
    mask, has_eos = response_mask(tokens, EOS, pad)
    expected_mask, expected_has_eos = response_mask_loop(tokens, EOS, pad)
    assert mask.tolist() == expected_mask
    assert has_eos.tolist() == expected_has_eos
    assert has_eos.tolist()[:5] == [False, True, True, True, True]
    assert mask[2].tolist() == [1.0, 0, 0, 0, 0, 0]
    assert sequence_end_index(mask).tolist() == [int(sum(m)) - 1 for m in expected_mask]


def test_sequence_end_index_rejects_empty_rows():
    assert sequence_end_index(torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])).tolist() == [1, 0]
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        sequence_end_index(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))


def test_logprobs_and_entropy_from_logits_match_loops():
    torch.manual_seed(2)
    logits = 3.0 * torch.randn(B, T, V, dtype=DTYPE)
    tokens = torch.randint(0, V, (B, T))
    for temperature in (1.0, 0.7):
        logprobs = logprobs_from_logits(logits, tokens, temperature=temperature)
        entropy = entropy_from_logits(logits, temperature=temperature)
        assert logprobs.shape == entropy.shape == (B, T)
        for b in range(B):
            for t in range(T):
                log_p = torch.log_softmax(logits[b, t] / temperature, dim=-1)
                assert logprobs[b, t].item() == pytest.approx(log_p[tokens[b, t]].item())
                assert entropy[b, t].item() == pytest.approx(-(log_p.exp() * log_p).sum().item())


def test_logprobs_from_bfloat16_logits_are_float32():
    torch.manual_seed(3)
    logits = 5.0 * torch.randn(B, T, V)
    tokens = torch.randint(0, V, (B, T))
    logprobs = logprobs_from_logits(logits.bfloat16(), tokens)
    assert logprobs.dtype == torch.float32
    # the only error left is the rounding of the logits themselves, not of the log-softmax
    torch.testing.assert_close(logprobs, logprobs_from_logits(logits.bfloat16().float(), tokens))


# --- rewards ---------------------------------------------------------------------------------------------


def test_missing_eos_penalty():
    scores = torch.tensor([0.5, -0.2, 1.0])
    has_eos = torch.tensor([True, False, False])
    torch.testing.assert_close(apply_missing_eos_penalty(scores, has_eos, 1.0), torch.tensor([0.5, -1.2, 0.0]))
    torch.testing.assert_close(apply_missing_eos_penalty(scores, has_eos, None), scores)
    with pytest.raises(ValueError, match="must be >= 0"):
        apply_missing_eos_penalty(scores, has_eos, -1.0)


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_per_token_kl(estimator):
    torch.manual_seed(4)
    mask, lengths = prefix_mask(4)
    logprobs = -torch.rand(B, T, dtype=DTYPE) * 3
    ref_logprobs = -torch.rand(B, T, dtype=DTYPE) * 3
    kl = per_token_kl(with_garbage(logprobs, mask), with_garbage(ref_logprobs, mask, -1e6), mask, estimator)
    for b in range(B):
        for t in range(T):
            if t >= lengths[b]:
                assert kl[b, t].item() == 0.0
                continue
            log_ratio = ref_logprobs[b, t].item() - logprobs[b, t].item()
            expected = -log_ratio if estimator == "k1" else (math.exp(log_ratio) - 1) - log_ratio
            assert kl[b, t].item() == pytest.approx(expected)
    if estimator == "k3":
        assert (kl >= 0).all()
    else:
        assert (kl < 0).any()  # k1 is unbiased but not a per-token bound


def test_per_token_kl_rejects_unknown_estimator():
    with pytest.raises(ValueError, match="available: k1, k3"):
        per_token_kl(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2), "k2")


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_kl_penalized_rewards(estimator):
    torch.manual_seed(5)
    mask, lengths = prefix_mask(5)
    logprobs = -torch.rand(B, T, dtype=DTYPE) * 3
    ref_logprobs = -torch.rand(B, T, dtype=DTYPE) * 3
    scores = torch.randn(B, dtype=DTYPE)
    rewards, kl = kl_penalized_rewards(scores, logprobs, ref_logprobs, mask, kl_coef=0.05, estimator=estimator)
    torch.testing.assert_close(kl, per_token_kl(logprobs, ref_logprobs, mask, estimator))
    for b in range(B):
        for t in range(T):
            expected = -0.05 * kl[b, t].item() if t < lengths[b] else 0.0
            if t == lengths[b] - 1:  # the score lands on the last real token only
                expected += scores[b].item()
            assert rewards[b, t].item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="shape"):
        kl_penalized_rewards(scores.unsqueeze(1), logprobs, ref_logprobs, mask, kl_coef=0.05)


# --- advantages ------------------------------------------------------------------------------------------


def gae_loop(rewards, values, lengths, gamma, lam):
    advantages, returns = torch.zeros(B, T, dtype=DTYPE), torch.zeros(B, T, dtype=DTYPE)
    for b in range(B):
        last = 0.0
        for t in reversed(range(lengths[b])):
            next_value = values[b, t + 1].item() if t + 1 < lengths[b] else 0.0
            delta = rewards[b, t].item() + gamma * next_value - values[b, t].item()
            last = delta + gamma * lam * last
            advantages[b, t] = last
            returns[b, t] = last + values[b, t].item()
    return advantages, returns


@pytest.mark.parametrize("gamma", [1.0, 0.99])
@pytest.mark.parametrize("lam", [0.95, 1.0])
def test_gae_matches_loop(gamma, lam):
    torch.manual_seed(6)
    mask, lengths = prefix_mask(6)
    rewards, values = torch.randn(B, T, dtype=DTYPE), torch.randn(B, T, dtype=DTYPE)
    advantages, returns = gae(with_garbage(rewards, mask), with_garbage(values, mask), mask, gamma, lam)
    expected_advantages, expected_returns = gae_loop(rewards, values, lengths, gamma, lam)
    torch.testing.assert_close(advantages, expected_advantages)
    torch.testing.assert_close(returns, expected_returns)


def test_gae_with_gamma_and_lam_one_is_reward_to_go_minus_value():
    torch.manual_seed(7)
    mask, lengths = prefix_mask(7)
    rewards, values = torch.randn(B, T, dtype=DTYPE), torch.randn(B, T, dtype=DTYPE)
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    for b in range(B):
        for t in range(T):
            to_go = sum(rewards[b, t:lengths[b]].tolist())
            assert advantages[b, t].item() == pytest.approx(to_go - values[b, t].item() if t < lengths[b] else 0.0)
            assert returns[b, t].item() == pytest.approx(to_go if t < lengths[b] else 0.0)


# --- losses ----------------------------------------------------------------------------------------------


def test_clipped_policy_loss_matches_loop():
    torch.manual_seed(8)
    mask, lengths = prefix_mask(8)
    old_logprobs = -torch.rand(B, T, dtype=DTYPE) * 3
    logprobs = old_logprobs + 0.4 * torch.randn(B, T, dtype=DTYPE)
    advantages = torch.randn(B, T, dtype=DTYPE)
    loss, stats = clipped_policy_loss(logprobs, old_logprobs, advantages, mask, cliprange=0.2)
    total, clipped, kl, n = 0.0, 0, 0.0, 0
    for b in range(B):
        for t in range(lengths[b]):
            diff = logprobs[b, t].item() - old_logprobs[b, t].item()
            ratio, a = math.exp(diff), advantages[b, t].item()
            unclipped, clipped_term = -a * ratio, -a * min(max(ratio, 0.8), 1.2)
            total += max(unclipped, clipped_term)
            clipped += clipped_term > unclipped
            kl += 0.5 * diff ** 2
            n += 1
    assert loss.item() == pytest.approx(total / n)
    assert stats["clipfrac"].item() == pytest.approx(clipped / n)
    assert 0 < stats["clipfrac"].item() < 1
    assert stats["approx_kl"].item() == pytest.approx(kl / n)
    # padded garbage leaves the loss and its gradient finite
    garbage = with_garbage(logprobs.detach(), mask, 1e4).requires_grad_()
    garbage_loss, _ = clipped_policy_loss(garbage, old_logprobs, advantages, mask, cliprange=0.2)
    assert garbage_loss.item() == pytest.approx(loss.item())
    garbage_loss.backward()
    assert torch.isfinite(garbage.grad).all() and (garbage.grad[~mask.bool()] == 0).all()


def test_clipped_value_loss_matches_loop():
    torch.manual_seed(9)
    mask, lengths = prefix_mask(9)
    old_values, returns = torch.randn(B, T, dtype=DTYPE), torch.randn(B, T, dtype=DTYPE)
    values = old_values + 0.4 * torch.randn(B, T, dtype=DTYPE)
    loss, stats = clipped_value_loss(with_garbage(values, mask), old_values, returns, mask, cliprange_value=0.2)
    total, clipped, n = 0.0, 0, 0
    for b in range(B):
        for t in range(lengths[b]):
            v, v_old, r = values[b, t].item(), old_values[b, t].item(), returns[b, t].item()
            unclipped, clipped_term = (v - r) ** 2, (min(max(v, v_old - 0.2), v_old + 0.2) - r) ** 2
            total += max(unclipped, clipped_term)
            clipped += clipped_term > unclipped
            n += 1
    assert loss.item() == pytest.approx(0.5 * total / n)
    assert stats["vf_clipfrac"].item() == pytest.approx(clipped / n)
    assert 0 < stats["vf_clipfrac"].item() < 1


# --- KL control ------------------------------------------------------------------------------------------


def test_adaptive_kl_controller_follows_the_target():
    above = AdaptiveKLController(init_kl_coef=0.05, target=6.0, horizon=10_000)
    above.update(current_kl=6.6, n_steps=512)
    assert above.value == pytest.approx(0.05 * (1 + 0.1 * 512 / 10_000))
    below = AdaptiveKLController(init_kl_coef=0.05, target=6.0, horizon=10_000)
    below.update(current_kl=3.0, n_steps=512)  # error -0.5 is clipped to -0.2
    assert below.value == pytest.approx(0.05 * (1 - 0.2 * 512 / 10_000))
    far_above = AdaptiveKLController(init_kl_coef=0.05, target=6.0, horizon=10_000)
    far_above.update(current_kl=600.0, n_steps=512)  # error 99 is clipped to 0.2
    assert far_above.value == pytest.approx(0.05 * (1 + 0.2 * 512 / 10_000))
    on_target = AdaptiveKLController(init_kl_coef=0.05, target=6.0, horizon=10_000)
    on_target.update(current_kl=6.0, n_steps=512)
    assert on_target.value == pytest.approx(0.05)


def test_fixed_kl_controller_stays():
    fixed = FixedKLController(0.05)
    for current_kl in (0.0, 6.0, 600.0):
        fixed.update(current_kl, n_steps=512)
    assert fixed.value == 0.05


def test_bool_and_float_masks_agree():
    torch.manual_seed(10)
    mask, _ = prefix_mask(10)
    x, y = torch.randn(B, T, dtype=DTYPE), torch.randn(B, T, dtype=DTYPE)
    for fn in (
        lambda m: masked_whiten(x, m),
        lambda m: per_token_kl(x, y, m, "k3"),
        lambda m: gae(x, y, m, gamma=0.99, lam=0.95)[0],
        lambda m: kl_penalized_rewards(x[:, 0], x, y, m, kl_coef=0.05)[0],
        lambda m: clipped_value_loss(x, y, y + 1, m, cliprange_value=0.2)[0],
    ):
        torch.testing.assert_close(fn(mask.bool()), fn(mask))
