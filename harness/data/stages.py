"""The data stages: each reads one source (``data.<kind>`` in the config), validates every record and
writes it as plain JSONL, so the stages after it read one format and a bad file fails here, early."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import ClassVar

from tqdm.auto import tqdm

from harness.data.readers import load_records
from harness.method import Method, StageContext
from harness.store import read_jsonl, write_jsonl


class DataStage(Method):
    record_kind: ClassVar[str]
    produces = "data"

    def run(self, ctx: StageContext) -> dict:
        source = ctx.run.section(f"data.{self.name}")
        records = load_records(
            self.record_kind, source.path, format=source.format, split=source.split,
            subset=source.subset, limit=source.limit,
        )
        count = write_jsonl(records_file(ctx.dir, self.name), tqdm(records, desc=f"write {self.name}", unit="rec"))
        categories = Counter(record.get("category", "uncategorized") for record in records)
        return {
            "records": count,
            "source": source.path,
            "left_out": records.skipped,  # reason -> count, e.g. HH-RLHF pairs whose transcripts are identical
            "categories": dict(sorted(categories.items())),
        }


def records_file(stage_dir: Path, name: str) -> Path:
    return Path(stage_dir) / f"{name}.jsonl"


def read_stage_records(stage_dir: Path, name: str) -> list[dict]:
    """The records a data stage wrote (``name`` is the stage: demonstrations, preferences or prompts)."""
    return read_jsonl(records_file(stage_dir, name))


class Demonstrations(DataStage):
    name = "demonstrations"
    description = "conversations to imitate (SFT), validated into demonstrations.jsonl"
    record_kind = "demonstration"
    uses = ("data.demonstrations",)


class Preferences(DataStage):
    name = "preferences"
    description = "human preference pairs (reward model, DPO), validated into preferences.jsonl"
    record_kind = "preference"
    uses = ("data.preferences",)


class Prompts(DataStage):
    name = "prompts"
    description = "prompts the SFT policy is sampled on (rs, rsdpo), validated into prompts.jsonl"
    record_kind = "prompt"
    uses = ("data.prompts",)


class HeldoutPrompts(DataStage):
    name = "heldout_prompts"
    description = "held-out prompts for evaluation, validated into heldout_prompts.jsonl"
    record_kind = "prompt"
    uses = ("data.heldout_prompts",)


class HarmlessPreferences(DataStage):
    name = "harmless_preferences"
    description = "harmlessness preference pairs (HH-RLHF harmless-base) for the harmless reward model"
    record_kind = "preference"
    uses = ("data.harmless_preferences",)


class HarmlessPrompts(DataStage):
    name = "harmless_prompts"
    description = "prompts the harmlessness evaluations answer (HH-RLHF harmless-base test), harmless_prompts.jsonl"
    record_kind = "prompt"
    uses = ("data.harmless_prompts",)
