"""Harmlessness, beside helpfulness: each policy answers harmful-leaning prompts (HH-RLHF harmless-base test by
default, ``data.harmless_prompts``), and the answers are scored two ways:

- ``harmless_reward@<policy>``: the harmless reward model's mean score (``harmless_reward_model``, trained on
  ``data.harmless_preferences``), with a 95% bootstrap CI over prompts and per-prompt scores for paired
  comparisons; the scoring code is ``heldout_reward``'s, pointed at other answers and another reward model.
- ``unsafe_share@<policy>`` (``evals/unsafe_share.py``): the share of answers an LLM judge calls unsafe.

Both read the same ``harmless_answers@<policy>`` stage, so a reward and a verdict describe the same answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evals.heldout_reward import HeldoutReward, sample_answers
from harness.data.stages import read_stage_records
from harness.engines import SamplingConfig
from harness.method import Method, StageContext
from harness.store import read_jsonl, write_jsonl

ANSWERS = "harmless_answers.jsonl"
SCORES = "harmless_rewards.jsonl"


@dataclass
class HarmlessAnswersConfig(SamplingConfig):
    """Answers to the harmless prompts; sampled as the held-out reward samples are (T=0.7, top_p 1.0)."""

    n: int = field(default=1, metadata={"help": "answers per harmless prompt (their scores are averaged per prompt)"})


class HarmlessAnswers(Method):
    name = "harmless_answers"
    description = "a policy's answers to the harmless prompts, read by harmless_reward and unsafe_share"
    config_class = HarmlessAnswersConfig
    needs = ("harmless_prompts",)
    uses = ("model", "seed")
    produces = "answers"
    evaluates_policies = True

    def run(self, ctx: StageContext) -> dict:
        cfg: HarmlessAnswersConfig = ctx.config
        prompts = read_stage_records(ctx.input("harmless_prompts"), "harmless_prompts")
        rows = sample_answers(ctx, prompts, cfg.n, cfg, desc="harmless answers")
        write_jsonl(ctx.dir / ANSWERS, rows)
        return {
            "prompts": len(prompts),
            "answers": len(rows),
            "samples_per_prompt": cfg.n,
            "generated_tokens": int(sum(r["token_count"] for r in rows)),
            "mean_token_count": float(np.mean([r["token_count"] for r in rows])),
            "cut_at_max_new_tokens": int(sum(r["finish_reason"] == "length" for r in rows)),
        }


def read_answers(stage_dir: Path) -> list[dict]:
    """The answer rows a ``harmless_answers`` stage wrote (prompt_id, sample_id, prompt, text...)."""
    return read_jsonl(stage_dir / ANSWERS)


@dataclass
class HarmlessRewardConfig:
    """Scoring of the harmless answers by the harmless reward model."""

    score_batch_size: int = field(default=8, metadata={"help": "sequences per reward-model forward pass"})


class HarmlessReward(HeldoutReward):
    name = "harmless_reward"
    description = "mean harmless reward-model score of each policy's answers to harmless prompts, with a 95% CI"
    config_class = HarmlessRewardConfig
    needs = ("harmless_answers", "harmless_reward_model")
    uses = ("model", "seed")
    reward_model_stage = "harmless_reward_model"
    scores_file = SCORES

    def run(self, ctx: StageContext) -> dict:
        cfg: HarmlessRewardConfig = ctx.config
        answers = ctx.input("harmless_answers")
        rows = read_answers(answers)
        samples_per_prompt = json.loads((answers / "stats.json").read_text())["samples_per_prompt"]
        return {**self.score(ctx, rows, cfg.score_batch_size), "samples_per_prompt": samples_per_prompt,
                "reward_model_stage": self.reward_model_stage}
