"""What every TRL-trained stage shares: its optimisation settings, LoRA, checkpoints and resume.

Methods subclass ``TrainingConfig`` for their own config and build TRL's config with ``trl_args``, so
precision, checkpointing and logging are decided here once (FACTS.md: bf16 is ~9x slower on this CPU).
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.method import StageContext
from harness.models import save_pretrained, torch_dtype
from harness.store import write_jsonl

CHECKPOINTS = "checkpoints"


@dataclass
class LoRASettings:
    """Train LoRA adapters instead of all weights (peft); the saved policy has them merged."""

    lora: bool = field(default=False, metadata={"help": "train LoRA adapters (peft) instead of all weights"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA branch"})
    lora_target_modules: str = field(default="all-linear", metadata={"help": "peft target_modules"})


@dataclass
class TrainingConfig(LoRASettings):
    """Optimisation settings shared by the stages trained with TRL trainers."""

    learning_rate: float = field(default=2e-5, metadata={"help": "peak learning rate (AdamW)"})
    num_train_epochs: float = field(default=1.0, metadata={"help": "passes over the training records"})
    max_steps: int = field(default=-1, metadata={"help": "stop after this many optimizer steps (-1: epochs decide)"})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "records per device per forward pass"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "forward passes per optimizer step"})
    max_length: int = field(default=1024, metadata={"help": "longest tokenized record; longer ones are truncated"})
    warmup: float = field(
        default=0.03, metadata={"help": "learning-rate warm-up: a share of all steps if below 1, else a step count"}
    )
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "transformers learning-rate schedule"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "trade compute for activation memory"})
    save_steps: int = field(default=50, metadata={"help": "checkpoint every N steps, so a killed stage resumes"})
    logging_steps: int = field(default=1, metadata={"help": "log training metrics every N steps"})


def trl_args(config_cls: type, ctx: StageContext, cfg: TrainingConfig, **method_args: Any):
    """A TRL config (SFTConfig, DPOConfig, RewardConfig...) with the shared settings filled in."""
    dtype = torch_dtype(ctx.run.core.model.dtype, ctx.device)
    return config_cls(
        output_dir=str(ctx.dir / CHECKPOINTS),
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        warmup_steps=cfg.warmup,
        lr_scheduler_type=cfg.lr_scheduler_type,
        gradient_checkpointing=cfg.gradient_checkpointing,
        bf16=str(dtype) == "torch.bfloat16",
        use_cpu=ctx.device == "cpu",
        seed=ctx.seed,
        data_seed=ctx.seed,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=1,
        logging_steps=cfg.logging_steps,
        report_to="none",
        dataloader_num_workers=0,
        **method_args,
    )


def peft_config(cfg: LoRASettings, task_type: str = "CAUSAL_LM"):
    if not cfg.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_target_modules,
        task_type=task_type,
    )


def last_checkpoint(ctx: StageContext) -> str | None:
    """The newest complete checkpoint an earlier, killed attempt of this stage left, to resume from.

    A kill during a save leaves a checkpoint folder without ``trainer_state.json`` (written last): skip it.
    """
    folder = ctx.dir / CHECKPOINTS
    if not folder.is_dir():
        return None
    steps = []
    for child in folder.glob("checkpoint-*"):
        suffix = child.name.removeprefix("checkpoint-")
        if suffix.isdigit() and (child / "trainer_state.json").exists():
            steps.append((int(suffix), child))
    return str(max(steps)[1]) if steps else None


def train_and_summarize(trainer, ctx: StageContext) -> dict:
    """Train (resuming when a checkpoint exists) and return the stats every trained stage reports."""
    resume = last_checkpoint(ctx)
    output = trainer.train(resume_from_checkpoint=resume)
    history = [entry for entry in trainer.state.log_history if "loss" in entry]
    stats = {
        "global_step": trainer.state.global_step,
        "train_runtime_s": output.metrics.get("train_runtime"),
        "train_samples_per_second": output.metrics.get("train_samples_per_second"),
        "train_loss": output.metrics.get("train_loss"),
        "first_loss": history[0]["loss"] if history else None,
        "last_loss": history[-1]["loss"] if history else None,
        "resumed_from": Path(resume).name if resume else None,
    }
    write_jsonl(ctx.dir / "train_log.jsonl", trainer.state.log_history)
    return stats


@contextmanager
def gathered_parameters(model):
    """Every weight of ``model`` whole for the duration of the block; yields whether it had to gather.

    DeepSpeed ZeRO-3 leaves each rank a shard of every parameter (marked by ``ds_id``): gathering them is
    a collective call, so every rank enters the block, and the gathered copies are dropped on exit. The
    peak is one full 16/32-bit copy of the model per rank (14 GB for a 7B model in bf16). Under DDP,
    ZeRO-2 or one process the weights are already whole: nothing to do."""
    sharded = [p for p in model.parameters() if hasattr(p, "ds_id")]
    if not sharded:
        yield False
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(sharded, modifier_rank=None):
        yield True


def save_merged(model, tokenizer, folder: Path) -> None:
    """Save a trained model as a plain HF folder, LoRA adapters merged.

    Called on every rank of a launched stage: under ZeRO-3 the weights are gathered first (collectively),
    and ``harness._stage_worker`` lets only the main process write the folder."""
    with gathered_parameters(model) as was_sharded:
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()  # merges into the gathered copies, which are dropped on exit
        save_pretrained(model, tokenizer, folder)
    if was_sharded:
        # Training is over: a model this process loads from now on (the reward model's held-out check) is
        # for inference and must load whole, not as the zero.Init shards transformers makes under ZeRO-3.
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()


def save_trained_model(trainer, tokenizer, ctx: StageContext, folder: Path | None = None) -> Path:
    """Save the trainer's model (``save_merged``) to ``folder`` (default: the policy), then drop the checkpoints."""
    folder = folder or ctx.policy_dir
    save_merged(trainer.model, tokenizer, folder)
    shutil.rmtree(ctx.dir / CHECKPOINTS, ignore_errors=True)
    return folder
