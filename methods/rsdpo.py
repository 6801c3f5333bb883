"""RS-DPO (Khaki et al. 2024, Algorithm 1): from the k scored samples of each prompt, every ordered pair
(y_j, y_l) with sigmoid((r_j - r_l) / tau) > eta becomes (chosen = y_j, rejected = y_l); then DPO from the
SFT policy on those pairs. ``selection`` swaps in another registered pair selector (best_vs_worst,
mean_minus_2std, ...) so strategies compare in one sweep over the same samples."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.method import Method, StageContext
from methods.dpo import DPOConfig
from methods.sampled_pairs import check_first_k, check_pair_selector, dpo_on_selected_pairs, first_k_field


@dataclass
class RSDPOConfig(DPOConfig):
    """RS-DPO settings. Defaults: the paper's selection (threshold), tau=1.0, eta=0.85 (and beta=0.1 from
    DPO), on all samples."""

    selection: str = field(
        default="threshold",
        metadata={"help": "pair selector: threshold (the paper's: sigmoid gap > eta), best_vs_worst, "
                  "mean_minus_2std (best vs nearest mean - 2 std, arXiv 2502.16825), or any plugin in the "
                  "entry-point group harness.pair_selectors"},
    )
    tau: float = field(default=1.0, metadata={"help": "temperature of the reward gap in the selection sigmoid"})
    eta: float = field(default=0.85, metadata={"help": "keep a pair when sigmoid((r_j - r_l) / tau) > eta"})
    k: int | None = first_k_field()

    def __post_init__(self):
        check_pair_selector(self.selection, "rsdpo.selection")
        check_first_k(self.k, "rsdpo.k")


class RSDPO(Method):
    name = "rsdpo"
    description = "RS-DPO: pairs of SFT samples whose reward gap passes eta, then DPO (the paper's method)"
    config_class = RSDPOConfig
    needs = ("sft", "scored_samples")
    uses = ("model", "seed")
    distributed = True  # a TRL trainer: --launcher accelerate runs it in N processes

    def run(self, ctx: StageContext) -> dict:
        cfg: RSDPOConfig = ctx.config
        if cfg.selection == "threshold":
            when_none = (f"rsdpo: no pair of samples has sigmoid(gap / tau) > eta (tau={cfg.tau}, eta={cfg.eta}) "
                         "in {prompts} prompts of {k} samples; lower rsdpo.eta, raise rsdpo.k or samples.k, "
                         "or check the reward model")
        else:
            when_none = (f"rsdpo: selection '{cfg.selection}' kept no pair in {{prompts}} prompts of {{k}} "
                         "samples (all of each prompt's rewards equal?); check the reward model")
        return dpo_on_selected_pairs(ctx, self.name, cfg.selection, cfg, when_none)
