"""Supervised fine-tuning of the base model on demonstrations: the shared first stage and the paper's
first result row. TRL's SFTTrainer, loss on the assistant's reply only (prompt-completion format)."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.data.stages import read_stage_records
from harness.method import Method, StageContext
from harness.models import load_causal_lm, load_tokenizer, model_path
from harness.training import TrainingConfig, peft_config, save_trained_model, train_and_summarize, trl_args


@dataclass
class SFTConfig(TrainingConfig):
    """SFT settings. Defaults: common full fine-tuning choices for Llama-2-7B on chat data
    (lr 2e-5, cosine, 1 epoch); profiles shrink them for CPU."""

    packing: bool = field(default=False, metadata={"help": "pack several records into one sequence"})


def fine_tune(ctx: StageContext, start_from: str, conversations: list[list[dict]], cfg: SFTConfig) -> dict:
    """SFT of ``start_from`` on conversations (the last message is the reply to learn); saves ctx.policy_dir."""
    import trl
    from datasets import Dataset

    tokenizer = load_tokenizer(start_from, ctx.run.core.model)
    dataset = Dataset.from_list([{"prompt": c[:-1], "completion": c[-1:]} for c in conversations])
    trainer = trl.SFTTrainer(
        model=load_causal_lm(start_from, ctx.run.core.model, ctx.device),
        args=trl_args(trl.SFTConfig, ctx, cfg, max_length=cfg.max_length, packing=cfg.packing,
                      completion_only_loss=True),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config(cfg),
    )
    stats = train_and_summarize(trainer, ctx)
    save_trained_model(trainer, tokenizer, ctx)
    return {"start_from": start_from, "train_records": len(dataset), **stats}


class SFT(Method):
    name = "sft"
    description = "supervised fine-tuning on demonstrations (TRL SFTTrainer); the SFT policy row"
    config_class = SFTConfig
    needs = ("demonstrations",)
    uses = ("model", "seed")
    distributed = True  # a TRL trainer: --launcher accelerate runs it in N processes

    def run(self, ctx: StageContext) -> dict:
        demonstrations = read_stage_records(ctx.input("demonstrations"), "demonstrations")
        return fine_tune(ctx, model_path(ctx.run.core.model), [d["messages"] for d in demonstrations], ctx.config)
