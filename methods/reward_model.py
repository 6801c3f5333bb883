"""The reward model: a sequence classifier trained on human preference pairs (TRL RewardTrainer,
Bradley-Terry loss), or an existing one taken as is. Either way its accuracy on held-out pairs is measured.

For studies of reward-model quality it can be degraded on purpose: train on fewer pairs (``max_pairs``),
for fewer steps (``max_steps``), or on pairs whose labels were flipped (``label_noise``). The held-out pairs
are split off first and never flipped, so held-out accuracy always measures against the human labels."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from tqdm.auto import tqdm

from harness.data.stages import read_stage_records
from harness.method import Method, StageContext
from harness.models import load_tokenizer, model_path, torch_dtype
from harness.reward import RewardScorer
from harness.config import ConfigError
from harness.store import write_json, write_jsonl
from harness.training import TrainingConfig, peft_config, save_trained_model, train_and_summarize, trl_args

REWARD_MODEL_DIR = "reward_model"


@dataclass
class RewardModelConfig(TrainingConfig):
    """Reward-model settings. Defaults: one epoch at lr 1e-5, as in InstructGPT-style reward modelling."""

    learning_rate: float = field(default=1e-5, metadata={"help": "peak learning rate (AdamW)"})
    pretrained: str | None = field(
        default=None,
        metadata={"help": "use this reward model (hub id or folder) instead of training one; only its "
                  "held-out accuracy is measured"},
    )
    heldout_fraction: float = field(default=0.1, metadata={"help": "share of the pairs kept out of training"})
    score_batch_size: int = field(default=8, metadata={"help": "sequences per forward pass when scoring"})
    label_noise: float = field(
        default=0.0,
        metadata={"help": "share of the training pairs whose chosen and rejected are swapped (seeded; held-out "
                  "pairs stay clean), to study a worse reward model"},
    )
    max_pairs: int | None = field(
        default=None,
        metadata={"help": "train on only the first N training pairs (None: all); held-out pairs unchanged"},
    )

    section: ClassVar[str] = "reward_model"  # the config section errors name (subclasses: their own)

    def __post_init__(self):
        s = self.section
        if not 0.0 <= self.label_noise <= 1.0:
            raise ConfigError(f"'{s}.label_noise' must be in [0, 1]; found {self.label_noise}")
        if self.max_pairs is not None and self.max_pairs < 1:
            raise ConfigError(f"'{s}.max_pairs' must be at least 1 (or null for all); found {self.max_pairs}")
        if self.pretrained and (self.label_noise or self.max_pairs is not None):
            raise ConfigError(f"'{s}.label_noise' and '{s}.max_pairs' degrade training; "
                              f"they do nothing with '{s}.pretrained' set")


def split_heldout(pairs: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """A seeded, reproducible split into (train, held-out); at least one held-out pair."""
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_heldout = max(1, round(len(pairs) * fraction))
    heldout = sorted(order[:n_heldout])
    train = sorted(order[n_heldout:])
    return [pairs[i] for i in train], [pairs[i] for i in heldout]


def degrade(train: list[dict], label_noise: float, max_pairs: int | None, seed: int) -> tuple[list[dict], list[str]]:
    """(training pairs, ids of the flipped ones): the first ``max_pairs`` pairs, then chosen and rejected
    swapped in round(label_noise * pairs) of them, chosen by a seeded shuffle. The flipped set only grows
    with ``label_noise`` (the first n of one shuffle), so a noise sweep nests: 0.1's flips are among 0.3's."""
    if max_pairs is not None:
        train = train[:max_pairs]
    order = list(range(len(train)))
    random.Random(f"reward_model.label_noise:{seed}").shuffle(order)  # its own stream, not the split's
    flip = set(order[:round(label_noise * len(train))])
    degraded = [{**p, "chosen": p["rejected"], "rejected": p["chosen"]} if i in flip else p
                for i, p in enumerate(train)]
    return degraded, [train[i]["id"] for i in sorted(flip)]


def reward_model_path(stage_dir: Path) -> str:
    """The reward model a finished reward_model stage points to: its own folder, or the one taken as is."""
    return reward_model_path_in(stage_dir, json.loads((stage_dir / "stats.json").read_text())["reward_model"])


def reward_model_path_in(stage_dir: Path, source: str) -> str:
    return str(stage_dir / source) if (stage_dir / source).is_dir() else source


class RewardModel(Method):
    name = "reward_model"
    description = "reward model on preference pairs (TRL RewardTrainer) or an existing one; held-out accuracy"
    config_class = RewardModelConfig
    needs = ("preferences",)
    preferences_stage: ClassVar[str] = "preferences"  # the data stage it trains on (one of ``needs``)
    uses = ("model", "seed")
    distributed = True  # a TRL trainer: --launcher accelerate runs it in N processes
    produces = "reward_model"

    def run(self, ctx: StageContext) -> dict:
        cfg: RewardModelConfig = ctx.config
        pairs = read_stage_records(ctx.input(self.preferences_stage), self.preferences_stage)
        train, heldout = split_heldout(pairs, cfg.heldout_fraction, ctx.seed)  # before degrading: clean held-out
        train, flipped = degrade(train, cfg.label_noise, cfg.max_pairs, ctx.seed)
        write_json(ctx.dir / "flipped_pairs.json", flipped)
        stats: dict = {
            "train_pairs": len(train), "heldout_pairs": len(heldout), "label_noise": cfg.label_noise,
            "flipped_pairs": len(flipped), "max_pairs": cfg.max_pairs,
        }
        if cfg.pretrained:
            stats["reward_model"] = cfg.pretrained
        else:
            stats.update(self._train(ctx, cfg, train))
            stats["reward_model"] = REWARD_MODEL_DIR  # relative: the run folder may move
        stats.update(heldout_accuracy(ctx, cfg, reward_model_path_in(ctx.dir, stats["reward_model"]), heldout))
        return stats

    def _train(self, ctx: StageContext, cfg: RewardModelConfig, train: list[dict]) -> dict:
        import trl
        from datasets import Dataset
        from transformers import AutoModelForSequenceClassification

        base = model_path(ctx.run.core.model)
        tokenizer = load_tokenizer(base, ctx.run.core.model)
        model = AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=1, dtype=torch_dtype(ctx.run.core.model.dtype, ctx.device)
        ).to(ctx.device)
        model.config.pad_token_id = tokenizer.pad_token_id
        dataset = Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in train])
        trainer = trl.RewardTrainer(
            model=model,
            args=trl_args(trl.RewardConfig, ctx, cfg, max_length=cfg.max_length),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config(cfg, task_type="SEQ_CLS"),
        )
        stats = train_and_summarize(trainer, ctx)
        save_trained_model(trainer, tokenizer, ctx, ctx.dir / REWARD_MODEL_DIR)
        return {"base_model": base, **stats}


def heldout_accuracy(ctx: StageContext, cfg: RewardModelConfig, path: str, heldout: list[dict]) -> dict:
    """Share of held-out pairs the reward model ranks as the humans did (ties count as wrong)."""
    scorer = RewardScorer(path, ctx.run.core.model, ctx.device, cfg.score_batch_size)
    with tqdm(total=2 * len(heldout), desc="score held-out pairs", unit="seq") as bar:
        chosen = scorer.score([p["prompt"] + p["chosen"] for p in heldout], bar)
        rejected = scorer.score([p["prompt"] + p["rejected"] for p in heldout], bar)
    write_jsonl(
        ctx.dir / "heldout_scores.jsonl",
        ({"id": p["id"], "chosen_reward": c, "rejected_reward": r} for p, c, r in zip(heldout, chosen, rejected)),
    )
    margins = [c - r for c, r in zip(chosen, rejected)]
    return {
        "heldout_accuracy": sum(m > 0 for m in margins) / len(margins),
        "heldout_mean_margin": sum(margins) / len(margins),
    }
