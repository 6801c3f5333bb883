"""PPO on the tiny random model with a programmatic reward: it must learn, with its KL kept bounded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from harness.config import ModelConfig
from harness.models import load_causal_lm, load_tokenizer, model_path
from methods.ppo import PPOConfig
from methods.ppo_trainer import PPOTrainer

TINY = ModelConfig(source="tiny-random-llama", dtype="float32", max_length=256)
PROMPTS = [[{"role": "user", "content": f"Say something about topic {i}."}] for i in range(32)]


def make_trainer(tmp_path, lora: bool = False, **overrides) -> PPOTrainer:
    torch.manual_seed(0)
    path = model_path(TINY)
    tokenizer = load_tokenizer(path, TINY)
    policy = load_causal_lm(path, TINY, "cpu")
    reference = load_causal_lm(path, TINY, "cpu").eval().requires_grad_(False)
    if lora:  # the reference is then the policy with its adapters disabled
        from peft import LoraConfig, get_peft_model

        policy, reference = get_peft_model(policy, LoraConfig(r=4, target_modules="all-linear")), None
    value_model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    half = len(tokenizer) // 2

    def low_token_share(prompts, responses):
        # Reward: the share of response tokens from the lower half of the vocabulary (0.5 by chance).
        ids = [tokenizer(r, add_special_tokens=False)["input_ids"] or [half] for r in responses]
        return [float(np.mean([i < half for i in row])) for row in ids]

    settings = dict(steps=24, rollout_batch_size=16, mini_batch_size=8, num_ppo_epochs=4, learning_rate=1e-3,
                    max_new_tokens=8, temperature=1.0, missing_eos_penalty=None, save_steps=100)
    cfg = PPOConfig(**{**settings, **overrides})
    return PPOTrainer(cfg, policy, reference, value_model, tokenizer, low_token_share, PROMPTS, "cpu", 0,
                      tmp_path / "checkpoints")


def test_ppo_raises_a_programmatic_reward_with_bounded_kl(tmp_path):
    log = make_trainer(tmp_path).train()
    scores = [entry["objective/scores"] for entry in log]
    first, last = np.mean(scores[:4]), np.mean(scores[-4:])
    assert last > first + 0.15, f"PPO did not learn: mean score {first:.3f} -> {last:.3f}"
    # Bounded: a collapsed policy would sit tens of nats from the reference (ln 49152 = 10.8 per token).
    assert max(entry["objective/kl"] for entry in log) < 20.0  # nats per 8-token response
    for key in ("policy/entropy", "policy/clipfrac", "loss/value", "policy/approx_kl", "val/response_length"):
        assert np.isfinite(log[-1][key]), key


def test_a_killed_ppo_run_resumes_from_its_checkpoint(tmp_path):
    first = make_trainer(tmp_path, steps=4, save_steps=2)
    first.train()
    resumed = make_trainer(tmp_path, steps=6, save_steps=2)
    log = resumed.train()
    assert resumed.resumed_from == 4 and [entry["step"] for entry in log] == [1, 2, 3, 4, 5, 6]
    assert log[:4] == first.log


@pytest.mark.parametrize("adaptive", [False, True])
def test_lora_policy_uses_itself_without_adapters_as_reference(tmp_path, adaptive):
    trainer = make_trainer(tmp_path, lora=True, steps=2, adaptive_kl=adaptive, kl_target=0.1, kl_horizon=100)
    log = trainer.train()
    assert log[0]["objective/kl"] == pytest.approx(0.0, abs=1e-5)  # adapters start at zero: policy == reference
    assert (trainer.kl_ctl.value != 0.05) == adaptive


@pytest.mark.parametrize("accumulation", [1, 2])
def test_one_optimizer_step_per_mini_batch_whatever_the_accumulation(tmp_path, accumulation):
    trainer = make_trainer(tmp_path, steps=1, gradient_accumulation_steps=accumulation)
    trainer.train()
    # 16 rollouts in mini-batches of 8, 4 PPO epochs: 8 AdamW steps, however many micro-batches each has.
    steps = {float(state["step"]) for state in trainer.optimizer.state_dict()["state"].values()}
    assert steps == {8.0}


def test_batch_sizes_that_do_not_split_evenly_are_refused_with_the_fields():
    from harness.method import StageError
    from methods.ppo_trainer import local_batch_sizes

    assert local_batch_sizes(PPOConfig(rollout_batch_size=64, mini_batch_size=16, gradient_accumulation_steps=2),
                             processes=4) == (16, 4, 2)
    with pytest.raises(StageError, match=r"ppo.rollout_batch_size \(10\) must be a multiple of ppo.mini_batch_size \(4\)"):
        local_batch_sizes(PPOConfig(rollout_batch_size=10, mini_batch_size=4), processes=1)
    with pytest.raises(StageError, match=r"ppo.mini_batch_size \(8\) must be a multiple of processes x "
                                         r"ppo.gradient_accumulation_steps \(4 x 4\)"):
        local_batch_sizes(PPOConfig(rollout_batch_size=16, mini_batch_size=8, gradient_accumulation_steps=4), processes=4)
