"""Supervised fine-tuning of the base model on demonstrations: the shared first stage and the paper's
first result row. TRL's SFTTrainer, loss on the assistant's reply only (prompt-completion format)."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.data.stages import read_stage_records
from harness.method import Method, StageContext
from harness.models import load_causal_lm, load_tokenizer, model_path
from harness.training import TrainingConfig, peft_config, save_trained_policy, train_and_summarize, trl_args


@dataclass
class SFTConfig(TrainingConfig):
    """SFT settings. Defaults: common full fine-tuning choices for Llama-2-7B on chat data
    (lr 2e-5, cosine, 1 epoch); profiles shrink them for CPU."""

    packing: bool = field(default=False, metadata={"help": "pack several records into one sequence"})


class SFT(Method):
    name = "sft"
    description = "supervised fine-tuning on demonstrations (TRL SFTTrainer); the SFT policy row"
    config_class = SFTConfig
    needs = ("demonstrations",)
    uses = ("model", "seed")

    def run(self, ctx: StageContext) -> dict:
        import trl
        from datasets import Dataset

        cfg: SFTConfig = ctx.config
        base = model_path(ctx.run.core.model)
        tokenizer = load_tokenizer(base, ctx.run.core.model)
        demonstrations = read_stage_records(ctx.input("demonstrations"), "demonstrations")
        dataset = Dataset.from_list(
            [{"prompt": d["messages"][:-1], "completion": d["messages"][-1:]} for d in demonstrations]
        )
        trainer = trl.SFTTrainer(
            model=load_causal_lm(base, ctx.run.core.model, ctx.device),
            args=trl_args(
                trl.SFTConfig, ctx, cfg, max_length=cfg.max_length, packing=cfg.packing, completion_only_loss=True
            ),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config(cfg),
        )
        stats = train_and_summarize(trainer, ctx)
        save_trained_policy(trainer, tokenizer, ctx)
        return {"base_model": base, "train_records": len(dataset), **stats}
