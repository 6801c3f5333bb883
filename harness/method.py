"""The interface every stage plugin implements: shared stages (data, sft, reward_model) and methods alike.

A plugin names the stages it reads (``needs``), the core config sections that shape its output
(``uses``), and its own config dataclass; ``run`` writes its artifacts into ``ctx.dir`` and returns
the stats that land in ``stats.json`` and ``results.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from harness.config import RunConfig

POLICY_DIR = "policy"  # every policy-producing stage saves a Hugging Face folder under this name


@dataclass
class NoConfig:
    """This stage has no settings of its own."""


@dataclass
class StageContext:
    """What a stage gets to run: its folder, its config, the folders of the stages it needs."""

    name: str
    key: str
    dir: Path
    config: Any
    run: RunConfig
    inputs: dict[str, Path]
    device: str
    resumed: bool  # the folder holds an unfinished earlier attempt (checkpoints may be there)

    @property
    def seed(self) -> int:
        return self.run.core.seed

    def input(self, name: str) -> Path:
        if name not in self.inputs:
            raise KeyError(f"stage '{self.name}' did not declare '{name}' in needs; it has {sorted(self.inputs)}")
        return self.inputs[name]

    @property
    def policy_dir(self) -> Path:
        return self.dir / POLICY_DIR


class StageError(RuntimeError):
    """A stage cannot finish for a reason its one-line message explains (an unreachable judge...); the
    command line prints it without a traceback, and the stage, left without DONE, runs again next time."""


class Method:
    """Base class of stage plugins. Subclasses set the class attributes and implement ``run``."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    config_class: ClassVar[type] = NoConfig
    needs: ClassVar[tuple[str, ...]] = ()
    uses: ClassVar[tuple[str, ...]] = ()  # dotted core sections, e.g. ("model", "data.demonstrations")
    produces: ClassVar[str] = "policy"  # "policy" stages are rows of the results table
    # An evaluation runs once per policy of the run, as "<name>@<policy>", reading it as input "policy".
    evaluates_policies: ClassVar[bool] = False
    # Trains through a TRL/accelerate trainer, so ``harness run --launcher accelerate`` may run it in N
    # processes (DDP or DeepSpeed); stages left False always run once, in the harness process.
    distributed: ClassVar[bool] = False

    def run(self, ctx: StageContext) -> dict:
        raise NotImplementedError
