"""Preference pairs built from scored samples (RS-DPO, DPO-BW): selected by a rule over the reward matrix,
written with the rewards that chose them, then trained on with DPO. Also the ``k`` setting every consumer of
scored samples shares: use only the first k samples of each prompt, so a k sweep samples once."""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import Any

import numpy as np

from harness.config import ConfigError
from harness.method import StageContext
from harness.registry import UnknownPlugin, pair_selectors
from harness.store import read_jsonl, write_json
from methods.dpo import DPOConfig, train_dpo
from methods.pair_selection import PairSelection, pair_statistics
from methods.sampling import SCORED_SAMPLES, reward_matrix


def first_k_field() -> Any:
    """The ``k`` setting of rs, rsdpo and dpo-bw (a dataclass field)."""
    return field(default=None, metadata={
        "help": "use only the first k samples of each prompt (None: all samples.k); a sweep over it "
        "(e.g. 2,4,8 with samples.k=8) samples and scores once",
    })


def check_first_k(k: int | None, key: str) -> None:
    """Config-time check of a ``k`` setting (run-time checks need the samples)."""
    if k is not None and k < 1:
        raise ConfigError(f"'{key}' must be at least 1 (or null for all samples); found {k}")


def first_k(rewards: np.ndarray, k: int | None, key: str, where: Path) -> np.ndarray:
    """The first ``k`` columns of a (prompts, samples) reward matrix; ``key`` names the setting in errors."""
    if k is None:
        return rewards
    available = rewards.shape[1]
    if k > available:
        raise ValueError(
            f"{key}={k} but {where} holds {available} samples per prompt (samples.k={available}); "
            f"raise samples.k to at least {k} or lower {key}"
        )
    # Samples are drawn independently, so the first k of a larger draw are a draw of k.
    return rewards[:, :k]


def load_reward_matrix(scored_samples_dir: Path, k: int | None = None, key: str = "k"):
    """(prompt ids, rewards as prompts x k, {(prompt id, sample id): sample}); only the first ``k`` samples
    of each prompt when ``k`` is set."""
    path = scored_samples_dir / SCORED_SAMPLES
    prompt_ids, rewards, lookup = reward_matrix(read_jsonl(path))
    return prompt_ids, first_k(rewards, k, key, path), lookup


def check_pair_selector(name: str, key: str) -> None:
    """Config-time check that ``name`` is a registered pair selector, so a typo fails before any work."""
    try:
        pair_selectors.get(name)
    except UnknownPlugin as err:
        raise ConfigError(f"'{key}': {err}") from None


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


def dpo_on_selected_pairs(ctx: StageContext, method: str, selector: str, cfg: DPOConfig, when_none: str) -> dict:
    """Select pairs from the first ``cfg.k`` scored samples with the registered pair selector ``selector``,
    record their statistics (and which selector and k made them), then DPO from the SFT policy.
    ``when_none`` is the error raised when no pair is kept (``{prompts}`` and ``{k}`` are filled in)."""
    k_setting = getattr(cfg, "k", None)
    prompt_ids, rewards, lookup = load_reward_matrix(ctx.input("scored_samples"), k_setting, f"{method}.k")
    selection = pair_selectors.get(selector)(rewards, cfg)
    statistics = pair_statistics(selection)
    made_by = {"selection": selector, "k": int(rewards.shape[1])}
    write_json(ctx.dir / "pair_stats.json", {**made_by, **statistics})
    if statistics["pairs_kept"] == 0:
        raise ValueError(when_none.format(prompts=len(prompt_ids), k=rewards.shape[1]))
    pairs = pairs_from_selection(selection, prompt_ids, lookup)
    return {**made_by, "pair_selection": statistics, **train_dpo(ctx, pairs, cfg)}
