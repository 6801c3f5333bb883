"""Held-out reward: the reward model's mean score of a policy's fresh samples on held-out prompts.

A cheap, judge-free check that alignment moved a policy the way its reward model wanted; every policy is
sampled with the same seed and settings, so differences between policies are paired by prompt."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
from tqdm.auto import tqdm

from harness.data.stages import read_stage_records
from harness.engines import SamplingConfig, load_policy_engine
from harness.method import Method, StageContext
from harness.reward import RewardScorer
from harness.statistics import bootstrap_mean
from harness.store import read_jsonl, write_jsonl
from methods.reward_model import reward_model_path

SCORES = "heldout_rewards.jsonl"


@dataclass
class HeldoutRewardConfig(SamplingConfig):
    n: int = field(default=1, metadata={"help": "samples per held-out prompt (their rewards are averaged)"})
    score_batch_size: int = field(default=8, metadata={"help": "sequences per reward-model forward pass"})


class HeldoutReward(Method):
    name = "heldout_reward"
    description = "mean reward-model score of each policy's samples on held-out prompts, with a 95% CI"
    config_class = HeldoutRewardConfig
    needs = ("heldout_prompts", "reward_model")
    uses = ("model", "seed")
    produces = "evaluation"
    evaluates_policies = True

    # What a subclass changes to score other answers with another reward model (evals/harmless.py).
    reward_model_stage: ClassVar[str] = "reward_model"
    scores_file: ClassVar[str] = SCORES

    def run(self, ctx: StageContext) -> dict:
        cfg: HeldoutRewardConfig = ctx.config
        prompts = read_stage_records(ctx.input("heldout_prompts"), "heldout_prompts")
        rows = sample_answers(ctx, prompts, cfg.n, cfg, desc="held-out samples")
        return {**self.score(ctx, rows, cfg.score_batch_size), "samples_per_prompt": cfg.n}

    def score(self, ctx: StageContext, rows: list[dict], batch_size: int) -> dict:
        """Score answer rows with the reward model, write them with their rewards, and summarize."""
        scorer = RewardScorer(reward_model_path(ctx.input(self.reward_model_stage)), ctx.run.core.model, ctx.device,
                              batch_size)
        with tqdm(total=len(rows), desc=f"score {ctx.name}", unit="seq") as bar:
            rewards = scorer.score([r["prompt"] + [{"role": "assistant", "content": r["text"]}] for r in rows], bar)
        write_jsonl(ctx.dir / self.scores_file, ({**r, "reward": w} for r, w in zip(rows, rewards)))
        per_prompt = self.per_prompt_scores(ctx.dir)
        return {
            "reward": bootstrap_mean(list(per_prompt.values()), seed=ctx.seed),
            "prompts": len(per_prompt),
            "mean_token_count": float(np.mean([r["token_count"] for r in rows])),
        }

    @classmethod
    def per_prompt_scores(cls, stage_dir: Path) -> dict[str, float]:
        """Mean reward per prompt: the items paired comparisons between policies use."""
        by_prompt: dict[str, list[float]] = {}
        for row in read_jsonl(Path(stage_dir) / cls.scores_file):
            by_prompt.setdefault(row["prompt_id"], []).append(row["reward"])
        return {prompt: float(np.mean(values)) for prompt, values in by_prompt.items()}


def sample_answers(ctx: StageContext, prompts: list[dict], n: int, sampling: SamplingConfig, desc: str) -> list[dict]:
    """``n`` answers of the stage's policy to each prompt record, one row per answer, seeded by the run."""
    engine = load_policy_engine(ctx)
    groups = engine.generate([p["prompt"] for p in prompts], n, sampling, ctx.seed, desc=desc)
    del engine  # free the policy before a reward model is loaded
    return [
        {"prompt_id": p["id"], "sample_id": i, "prompt": p["prompt"], "text": c.text,
         "token_count": c.token_count, "finish_reason": c.finish_reason}
        for p, completions in zip(prompts, groups) for i, c in enumerate(completions)
    ]
