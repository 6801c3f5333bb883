"""DPO (Rafailov et al. 2023) with TRL's DPOTrainer, the SFT policy as both start and reference.
``dpo`` trains on human preference pairs; ``rsdpo`` and ``dpo-bw`` reuse ``train_dpo`` on sampled pairs."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.data.stages import read_stage_records
from harness.method import POLICY_DIR, Method, StageContext
from harness.models import load_causal_lm, load_tokenizer
from harness.store import write_jsonl
from harness.training import TrainingConfig, peft_config, save_trained_model, train_and_summarize, trl_args

PAIRS = "pairs.jsonl"


@dataclass
class DPOConfig(TrainingConfig):
    """DPO settings. Defaults: beta 0.1 (the RS-DPO paper's), the DPO paper's sigmoid loss, and TRL's
    learning rate 1e-6."""

    learning_rate: float = field(default=1e-6, metadata={"help": "peak learning rate (AdamW)"})
    beta: float = field(default=0.1, metadata={"help": "KL strength: how far the policy may move from the reference"})
    loss_type: str = field(default="sigmoid", metadata={"help": "TRL DPO loss: sigmoid (DPO), ipo, hinge, ..."})
    precompute_ref_log_probs: bool = field(
        default=False,
        metadata={"help": "compute reference log-probs once before training, so the reference model is not "
                  "kept in memory during training"},
    )


def train_dpo(ctx: StageContext, pairs: list[dict], cfg: DPOConfig) -> dict:
    """DPO from the SFT policy (also the reference) on ``pairs``; saves the policy and the pairs used."""
    import trl
    from datasets import Dataset

    write_jsonl(ctx.dir / PAIRS, pairs)
    sft_policy = str(ctx.input("sft") / POLICY_DIR)
    tokenizer = load_tokenizer(sft_policy, ctx.run.core.model)
    dataset = Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs])
    trainer = trl.DPOTrainer(
        # The model is loaded from the saved SFT folder, so TRL rebuilds the reference from the same
        # folder (FACTS.md); with LoRA the reference is the base with adapters disabled.
        model=load_causal_lm(sft_policy, ctx.run.core.model, ctx.device),
        args=trl_args(
            trl.DPOConfig, ctx, cfg, beta=cfg.beta, loss_type=[cfg.loss_type], max_length=cfg.max_length,
            precompute_ref_log_probs=cfg.precompute_ref_log_probs,
        ),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config(cfg),
    )
    stats = train_and_summarize(trainer, ctx)
    rewards = [e for e in trainer.state.log_history if "rewards/accuracies" in e]
    save_trained_model(trainer, tokenizer, ctx)
    return {
        "train_pairs": len(pairs),
        "reference": sft_policy,
        "last_rewards_accuracy": rewards[-1]["rewards/accuracies"] if rewards else None,
        "last_rewards_margin": rewards[-1].get("rewards/margins") if rewards else None,
        **stats,
    }


class DPO(Method):
    name = "dpo"
    description = "DPO on the human preference pairs, reference = SFT policy"
    config_class = DPOConfig
    needs = ("sft", "preferences")
    uses = ("model", "seed")
    distributed = True  # a TRL trainer: --launcher accelerate runs it in N processes

    def run(self, ctx: StageContext) -> dict:
        return train_dpo(ctx, read_stage_records(ctx.input("preferences"), "preferences"), ctx.config)
