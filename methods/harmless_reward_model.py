"""A harmless reward model: the reward model of ``methods/reward_model.py`` trained on harmlessness pairs
(``data.harmless_preferences``, HH-RLHF harmless-base by default), so it stands beside the helpfulness one
instead of replacing it. The ``harmless_reward`` evaluation scores policies with it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from methods.reward_model import RewardModel, RewardModelConfig


@dataclass
class HarmlessRewardModelConfig(RewardModelConfig):
    """As ``reward_model``'s settings (one epoch at lr 1e-5, 10% of the pairs held out), for the harmless one."""

    section: ClassVar[str] = "harmless_reward_model"


class HarmlessRewardModel(RewardModel):
    name = "harmless_reward_model"
    description = "reward model on harmlessness pairs (HH-RLHF harmless-base), separate from the helpful one"
    config_class = HarmlessRewardModelConfig
    needs = ("harmless_preferences",)
    preferences_stage = "harmless_preferences"
