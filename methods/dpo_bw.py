"""DPO-BW, the RS-DPO paper's ablation: one pair per prompt, its best sample against its worst, then DPO.
The pairs come from the registered pair selector ``best_vs_worst`` (also ``rsdpo.selection=best_vs_worst``)."""

from __future__ import annotations

from dataclasses import dataclass

from harness.method import Method, StageContext
from methods.dpo import DPOConfig
from methods.sampled_pairs import check_first_k, dpo_on_selected_pairs, first_k_field


@dataclass
class DPOBestVsWorstConfig(DPOConfig):
    """DPO-BW settings: DPO's (beta 0.1, the paper's), on the first k samples of each prompt (default all)."""

    k: int | None = first_k_field()

    def __post_init__(self):
        check_first_k(self.k, "dpo-bw.k")


class DPOBestVsWorst(Method):
    name = "dpo-bw"
    description = "DPO on the best vs the worst of the k samples of each prompt (the paper's ablation)"
    config_class = DPOBestVsWorstConfig
    needs = ("sft", "scored_samples")
    uses = ("model", "seed")
    distributed = True  # a TRL trainer: --launcher accelerate runs it in N processes

    def run(self, ctx: StageContext) -> dict:
        return dpo_on_selected_pairs(
            ctx, self.name, "best_vs_worst", ctx.config,
            "dpo-bw: every one of the {prompts} prompts has all-equal rewards over its {k} samples",
        )
