"""RS-DPO (Khaki et al. 2024, Algorithm 1): from the k scored samples of each prompt, every ordered pair
(y_j, y_l) with sigmoid((r_j - r_l) / tau) > eta becomes (chosen = y_j, rejected = y_l); then DPO from the
SFT policy on those pairs."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.method import Method, StageContext
from methods.dpo import DPOConfig
from methods.pair_selection import rsdpo_pairs
from methods.sampled_pairs import dpo_on_selected_pairs


@dataclass
class RSDPOConfig(DPOConfig):
    """RS-DPO settings. Defaults: the paper's tau=1.0, eta=0.85 (and beta=0.1 from DPO)."""

    tau: float = field(default=1.0, metadata={"help": "temperature of the reward gap in the selection sigmoid"})
    eta: float = field(default=0.85, metadata={"help": "keep a pair when sigmoid((r_j - r_l) / tau) > eta"})


class RSDPO(Method):
    name = "rsdpo"
    description = "RS-DPO: pairs of SFT samples whose reward gap passes eta, then DPO (the paper's method)"
    config_class = RSDPOConfig
    needs = ("sft", "scored_samples")
    uses = ("model", "seed")

    def run(self, ctx: StageContext) -> dict:
        cfg: RSDPOConfig = ctx.config
        return dpo_on_selected_pairs(
            ctx, lambda rewards: rsdpo_pairs(rewards, tau=cfg.tau, eta=cfg.eta), cfg,
            f"rsdpo: no pair of samples has sigmoid(gap / tau) > eta (tau={cfg.tau}, eta={cfg.eta}) in "
            "{prompts} prompts; lower rsdpo.eta, raise samples.k, or check the reward model",
        )
