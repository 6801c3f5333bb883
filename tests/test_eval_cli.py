"""`harness eval import-mtbench` / `import-alpaca`: the exact commands other tools depend on."""

from __future__ import annotations

import json

import pytest

from conftest import harness


def test_import_mtbench_prints_each_models_means_as_json(shared_data, tmp_path):
    judgments = shared_data / "mt_bench" / "medusa" / "model_judgment" / "gpt-4_single.jsonl.gz"
    summary = json.loads(harness("eval", "import-mtbench", str(judgments), "--json", cwd=tmp_path).stdout)
    overall = {model: row["overall"] for model, row in summary["models"].items()}
    assert overall["vicuna-7b-v1.3"] == pytest.approx(6.103125, abs=1e-9)
    assert overall["vicuna-7b-v1.3-greedy"] == pytest.approx(5.878125, abs=1e-9)
    assert sorted(overall.values())[1] == pytest.approx(5.9875, abs=1e-9)  # the Medusa model


def test_import_alpaca_reproduces_the_leaderboard(shared_data, tmp_path):
    annotations = shared_data / "alpaca_eval" / "results" / "llama-2-7b-chat-hf" / "alpaca_eval_gpt4" / "annotations.json.gz"
    summary = json.loads(harness("eval", "import-alpaca", str(annotations), "--json", cwd=tmp_path).stdout)
    assert summary["win_rate"] == pytest.approx(71.3665, abs=1e-4)
    assert (summary["n_wins"], summary["n_wins_base"], summary["n_draws"], summary["n_total"]) == (574, 230, 1, 805)
    text = harness("eval", "import-alpaca", str(annotations), cwd=tmp_path).stdout
    assert "win_rate: 71.36" in text


def test_a_malformed_file_gives_one_line(tmp_path):
    bad = tmp_path / "annotations.json"
    bad.write_text('{"not": "a list"}')
    result = harness("eval", "import-alpaca", str(bad), cwd=tmp_path, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and str(bad) in result.stderr


def test_import_mtbench_breaks_scores_down_by_category(shared_data, tmp_path):
    judgments = shared_data / "mt_bench" / "medusa" / "model_judgment" / "gpt-4_single.jsonl.gz"
    summary = json.loads(harness("eval", "import-mtbench", str(judgments), "--json", cwd=tmp_path).stdout)
    row = summary["models"]["vicuna-7b-v1.3"]
    assert set(row["per_category"]) == {"writing", "roleplay", "reasoning", "math", "coding", "extraction",
                                        "stem", "humanities"}
    assert sum(row["per_category"].values()) / 8 == pytest.approx(row["overall"])  # 10 questions each
