"""Preference pairs built from scored samples: the records DPO trains on, with the rewards that chose them."""

from __future__ import annotations

from harness.store import read_jsonl
from methods.pair_selection import PairSelection
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
