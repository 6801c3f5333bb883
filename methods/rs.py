"""RS: rejection-sampling fine-tuning (as in Llama 2): keep the best of the k samples of each prompt (or
every sample above a reward threshold) and fine-tune the SFT policy on them. ``rs.k`` uses only the first k
samples of each prompt, so a best-of-k curve over k samples once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from harness.method import POLICY_DIR, Method, StageContext
from harness.store import write_jsonl
from methods.pair_selection import above_threshold, best_of_k
from methods.sampled_pairs import check_first_k, first_k_field, load_reward_matrix
from methods.sft import SFTConfig, fine_tune


@dataclass
class RSConfig(SFTConfig):
    """RS settings: the selection rule, then SFT settings for fine-tuning the SFT policy on the kept samples."""

    selection: Literal["best-of-k", "threshold"] = field(
        default="best-of-k", metadata={"help": "best-of-k: the top sample per prompt; threshold: every sample "
                                       "whose reward >= reward_threshold"},
    )
    reward_threshold: float = field(default=0.0, metadata={"help": "minimum reward under selection=threshold"})
    k: int | None = first_k_field()

    def __post_init__(self):
        check_first_k(self.k, "rs.k")


class RS(Method):
    name = "rs"
    description = "rejection sampling: SFT of the SFT policy on the best of k samples per prompt"
    config_class = RSConfig
    needs = ("sft", "scored_samples")
    uses = ("model", "seed")
    distributed = True  # a TRL trainer: --launcher accelerate runs it in N processes

    def run(self, ctx: StageContext) -> dict:
        cfg: RSConfig = ctx.config
        prompt_ids, rewards, lookup = load_reward_matrix(ctx.input("scored_samples"), cfg.k, f"{self.name}.k")
        if cfg.selection == "best-of-k":
            rows, columns = np.arange(len(prompt_ids)), best_of_k(rewards)
        else:
            rows, columns = above_threshold(rewards, cfg.reward_threshold)
        kept = [lookup[(prompt_ids[r], int(c))] for r, c in zip(rows, columns)]
        if not kept:
            raise ValueError(f"rs: no sample has reward >= {cfg.reward_threshold}; lower rs.reward_threshold")
        write_jsonl(ctx.dir / "selected.jsonl", kept)
        conversations = [s["prompt"] + [{"role": "assistant", "content": s["text"]}] for s in kept]
        stats = fine_tune(ctx, str(ctx.input("sft") / POLICY_DIR), conversations, cfg)
        return {
            "selection": cfg.selection,
            "k": int(rewards.shape[1]),
            "selected_samples": len(kept),
            "selected_reward_mean": float(np.mean([s["reward"] for s in kept])),
            "all_samples_reward_mean": float(np.nanmean(rewards)),
            **stats,
        }
