"""The RL math of PPO for language models (RLHF), in one place and in the order a PPO update runs it.

Sources: Schulman et al. 2017 (PPO), Schulman et al. 2016 (GAE), Ziegler et al. 2019 (KL-penalised reward,
adaptive KL controller), Huang, Liu and von Werra, "The N Implementation Details of RLHF with PPO" (ICLR 2024
blog track), Huang et al. 2024, "The N+ Implementation Details of RLHF with PPO" (arXiv:2403.17031), and TRL's
former PPOv2 trainer, whose formulas and statistic
names we keep.

Conventions. Every [B, T] tensor covers RESPONSE tokens only; ``mask`` (float or bool, 1 = real token) is a
prefix mask: ones up to and including the first EOS, zeros for the padding after it (``response_mask``).
Padded positions of every input are ignored (they may hold garbage, even inf) and every [B, T] output is 0
there. Token t is the action taken in state "prompt + response[:t]"; the episode ends after the last real
token, so the value after it is 0. (PPOv2 instead put the score, and one extra value, one position past the
EOS, a leftover of OpenAI's code; here both end at the last real token.)

Order of an update:
  1. rollout      response_mask, sequence_end_index, logprobs_from_logits (policy and reference),
                  entropy_from_logits
  2. rewards      apply_missing_eos_penalty, per_token_kl, kl_penalized_rewards,
                  optionally masked_whiten(rewards, shift_mean=False)
  3. advantages   gae, then masked_whiten(advantages)
  4. losses       clipped_policy_loss + vf_coef * clipped_value_loss, for each PPO epoch and minibatch
  5. KL control   kl_ctl.update(mean KL per sequence, batch size); kl_ctl.value is the next kl_coef

Defaults (they live in the PPO config, the values of Huang et al. 2024 and PPOv2): kl_coef 0.05,
cliprange 0.2, vf_coef 0.1, cliprange_value 0.2, gamma 1.0, lam 0.95.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

KLEstimator = Literal["k1", "k3"]
KL_ESTIMATORS = ("k1", "k3")
WHITEN_EPS = 1e-8


# ---------------------------------------------------------------------------------------------------------
# 0. Masked statistics: means and variances over real tokens only
# ---------------------------------------------------------------------------------------------------------


def zero_padding(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` on real tokens, 0 on padding. torch.where, not x * mask: padded inf or nan times 0 is still nan."""
    return torch.where(mask.bool(), x, x.new_zeros(()))


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over entries where ``mask`` is 1, over all entries (dim=None) or along ``dim``."""
    total = zero_padding(x, mask).sum(dim=dim)
    return total / mask.bool().sum(dim=dim).to(total.dtype)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``x`` over entries where ``mask`` is 1 (a scalar); ``unbiased`` applies Bessel's correction."""
    count = int(mask.bool().sum())
    if count < (2 if unbiased else 1):
        raise ValueError(f"masked_var needs at least {2 if unbiased else 1} real entries, found {count}; "
                         "use a larger minibatch")
    mean = masked_mean(x, mask)
    variance = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        variance = variance * count / (count - 1)
    return variance


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / sqrt(var + 1e-8) over real entries; 0 on padding.

    shift_mean=False adds the mean back, rescaling without centering. Used twice: on rewards with
    shift_mean=False (optional reward whitening, Huang et al. 2024) and on advantages."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + WHITEN_EPS)
    if not shift_mean:
        whitened = whitened + mean
    return zero_padding(whitened, mask)


# ---------------------------------------------------------------------------------------------------------
# 1. Rollout: which tokens are real, and their log-probabilities
# ---------------------------------------------------------------------------------------------------------


def response_mask(
    tokens: torch.Tensor, eos_token_id: int, pad_token_id: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Real tokens of generated responses [B, T]: everything up to AND including the first EOS.

    Returns (mask [B, T] float, has_eos [B] bool). The EOS is the policy's last action, so it is real; what
    follows is padding, even when pad_token_id == eos_token_id. A response that stops at a pad token before
    any EOS (or never stops) has no EOS: ``has_eos`` is False and the missing-EOS penalty applies."""
    is_eos = tokens == eos_token_id
    is_pad = tokens == pad_token_id if pad_token_id is not None else torch.zeros_like(is_eos)
    # the response ends at the first EOS (kept) or the first pad (dropped), whichever comes first
    stop = is_eos | is_pad
    stops_so_far = stop.int().cumsum(dim=1)
    first_stop_is_eos = is_eos & (stops_so_far == 1)
    mask = (stops_so_far == 0) | first_stop_is_eos
    return mask.to(torch.float32), first_stop_is_eos.any(dim=1)


def sequence_end_index(mask: torch.Tensor) -> torch.Tensor:
    """Index [B] (long) of the last real token of each row: where the reward model's score goes."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand(mask.shape)
    end = torch.where(mask.bool(), positions, -1).max(dim=1).values
    if (end < 0).any():
        raise ValueError(f"rows {(end < 0).nonzero().flatten().tolist()} have no real token; "
                         "every response needs at least one")
    return end


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log pi(token_t | prefix) [B, T] from logits [B, T, V] at the positions that predict ``tokens`` [B, T].

    ``temperature``: the sampling temperature; logits are divided by it so that the log-probabilities are
    those of the distribution that was sampled (the N Implementation Details: scale the logits by the
    sampling temperature, or the KL and the ratio compare different distributions)."""
    # float32 at least: in bfloat16 (8 bits of mantissa) a log-prob near -10 is off by ~0.05, so the ratio
    # exp(new - old) would already be clipped on the first minibatch, and the KL penalty would be noise
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature
    # gather - logsumexp equals log_softmax gathered, without a second [B, T, V] tensor
    chosen = logits.gather(dim=-1, index=tokens.unsqueeze(-1)).squeeze(-1)
    return chosen - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy [B, T] of the next-token distribution, -sum_v p log p, from logits [B, T, V]."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature  # as above
    return torch.logsumexp(logits, dim=-1) - (F.softmax(logits, dim=-1) * logits).sum(dim=-1)


# ---------------------------------------------------------------------------------------------------------
# 2. Rewards: terminal score from the reward model, KL penalty at every token
# ---------------------------------------------------------------------------------------------------------


def apply_missing_eos_penalty(scores: torch.Tensor, has_eos: torch.Tensor, penalty: float | None) -> torch.Tensor:
    """Scores [B] minus ``penalty`` (a positive number; None disables) where the response has no EOS.

    The "EOS trick" (Huang et al. 2024): the reward model only saw finished responses, so its
    score of a truncated one is undefined; a fixed penalty teaches the policy to finish. (OpenAI and PPOv2
    replaced the score by -1; TRL later subtracts a penalty, as here.)"""
    if penalty is None:
        return scores
    if penalty < 0:
        raise ValueError(f"missing-EOS penalty is subtracted and must be >= 0, got {penalty}")
    return torch.where(has_eos.bool(), scores, scores - penalty)


def per_token_kl(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, estimator: KLEstimator = "k1",
) -> torch.Tensor:
    """Per-token estimate [B, T] of KL(pi || pi_ref) from the sampled tokens' log-probs; 0 on padding.

    k1 = logp - ref_logp: unbiased, can be negative (Ziegler et al., PPOv2).
    k3 = (r - 1) - log r with r = pi_ref / pi: unbiased, always >= 0, lower variance (Schulman, "Approximating
    KL divergence", 2020)."""
    # zeroed before exp so that padded garbage cannot overflow (nor poison gradients through where)
    log_ratio = zero_padding(ref_logprobs - logprobs, mask)
    if estimator == "k1":
        return -log_ratio
    if estimator == "k3":
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}; available: {', '.join(KL_ESTIMATORS)}")


def kl_penalized_rewards(
    scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
    kl_coef: float, estimator: KLEstimator = "k1",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards [B, T] = -kl_coef * kl at every real token, plus the score at the last real token.

    Returns (rewards, kl). The reward model judges whole responses, so its score is a terminal reward
    (Ziegler et al. 2019); the KL penalty is a per-token reward keeping the policy near the reference."""
    if scores.shape != logprobs.shape[:1]:
        raise ValueError(f"scores must have shape [B] = {tuple(logprobs.shape[:1])}, got {tuple(scores.shape)}")
    kl = per_token_kl(logprobs, ref_logprobs, mask, estimator)
    non_score_reward = -kl_coef * kl
    end = sequence_end_index(mask)
    terminal = F.one_hot(end, num_classes=logprobs.shape[1]).to(kl.dtype) * scores.to(kl.dtype).unsqueeze(1)
    return non_score_reward + terminal, kl


# ---------------------------------------------------------------------------------------------------------
# 3. Advantages: generalized advantage estimation
# ---------------------------------------------------------------------------------------------------------


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016) backwards over time; returns (advantages,
    returns), both [B, T] and 0 on padding.

    delta_t = r_t + gamma * V_{t+1} - V_t, A_t = delta_t + gamma * lam * A_{t+1}, returns = A + V.
    With gamma = lam = 1, A_t = sum of rewards from t on, minus V_t. Whiten the advantages afterwards
    (masked_whiten); the returns stay raw, they are the value head's targets."""
    if not rewards.shape == values.shape == mask.shape:
        raise ValueError(f"rewards, values and mask must share a shape [B, T]; got {tuple(rewards.shape)}, "
                         f"{tuple(values.shape)}, {tuple(mask.shape)}")
    real = mask.bool()
    zero = values.new_zeros(())
    # the episode ends at the last real token: with padded values zeroed, the value after it is 0
    rewards, values = zero_padding(rewards, mask), zero_padding(values, mask)
    last_gae_lam = torch.zeros_like(values[:, 0])
    advantages_reversed = []
    for t in reversed(range(rewards.shape[1])):
        next_values = values[:, t + 1] if t + 1 < rewards.shape[1] else zero
        delta = rewards[:, t] + gamma * next_values - values[:, t]
        last_gae_lam = torch.where(real[:, t], delta + gamma * lam * last_gae_lam, zero)
        advantages_reversed.append(last_gae_lam)
    advantages = torch.stack(advantages_reversed[::-1], dim=1)
    returns = advantages + values
    return advantages, returns


# ---------------------------------------------------------------------------------------------------------
# 4. Losses: clipped surrogate objective and clipped value loss
# ---------------------------------------------------------------------------------------------------------


def clipped_policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
    cliprange: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate (Schulman et al. 2017), as a loss to minimise:
    masked mean of max(-A * ratio, -A * clip(ratio, 1 - c, 1 + c)), ratio = exp(logp - old_logp).

    stats (detached scalars): clipfrac, the fraction of real tokens where the clipped term is the larger;
    approx_kl, the masked mean of 0.5 * (logp - old_logp)^2 (as PPOv2)."""
    # padded log-probs may be garbage: a zero difference there keeps exp finite and gradients clean
    logprobs_diff = zero_padding(logprobs - old_logprobs, mask)
    ratio = torch.exp(logprobs_diff)
    pg_losses = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    pg_loss = masked_mean(torch.max(pg_losses, pg_losses2), mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((pg_losses2 > pg_losses).to(pg_loss.dtype), mask),
            "approx_kl": masked_mean(0.5 * logprobs_diff ** 2, mask),
        }
    return pg_loss, stats


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
    cliprange_value: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """0.5 * masked mean of max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2): the value head may move
    at most ``cliprange_value`` from its rollout estimate before the loss stops pulling it further.

    stats (detached): vf_clipfrac, the fraction of real tokens where the clipped term is the larger."""
    values_clipped = torch.clamp(values, old_values - cliprange_value, old_values + cliprange_value)
    vf_losses1 = (values - returns) ** 2
    vf_losses2 = (values_clipped - returns) ** 2
    vf_loss = 0.5 * masked_mean(torch.max(vf_losses1, vf_losses2), mask)
    with torch.no_grad():
        stats = {"vf_clipfrac": masked_mean((vf_losses2 > vf_losses1).to(vf_loss.dtype), mask)}
    return vf_loss, stats


# ---------------------------------------------------------------------------------------------------------
# 5. KL control: the coefficient of the KL penalty for the next rollout
# ---------------------------------------------------------------------------------------------------------


class FixedKLController:
    """A constant KL coefficient: ``update`` changes nothing."""

    def __init__(self, kl_coef: float) -> None:
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        """Nothing to adapt."""


class AdaptiveKLController:
    """Steers the KL coefficient so that the KL per sequence tracks ``target`` (Ziegler et al. 2019):
    error = clip(current_kl / target - 1, -0.2, 0.2); kl_coef *= 1 + error * n_steps / horizon.
    Ziegler et al. used target 6 and horizon 10000."""

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError(f"target and horizon must be positive, got target={target}, horizon={horizon}")
        self.value = init_kl_coef
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        """Adapt after a batch of ``n_steps`` episodes whose mean KL (summed over tokens) was ``current_kl``."""
        # proportional control, clipped so that one noisy batch moves the coefficient by at most 20% per horizon
        proportional_error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon
