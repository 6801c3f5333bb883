"""PPO, the RS-DPO paper's online baseline, written by us (TRL no longer ships one): the policy starts
from SFT, the value model from the reward model, and the frozen reward model scores each rollout."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from typing import Literal

from harness.data.stages import read_stage_records
from harness.engines import rollout_engine
from harness.method import POLICY_DIR, Method, StageContext
from harness.models import load_causal_lm, load_tokenizer, torch_dtype
from harness.reward import RewardScorer
from harness.store import write_jsonl
from harness.training import LoRASettings, peft_config, save_merged
from methods.reward_model import reward_model_path

CHECKPOINTS = "checkpoints"


@dataclass
class PPOConfig(LoRASettings):
    """PPO settings. Defaults: Huang et al. (2024) and TRL's PPOv2 trainer: kl_coef 0.05, cliprange 0.2,
    vf_coef 0.1, cliprange_value 0.2, gamma 1.0, lam 0.95, 4 PPO epochs, temperature 0.7, lr 3e-6."""

    steps: int = field(default=200, metadata={"help": "PPO iterations: one rollout batch, then the PPO epochs on it"})
    rollout_batch_size: int = field(default=64, metadata={"help": "prompts per rollout (one response each)"})
    mini_batch_size: int = field(default=16, metadata={"help": "rollouts per optimizer step"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per mini-batch"})
    num_ppo_epochs: int = field(default=4, metadata={"help": "passes over each rollout batch"})
    learning_rate: float = field(default=3e-6, metadata={"help": "AdamW learning rate, policy and value"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping"})
    kl_coef: float = field(default=0.05, metadata={"help": "per-token KL penalty against the reference"})
    adaptive_kl: bool = field(default=False, metadata={"help": "steer kl_coef towards kl_target (Ziegler et al.)"})
    kl_target: float = field(default=6.0, metadata={"help": "adaptive KL: target KL per sequence"})
    kl_horizon: float = field(default=10000, metadata={"help": "adaptive KL: horizon in episodes"})
    kl_estimator: Literal["k1", "k3"] = field(default="k1", metadata={"help": "per-token KL estimator"})
    cliprange: float = field(default=0.2, metadata={"help": "policy ratio clipping"})
    vf_coef: float = field(default=0.1, metadata={"help": "weight of the value loss"})
    cliprange_value: float = field(default=0.2, metadata={"help": "value clipping around the rollout values"})
    gamma: float = field(default=1.0, metadata={"help": "discount"})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda"})
    whiten_rewards: bool = field(default=False, metadata={"help": "whiten the per-token rewards (shift kept)"})
    missing_eos_penalty: float | None = field(
        default=1.0, metadata={"help": "subtracted from the score of a response that never ends (None: off)"}
    )
    temperature: float = field(default=0.7, metadata={"help": "rollout sampling temperature"})
    top_p: float = field(default=1.0, metadata={"help": "rollout nucleus sampling mass"})
    max_new_tokens: int = field(default=128, metadata={"help": "longest rollout response, in tokens"})
    score_batch_size: int = field(default=8, metadata={"help": "sequences per reward-model forward pass"})
    save_steps: int = field(default=10, metadata={"help": "checkpoint every N iterations, so a killed stage resumes"})


class PPO(Method):
    name = "ppo"
    description = "PPO from the SFT policy against the reward model (ours: clipped policy and value losses, GAE)"
    config_class = PPOConfig
    needs = ("sft", "reward_model", "prompts")
    uses = ("model", "seed")
    distributed = True  # the loop runs through accelerate: --launcher accelerate starts it in N processes

    def run(self, ctx: StageContext) -> dict:
        import torch
        from transformers import AutoModelForSequenceClassification

        from methods.ppo_trainer import PPOTrainer

        cfg: PPOConfig = ctx.config
        model_cfg = ctx.run.core.model
        torch.manual_seed(ctx.seed)
        sft_policy = str(ctx.input("sft") / POLICY_DIR)
        tokenizer = load_tokenizer(sft_policy, model_cfg)
        policy = load_causal_lm(sft_policy, model_cfg, ctx.device)
        ref_policy = None
        if cfg.lora:
            from peft import get_peft_model

            policy = get_peft_model(policy, peft_config(cfg))
        else:
            ref_policy = load_causal_lm(sft_policy, model_cfg, ctx.device).eval().requires_grad_(False)
        rm_path = reward_model_path(ctx.input("reward_model"))
        scorer = RewardScorer(rm_path, model_cfg, ctx.device, cfg.score_batch_size)
        value_model = AutoModelForSequenceClassification.from_pretrained(
            rm_path, num_labels=1, dtype=torch_dtype(model_cfg.dtype, ctx.device)
        ).to(ctx.device)

        def reward_fn(prompts: list[list[dict]], responses: list[str]) -> list[float]:
            return scorer.score([p + [{"role": "assistant", "content": r}] for p, r in zip(prompts, responses)])

        prompts = [p["prompt"] for p in read_stage_records(ctx.input("prompts"), "prompts")]
        processes = int(os.environ.get("WORLD_SIZE", "1"))  # set by accelerate launch
        engine = rollout_engine(policy, tokenizer, sft_policy, model_cfg, ctx.device, ctx.run.core.engine,
                                ctx.run.core.tensor_parallel_size, ctx.seed, processes)
        trainer = PPOTrainer(cfg, policy, ref_policy, value_model, tokenizer, reward_fn, prompts, ctx.device,
                             ctx.seed, ctx.dir / CHECKPOINTS, engine=engine)
        log = trainer.train()
        write_jsonl(ctx.dir / "train_log.jsonl", log)
        save_merged(policy, tokenizer, ctx.policy_dir)
        shutil.rmtree(ctx.dir / CHECKPOINTS, ignore_errors=True)
        first, last = log[0], log[-1]
        return {
            "steps": len(log),
            "episodes": len(log) * cfg.rollout_batch_size,
            "resumed_from_step": trainer.resumed_from,
            "first_mean_score": first["objective/scores"],
            "last_mean_score": last["objective/scores"],
            "last_kl": last["objective/kl"],
            "last_entropy": last["policy/entropy"],
            "last_clipfrac": last["policy/clipfrac"],
            "last_value_loss": last["loss/value"],
            "last_approx_kl": last["policy/approx_kl"],
            "last_response_length": last["val/response_length"],
            "rollout_engine": engine.name,
            "processes": trainer.accelerator.num_processes,
            "rollouts_per_process": trainer.local_rollouts,
            "reference": sft_policy,
            "value_model_init": rm_path,
        }
