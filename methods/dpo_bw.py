"""DPO-BW, the RS-DPO paper's ablation: one pair per prompt, its best sample against its worst, then DPO."""

from __future__ import annotations

from harness.method import Method, StageContext
from harness.store import write_json
from methods.dpo import DPOConfig, train_dpo
from methods.pair_selection import best_vs_worst_pairs, pair_statistics
from methods.sampled_pairs import load_reward_matrix, pairs_from_selection


class DPOBestVsWorst(Method):
    name = "dpo-bw"
    description = "DPO on the best vs the worst of the k samples of each prompt (the paper's ablation)"
    config_class = DPOConfig
    needs = ("sft", "scored_samples")
    uses = ("model", "seed")

    def run(self, ctx: StageContext) -> dict:
        prompt_ids, rewards, lookup = load_reward_matrix(ctx.input("scored_samples"))
        selection = best_vs_worst_pairs(rewards)
        statistics = pair_statistics(selection)
        write_json(ctx.dir / "pair_stats.json", statistics)
        if statistics["pairs_kept"] == 0:
            raise ValueError(f"dpo-bw: every one of the {len(prompt_ids)} prompts has all-equal sample rewards")
        pairs = pairs_from_selection(selection, prompt_ids, lookup)
        return {"pair_selection": statistics, **train_dpo(ctx, pairs, ctx.config)}
