"""Preference pairs built from scored samples (RS-DPO, DPO-BW): selected by a rule over the reward matrix,
written with the rewards that chose them, then trained on with DPO."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from harness.method import StageContext
from harness.store import read_jsonl, write_json
from methods.dpo import DPOConfig, train_dpo
from methods.pair_selection import PairSelection, pair_statistics
from methods.sampling import SCORED_SAMPLES, reward_matrix


def load_reward_matrix(scored_samples_dir):
    return reward_matrix(read_jsonl(scored_samples_dir / SCORED_SAMPLES))


def pairs_from_selection(selection: PairSelection, prompt_ids: list[str], lookup: dict) -> list[dict]:
    pairs = []
    for p, j, l in zip(selection.prompt_index, selection.chosen_index, selection.rejected_index):
        chosen, rejected = lookup[(prompt_ids[p], int(j))], lookup[(prompt_ids[p], int(l))]
        pairs.append({
            "id": f"{prompt_ids[p]}:{int(j)}>{int(l)}",
            "prompt": chosen["prompt"],
            "chosen": [{"role": "assistant", "content": chosen["text"]}],
            "rejected": [{"role": "assistant", "content": rejected["text"]}],
            "chosen_reward": chosen["reward"],
            "rejected_reward": rejected["reward"],
        })
    return pairs


def dpo_on_selected_pairs(
    ctx: StageContext, select: Callable[[np.ndarray], PairSelection], cfg: DPOConfig, when_none: str
) -> dict:
    """Select pairs from the scored samples, record their statistics, then DPO from the SFT policy.
    ``when_none`` is the error raised when no pair is kept (``{prompts}`` is filled in)."""
    prompt_ids, rewards, lookup = load_reward_matrix(ctx.input("scored_samples"))
    selection = select(rewards)
    statistics = pair_statistics(selection)
    write_json(ctx.dir / "pair_stats.json", statistics)
    if statistics["pairs_kept"] == 0:
        raise ValueError(when_none.format(prompts=len(prompt_ids)))
    pairs = pairs_from_selection(selection, prompt_ids, lookup)
    return {"pair_selection": statistics, **train_dpo(ctx, pairs, cfg)}
