"""DPO-BW, the RS-DPO paper's ablation: one pair per prompt, its best sample against its worst, then DPO."""

from __future__ import annotations

from harness.method import Method, StageContext
from methods.dpo import DPOConfig
from methods.pair_selection import best_vs_worst_pairs
from methods.sampled_pairs import dpo_on_selected_pairs


class DPOBestVsWorst(Method):
    name = "dpo-bw"
    description = "DPO on the best vs the worst of the k samples of each prompt (the paper's ablation)"
    config_class = DPOConfig
    needs = ("sft", "scored_samples")
    uses = ("model", "seed")

    def run(self, ctx: StageContext) -> dict:
        return dpo_on_selected_pairs(
            ctx, best_vs_worst_pairs, ctx.config,
            "dpo-bw: every one of the {prompts} prompts has all-equal sample rewards",
        )
