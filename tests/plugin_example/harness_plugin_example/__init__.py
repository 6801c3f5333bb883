"""An example third-party stage: the length of every held-out prompt, per category."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal

from harness.data.stages import read_stage_records
from harness.method import Method, StageContext
from harness.store import write_jsonl


@dataclass
class PromptLengthsConfig:
    unit: Literal["words", "chars"] = field(default="words", metadata={"help": "what a length counts"})


class PromptLengths(Method):
    name = "prompt-lengths"
    description = "length of each held-out prompt, per category (example third-party plugin)"
    config_class = PromptLengthsConfig
    needs = ("prompts",)
    produces = "data"

    def run(self, ctx: StageContext) -> dict:
        lengths = defaultdict(list)
        rows = []
        for record in read_stage_records(ctx.input("prompts"), "prompts"):
            text = record["prompt"][-1]["content"]
            length = len(text.split()) if ctx.config.unit == "words" else len(text)
            lengths[record.get("category", "uncategorized")].append(length)
            rows.append({"id": record["id"], "length": length})
        write_jsonl(ctx.dir / "prompt_lengths.jsonl", rows)
        return {"unit": ctx.config.unit, "mean_by_category": {c: sum(v) / len(v) for c, v in sorted(lengths.items())}}
