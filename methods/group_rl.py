"""GRPO and RLOO, extra online baselines at little cost: TRL's trainers, from the SFT policy, with our
reward model as the reward function. Both sample a group of completions per prompt and use the group's
rewards as the baseline, so they need no value model (unlike PPO)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from harness.data.stages import read_stage_records
from harness.method import POLICY_DIR, Method, StageContext
from harness.models import load_causal_lm, load_tokenizer
from harness.reward import RewardScorer
from harness.training import TrainingConfig, peft_config, save_trained_model, train_and_summarize, trl_args
from methods.reward_model import reward_model_path


@dataclass
class GroupRLConfig(TrainingConfig):
    """Settings shared by GRPO and RLOO. Defaults: TRL's, with beta 0.05 (PPO's kl_coef) so every online
    baseline is held to the reference equally, and temperature 0.7 as in PPO's rollouts."""

    learning_rate: float = field(default=1e-6, metadata={"help": "peak learning rate (AdamW)"})
    max_completion_length: int = field(default=128, metadata={"help": "longest completion, in tokens"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature of the completions"})
    beta: float = field(default=0.05, metadata={"help": "KL coefficient against the reference (SFT) policy"})
    score_batch_size: int = field(default=8, metadata={"help": "sequences per reward-model forward pass"})


@dataclass
class GRPOSettings(GroupRLConfig):
    num_generations: int = field(default=8, metadata={"help": "completions per prompt (the group); TRL's default"})


@dataclass
class RLOOSettings(GroupRLConfig):
    num_generations: int = field(default=2, metadata={"help": "completions per prompt; TRL's default"})


class GroupRL(Method):
    needs = ("sft", "reward_model", "prompts")
    uses = ("model", "seed")
    distributed = True  # a TRL trainer: --launcher accelerate runs it in N processes
    trainer_name: ClassVar[str]  # the TRL trainer and config: "GRPO" or "RLOO"

    def run(self, ctx: StageContext) -> dict:
        import trl
        from datasets import Dataset

        cfg = ctx.config
        sft_policy = str(ctx.input("sft") / POLICY_DIR)
        tokenizer = load_tokenizer(sft_policy, ctx.run.core.model)
        scorer = RewardScorer(reward_model_path(ctx.input("reward_model")), ctx.run.core.model, ctx.device,
                              cfg.score_batch_size)

        def reward_model(prompts, completions, **_) -> list[float]:
            return scorer.score([p + c for p, c in zip(prompts, completions)])

        prompts = read_stage_records(ctx.input("prompts"), "prompts")
        trainer = getattr(trl, f"{self.trainer_name}Trainer")(
            model=load_causal_lm(sft_policy, ctx.run.core.model, ctx.device),
            reward_funcs=reward_model,
            args=trl_args(
                getattr(trl, f"{self.trainer_name}Config"), ctx, cfg, num_generations=cfg.num_generations,
                max_completion_length=cfg.max_completion_length, temperature=cfg.temperature, beta=cfg.beta,
            ),
            train_dataset=Dataset.from_list([{"prompt": p["prompt"]} for p in prompts]),
            processing_class=tokenizer,
            peft_config=peft_config(cfg),
        )
        stats = train_and_summarize(trainer, ctx)
        rewards = [e["reward"] for e in trainer.state.log_history if "reward" in e]
        save_trained_model(trainer, tokenizer, ctx)
        return {
            "reference": sft_policy,
            "first_mean_reward": rewards[0] if rewards else None,
            "last_mean_reward": rewards[-1] if rewards else None,
            **stats,
        }


class GRPO(GroupRL):
    name = "grpo"
    description = "GRPO (TRL) from the SFT policy against the reward model; group-relative baseline"
    config_class = GRPOSettings
    trainer_name = "GRPO"


class RLOO(GroupRL):
    name = "rloo"
    description = "RLOO (TRL) from the SFT policy against the reward model; leave-one-out baseline"
    config_class = RLOOSettings
    trainer_name = "RLOO"
