"""AlpacaEval (Li et al. 2023): 805 instructions; an LLM judge compares each policy's output with a
reference model's, and the win rate counts how often the policy's is preferred (a draw counts half).

Two stages per policy in alpaca_eval's own formats: ``alpaca_eval_answers@<policy>`` writes
``model_outputs.json`` (and the same records as ``model_outputs.jsonl``); ``alpaca_eval@<policy>`` writes
``annotations.json`` (output_1 = reference, output_2 = policy, preference 1..2), scored by the same code
that reproduces the published leaderboards (``evals.published``). The two outputs are shown to the judge
in a random order per instruction, so a judge's position bias cannot favour either side.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evals.judges import JudgeConfig, build_judge, judged_by
from evals.length_control import length_controlled_win_rate
from evals.mt_bench import policy_name
from evals.published import ALPACA_DRAW, win_rate_summary
from harness.data.records import DataError
from harness.engines import SamplingConfig, load_policy_engine
from harness.method import Method, StageContext
from harness.store import read_jsonl, write_json, write_jsonl

OUTPUTS = "model_outputs.json"
OUTPUTS_JSONL = "model_outputs.jsonl"
ANNOTATIONS = "annotations.json"
HUB_EVAL_SET = "tatsu-lab/alpaca_eval"
PROMPT_VERSION = "rsdpo-harness pairwise-v1 (randomised order, 'Output (a)' / 'Output (b)' / 'Tie')"
SOURCES = ("helpful_base", "koala", "oasst", "selfinstruct", "vicuna")


# ------------------------------------------------------------------------------------------- eval set


def _read_json_records(path: Path) -> list:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        text = fh.read()
    name = path.name.removesuffix(".gz")
    try:
        if name.endswith(".jsonl"):
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(path, None, None, f"invalid JSON ({err.msg}, line {err.lineno})") from None


def load_eval_set(source: str, hub_file: str) -> list[dict]:
    """The instructions with the reference outputs: a local .json/.jsonl(.gz) file, or a hub dataset id
    whose ``hub_file`` is downloaded (tatsu-lab/alpaca_eval: alpaca_eval_gpt4_baseline.json, alpaca_eval.json)."""
    path = Path(source).expanduser()
    if not path.exists():
        if source.startswith((".", "/", "~")) or Path(source).suffix:
            raise DataError(source, None, None, "no such file (alpaca_eval_answers.eval_set)")
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(source, hub_file, repo_type="dataset"))
    records = _read_json_records(path)
    if not isinstance(records, list) or not records:
        raise DataError(path, None, None, "expected a non-empty JSON list of {instruction, output, ...} records")
    for index, record in enumerate(records):
        for key in ("instruction", "output"):
            if not isinstance(record, dict) or not isinstance(record.get(key), str):
                raise DataError(path, index, key, f"expected a string, found {type(record.get(key)).__name__ if isinstance(record, dict) else type(record).__name__}")
    return records


# --------------------------------------------------------------------------------------------- answers


@dataclass
class AlpacaEvalAnswersConfig(SamplingConfig):
    """Single-turn answers to the AlpacaEval instructions."""

    max_new_tokens: int = field(default=2048, metadata={"help": "longest answer, in tokens"})
    eval_set: str = field(
        default=HUB_EVAL_SET,
        metadata={"help": "instructions + reference outputs: a local .json/.jsonl(.gz) file or a hub dataset id"},
    )
    hub_file: str = field(
        default="alpaca_eval_gpt4_baseline.json",
        metadata={"help": "file of the hub dataset holding the reference (AlpacaEval 2: gpt4_1106_preview)"},
    )
    per_dataset: int | None = field(
        default=None,
        metadata={"help": "answer only the first N instructions of each source (helpful_base, koala, oasst, "
                  "selfinstruct, vicuna); None: all 805"},
    )


def select_instructions(cfg: AlpacaEvalAnswersConfig) -> tuple[list[dict], str]:
    records = [{**r, "index": i} for i, r in enumerate(load_eval_set(cfg.eval_set, cfg.hub_file))]
    if cfg.per_dataset is None:
        return records, f"all {len(records)} instructions of {cfg.eval_set}"
    seen: dict[str, int] = defaultdict(int)
    kept = []
    for record in records:
        source = record.get("dataset", "unknown")
        if seen[source] < cfg.per_dataset:
            kept.append(record)
            seen[source] += 1
    return kept, f"first {cfg.per_dataset} per source of {cfg.eval_set}: {len(kept)} instructions"


class AlpacaEvalAnswers(Method):
    name = "alpaca_eval_answers"
    description = "AlpacaEval answers of a policy, in alpaca_eval's model_outputs format"
    config_class = AlpacaEvalAnswersConfig
    uses = ("model", "seed")
    produces = "answers"
    evaluates_policies = True

    def run(self, ctx: StageContext) -> dict:
        cfg: AlpacaEvalAnswersConfig = ctx.config
        records, described = select_instructions(cfg)
        engine = load_policy_engine(ctx)
        groups = engine.generate([[{"role": "user", "content": r["instruction"]}] for r in records], 1, cfg,
                                 ctx.seed, desc="alpaca_eval answers")
        generator = policy_name(ctx)
        outputs = [
            {"index": r["index"], "instruction": r["instruction"], "output": c.text, "generator": generator,
             "dataset": r.get("dataset", "unknown"), "reference_output": r["output"],
             "reference_generator": r.get("generator", "reference")}
            for r, (c,) in zip(records, groups)
        ]
        upstream = [{k: o[k] for k in ("instruction", "output", "generator", "dataset")} for o in outputs]
        write_json(ctx.dir / OUTPUTS, upstream)
        write_jsonl(ctx.dir / OUTPUTS_JSONL, outputs)  # with the reference beside each output, for the judge
        tokens = [c.token_count for (c,) in groups]
        return {
            "instructions": len(records),
            "subset": described,
            "generated_tokens": int(sum(tokens)),
            "mean_answer_tokens": float(np.mean(tokens)),
            "cut_at_max_new_tokens": int(sum(c.finish_reason == "length" for (c,) in groups)),
        }


# ------------------------------------------------------------------------------------------- judgments


@dataclass
class AlpacaEvalConfig:
    """Pairwise judging against the reference outputs."""

    judge: JudgeConfig = field(default_factory=JudgeConfig)
    instruction_difficulty: str | None = field(
        default=None,
        metadata={"help": "per-instruction difficulty for the length-controlled win rate: a CSV indexed by the "
                  "instruction's position in the eval set, or 'hub' (tatsu-lab/alpaca_eval's "
                  "instruction_difficulty.csv); None: the LC win rate is reported as not available"},
    )


def load_difficulty(source: str) -> dict[int, float]:
    import pandas as pd

    path = source
    if source == "hub":
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(HUB_EVAL_SET, "instruction_difficulty.csv", repo_type="dataset")
    if not Path(path).exists():
        raise DataError(path, None, None, "no such file (alpaca_eval.instruction_difficulty)")
    column = pd.read_csv(path, index_col=0).squeeze("columns")
    return {int(i): float(v) for i, v in column.items()}


SYSTEM_PROMPT = "You are an impartial judge. You compare two AI assistants' outputs for the same instruction."
USER_TEMPLATE = """Which output follows the instruction better? Judge helpfulness, correctness and level of detail. \
Do not let the order in which the outputs are shown, or their length, sway you.

## Instruction
{instruction}

## Output (a)
{output_a}

## Output (b)
{output_b}

Reply with exactly one of: "Output (a)", "Output (b)" or "Tie"."""

REPLY_PREFIX = "Output ("  # with judge.reply_prefix the judge's reply starts here: it can only pick a side
CHOICE = re.compile(r"output\s*\(?\s*([ab])\s*\)?|\b(tie)\b", re.IGNORECASE)


def model_shown_first(instruction: str, seed: int) -> bool:
    """Which side the policy's output is shown on: random per instruction, fixed by (seed, instruction)."""
    return hashlib.sha256(f"{seed}:{instruction}".encode()).digest()[0] % 2 == 1


def pairwise_messages(instruction: str, reference: str, output: str, model_first: bool) -> list[dict]:
    a, b = (output, reference) if model_first else (reference, output)
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": USER_TEMPLATE.format(instruction=instruction, output_a=a, output_b=b)}]


def parse_preference(reply: str, model_first: bool) -> float | None:
    """alpaca_eval's scale: 1 = reference preferred, 2 = policy preferred, 1.5 = tie; None when unparseable."""
    match = CHOICE.search(reply or "")
    if not match:
        return None
    if match.group(2):
        return ALPACA_DRAW
    model_won = (match.group(1).lower() == "a") == model_first
    return 2.0 if model_won else 1.0


class AlpacaEval(Method):
    name = "alpaca_eval"
    description = "AlpacaEval: an LLM judge compares each policy's outputs with reference outputs (win rate)"
    config_class = AlpacaEvalConfig
    needs = ("alpaca_eval_answers",)
    uses = ("seed",)
    produces = "evaluation"
    evaluates_policies = True

    def run(self, ctx: StageContext) -> dict:
        cfg: AlpacaEvalConfig = ctx.config
        outputs = list(read_jsonl(ctx.input("alpaca_eval_answers") / OUTPUTS_JSONL))
        order = [model_shown_first(o["instruction"], ctx.seed) for o in outputs]
        judge = build_judge(cfg.judge)
        requests = [pairwise_messages(o["instruction"], o["reference_output"], o["output"], first)
                    for o, first in zip(outputs, order)]
        replies, usage = judge.complete_all(requests, desc=f"judge {ctx.name}", prefix=REPLY_PREFIX)
        annotations = []
        for o, first, repeats in zip(outputs, order, replies):
            texts = [r.text for r in repeats if r.text is not None]
            prefs = [p for t in texts if (p := parse_preference(t, first)) is not None]
            annotations.append({
                "index": o["index"], "instruction": o["instruction"], "output_1": o["reference_output"],
                "generator_1": o["reference_generator"], "output_2": o["output"], "generator_2": o["generator"],
                "dataset": o["dataset"], "annotator": judge.label,
                "preference": float(statistics.median(prefs)) if prefs else None,
                "policy_shown_first": first, "raw_completion": texts[0] if texts else None,
                "failed_calls": len(repeats) - len(texts),
            })
        write_json(ctx.dir / ANNOTATIONS, annotations)
        judge.check_failures(usage, f"AlpacaEval judging of {policy_name(ctx)}")
        subset = json.loads((ctx.input("alpaca_eval_answers") / "stats.json").read_text())["subset"]
        difficulty = load_difficulty(cfg.instruction_difficulty) if cfg.instruction_difficulty else None
        return {**self.summarize(annotations, judge.describe(), usage.summary(cfg.judge), difficulty), "subset": subset}

    @staticmethod
    def length_controlled(annotations: list[dict], difficulty: dict[int, float] | None) -> dict:
        if difficulty is None:
            return {"length_controlled_win_rate": None, "length_controlled": "not available: alpaca_eval's "
                    "length-controlled GLM needs each instruction's difficulty (set alpaca_eval.instruction_difficulty)"}
        missing = [a["index"] for a in annotations if a["index"] not in difficulty]
        if missing:
            raise DataError("alpaca_eval.instruction_difficulty", missing[0], "instruction_difficulty",
                            "no difficulty for this instruction index")
        try:
            fit = length_controlled_win_rate(
                [a["preference"] for a in annotations], [len(a["output_1"]) for a in annotations],
                [len(a["output_2"]) for a in annotations], [difficulty[a["index"]] for a in annotations])
        except ValueError as err:
            return {"length_controlled_win_rate": None, "length_controlled": f"not available: {err}"}
        return {"length_controlled_win_rate": fit["length_controlled_win_rate"], "glm_weights": fit["glm_weights"],
                "length_controlled": "alpaca_eval length_controlled_v1 formula, fitted here by maximum likelihood "
                "(without its regularisation toward the gamed baselines)"}

    @staticmethod
    def summarize(annotations: list[dict], judge: dict, usage: dict, difficulty: dict[int, float] | None = None) -> dict:
        by_source: dict[str, list] = defaultdict(list)
        for a in annotations:
            by_source[a["dataset"]].append(a["preference"])
        unparsed = sum(a["preference"] is None and not a["failed_calls"] for a in annotations)
        return {
            **win_rate_summary([a["preference"] for a in annotations]),
            **AlpacaEval.length_controlled(annotations, difficulty),
            "per_dataset": {source: win_rate_summary(prefs) for source, prefs in sorted(by_source.items())},
            "instructions": len(annotations),
            "parse_failures": unparsed,
            "failed_calls": int(sum(a["failed_calls"] for a in annotations)),
            "avg_length": float(np.mean([len(a["output_2"]) for a in annotations])) if annotations else None,
            "reference": annotations[0]["generator_1"] if annotations else None,
            **judged_by(judge, usage, PROMPT_VERSION),
        }

    @staticmethod
    def per_prompt_scores(stage_dir: Path) -> dict[str, float]:
        """Per instruction: 1 policy won, 0.5 tie, 0 reference won (unjudged left out)."""
        annotations = json.loads((Path(stage_dir) / ANNOTATIONS).read_text(encoding="utf-8"))
        return {hashlib.sha256(a["instruction"].encode()).hexdigest()[:16]: a["preference"] - 1
                for a in annotations if a["preference"] is not None}
