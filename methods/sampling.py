"""The shared sampling stages of RS, RS-DPO and DPO-BW: k responses per prompt from the SFT policy
(``samples``), then their rewards (``scored_samples``). Produced once; an eta or tau sweep reuses them."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from harness.data.stages import read_stage_records
from harness.engines import SamplingConfig, load_policy_engine
from harness.method import Method, StageContext
from harness.reward import RewardScorer
from harness.store import read_jsonl, write_jsonl
from methods.reward_model import reward_model_path

SAMPLES = "samples.jsonl"
SCORED_SAMPLES = "scored_samples.jsonl"


@dataclass
class SamplesConfig(SamplingConfig):
    """Sampling from the SFT policy. Default k=16: the paper's."""

    k: int = field(default=16, metadata={"help": "responses sampled per prompt (rs.k, rsdpo.k, dpo-bw.k may use "
                                         "only the first of them)"})


@dataclass
class ScoringConfig:
    batch_size: int = field(default=8, metadata={"help": "sequences per reward-model forward pass"})


class Samples(Method):
    name = "samples"
    description = "k responses per prompt from the SFT policy (shared by rs, rsdpo, dpo-bw)"
    config_class = SamplesConfig
    needs = ("sft", "prompts")
    uses = ("model", "seed")
    produces = "data"

    def run(self, ctx: StageContext) -> dict:
        cfg: SamplesConfig = ctx.config
        prompts = read_stage_records(ctx.input("prompts"), "prompts")
        engine = load_policy_engine(ctx, "sft")
        # Append batch by batch: a killed stage resumes after its last whole batch.
        partial = ctx.dir / "samples.partial.jsonl"
        done_batches = _whole_batches(partial, cfg.batch_size * cfg.k)
        started, tokens = time.perf_counter(), 0
        total = (len(prompts) + cfg.batch_size - 1) // cfg.batch_size
        batches = engine.generate_batches([p["prompt"] for p in prompts], cfg.k, cfg, ctx.seed, done_batches)
        with open(partial, "a", encoding="utf-8") as out:
            for number, groups in tqdm(batches, total=total, initial=done_batches, desc="sample", unit="batch"):
                for prompt, completions in zip(prompts[number * cfg.batch_size:], groups):
                    for sample_id, completion in enumerate(completions):
                        tokens += completion.token_count
                        out.write(json.dumps({
                            "prompt_id": prompt["id"], "sample_id": sample_id, "prompt": prompt["prompt"],
                            "text": completion.text, "token_count": completion.token_count,
                            "finish_reason": completion.finish_reason,
                        }, ensure_ascii=False) + "\n")
                out.flush()
                os.fsync(out.fileno())
        elapsed = time.perf_counter() - started
        os.replace(partial, ctx.dir / SAMPLES)
        samples = read_jsonl(ctx.dir / SAMPLES)
        return {
            "prompts": len(prompts),
            "k": cfg.k,
            "samples": len(samples),
            "engine": engine.name,
            "mean_token_count": float(np.mean([s["token_count"] for s in samples])),
            "finish_reasons": dict(Counter(s["finish_reason"] for s in samples)),
            "generated_tokens_this_attempt": tokens,
            "tokens_per_second": tokens / elapsed if elapsed > 0 else None,
            "resumed_after_batches": done_batches,
        }


def _whole_batches(partial: Path, lines_per_batch: int) -> int:
    """How many whole batches an earlier attempt wrote; a torn last batch is cut off."""
    if not partial.exists():
        return 0
    lines = partial.read_text(encoding="utf-8").splitlines(keepends=True)
    whole = len(lines) // lines_per_batch
    partial.write_text("".join(lines[: whole * lines_per_batch]), encoding="utf-8")
    return whole


class ScoredSamples(Method):
    name = "scored_samples"
    description = "the reward of every sample (shared by rs, rsdpo, dpo-bw)"
    config_class = ScoringConfig
    needs = ("samples", "reward_model")
    uses = ("model",)
    produces = "data"

    def run(self, ctx: StageContext) -> dict:
        samples = read_jsonl(ctx.input("samples") / SAMPLES)
        scorer = RewardScorer(reward_model_path(ctx.input("reward_model")), ctx.run.core.model, ctx.device,
                              ctx.config.batch_size)
        conversations = [s["prompt"] + [{"role": "assistant", "content": s["text"]}] for s in samples]
        with tqdm(total=len(samples), desc="score samples", unit="seq") as bar:
            rewards = scorer.score(conversations, bar)
        write_jsonl(ctx.dir / SCORED_SAMPLES, ({**s, "reward": r} for s, r in zip(samples, rewards)))
        return {"samples": len(samples), "reward_mean": float(np.mean(rewards)), "reward_std": float(np.std(rewards))}


def reward_matrix(scored: list[dict]) -> tuple[list[str], np.ndarray, dict]:
    """(prompt ids, rewards as prompts x k, {(prompt id, sample id): sample}) from scored samples."""
    by_prompt: dict[str, dict[int, dict]] = {}
    for sample in scored:
        by_prompt.setdefault(sample["prompt_id"], {})[sample["sample_id"]] = sample
    prompt_ids = list(by_prompt)
    k = max(len(group) for group in by_prompt.values())
    rewards = np.full((len(prompt_ids), k), np.nan)
    for row, prompt_id in enumerate(prompt_ids):
        for sample_id, sample in by_prompt[prompt_id].items():
            rewards[row, sample_id] = sample["reward"]
    lookup = {(s["prompt_id"], s["sample_id"]): s for s in scored}
    return prompt_ids, rewards, lookup
