"""`harness report`: tables checked cell by cell against results.json, every file written, sweeps, published
rows kept apart, bad input in one line, the paired bootstrap against a case computed by hand, and a real
smoke run reported again after its model folders are deleted."""

from __future__ import annotations

import csv
import itertools
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import harness
from harness.cli import main
from harness.statistics import paired_difference
from report_fixtures import make_run
from reports.build import build_report
from reports.load import ReportError, load_run
from reports.plots import sample_gaps
from reports.published import PACKAGED, load_published
from reports.tables import selection_threshold


def read_csv(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def close(cell: str, value) -> bool:
    if value is None:
        return cell == ""
    return math.isclose(float(cell), float(value), rel_tol=1e-9, abs_tol=1e-12)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    run = make_run(tmp_path_factory.mktemp("report") / "full")
    build_report(run)
    return run


@pytest.fixture(scope="module")
def eta_tau_sweep(tmp_path_factory) -> Path:
    run = make_run(tmp_path_factory.mktemp("report") / "sweep", sweep={"rsdpo.eta": ["0.8", "0.9"], "rsdpo.tau": ["0.5", "1.0"]},
                   methods=("rsdpo",), seed=1)
    build_report(run, ["csv", "md"])
    return run


@pytest.fixture(scope="module")
def rm_sweep(tmp_path_factory) -> Path:
    run = make_run(tmp_path_factory.mktemp("report") / "rm", sweep={"reward_model.learning_rate": ["1e-5", "3e-5", "1e-4"]},
                   methods=("rs", "rsdpo"), seed=2)
    build_report(run, ["csv"])
    return run


def results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


# ---------------------------------------------------------------- files


def test_every_table_and_figure_is_written_in_every_format(full_run):
    report = full_run / "report"
    tables = ["main", "comparisons", "memory", "reward_model", "pairs", "mt_bench_categories", "alpaca_eval_per_dataset"]
    for name in tables:
        for ext in ("md", "csv", "tex", "html"):
            assert (report / "tables" / f"{name}.{ext}").stat().st_size > 0, f"{name}.{ext}"
    for name in ("scores", "comparisons", "mt_bench_radar", "memory", "reward_distributions", "reward_gaps"):
        assert (report / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"<svg" in (report / "figures" / f"{name}.svg").read_bytes()[:2000]
    index = (report / "index.html").read_text()
    assert 'id="table-main"' in index and index.count("data:image/png;base64,") == 6
    sources = [part.split('"', 1)[0] for part in index.split('<img alt=')[1:] for part in [part.split('src="', 1)[1]]]
    assert len(sources) == 6 and all(src.startswith("data:image/png;base64,") for src in sources)  # embedded
    assert not list(full_run.glob(".report-*")), "the staging folder is left behind"


def test_formats_option_limits_the_table_files(eta_tau_sweep):
    written = {p.suffix for p in (eta_tau_sweep / "report" / "tables").iterdir()}
    assert written == {".csv", ".md"}
    assert not (eta_tau_sweep / "report" / "index.html").exists()
    assert (eta_tau_sweep / "report" / "figures" / "scores.png").exists()


# ---------------------------------------------------------------- cells against results.json


def test_main_table_cells_match_results_json(full_run):
    res = results(full_run)
    rows = {r["method"]: r for r in read_csv(full_run / "report" / "tables" / "main.csv")}
    assert list(rows) == ["sft", "rs", "ppo", "dpo", "rsdpo"]  # the paper's row order
    for method, entry in res["methods"].items():
        row, ev = rows[method], entry["evaluations"]
        assert close(row["mt_bench_turn_1"], ev["mt_bench"]["turn_1"])
        assert close(row["mt_bench_turn_2"], ev["mt_bench"]["turn_2"])
        assert close(row["mt_bench_average"], ev["mt_bench"]["overall"])
        assert close(row["mt_bench_ci_low"], ev["mt_bench"]["overall_ci"]["ci_low"])
        assert close(row["alpaca_eval_win_rate"], ev["alpaca_eval"]["win_rate"])
        assert close(row["alpaca_eval_standard_error"], ev["alpaca_eval"]["standard_error"])
        assert close(row["heldout_reward"], ev["heldout_reward"]["reward"]["mean"])
        assert row["source"] == "ours"
    assert (rows["sft"]["trained_on"], rows["sft"]["trained_on_unit"]) == ("160", "demonstrations")
    assert (rows["dpo"]["trained_on"], rows["dpo"]["trained_on_unit"]) == ("200", "pairs")
    assert rows["rsdpo"]["trained_on"] == str(res["methods"]["rsdpo"]["stats"]["train_pairs"])
    assert (rows["rs"]["trained_on"], rows["rs"]["trained_on_unit"]) == ("6", "samples")
    assert (rows["ppo"]["trained_on"], rows["ppo"]["trained_on_unit"]) == ("80", "episodes")


def test_main_table_text_formats_show_the_same_numbers(full_run):
    res = results(full_run)
    mt = res["methods"]["rsdpo"]["evaluations"]["mt_bench"]
    ae = res["methods"]["rsdpo"]["evaluations"]["alpaca_eval"]
    average = f"{mt['overall']:.2f} [{mt['overall_ci']['ci_low']:.2f}, {mt['overall_ci']['ci_high']:.2f}]"
    win = f"{ae['win_rate']:.2f} ± {ae['standard_error']:.2f}"
    md = (full_run / "report" / "tables" / "main.md").read_text()
    line = next(line for line in md.splitlines() if line.startswith("| rsdpo |"))
    assert line.split(" | ")[2:6] == [f"{mt['turn_1']:.2f}", f"{mt['turn_2']:.2f}", average, win]
    tex = (full_run / "report" / "tables" / "main.tex").read_text()
    assert all(rule in tex for rule in ("\\toprule", "\\midrule", "\\bottomrule", "\\begin{tabular}"))
    assert win.replace("±", "$\\pm$") in tex and "95\\% CI" in tex and "mt\\_bench" not in tex.split("\\bottomrule")[0]
    html = (full_run / "report" / "tables" / "main.html").read_text()
    assert average in html and "gpt-4-0613" in html  # the judge is named with the numbers


def test_comparisons_are_read_from_results_json_and_marked(full_run):
    res = results(full_run)
    rows = read_csv(full_run / "report" / "tables" / "comparisons.csv")
    expected = [(e, label, d) for e, pairs in res["comparisons"].items() for label, d in pairs.items()]
    assert len(rows) == len(expected)
    for row, (evaluation, label, diff) in zip(rows, expected):
        assert (row["evaluation"], row["difference"]) == (evaluation, label)
        assert close(row["mean"], diff["mean"]) and close(row["ci_low"], diff["ci_low"])
        assert row["significant"] == str(diff["significant"])
    assert {"rsdpo - sft", "rs - rsdpo"} <= {r["difference"] for r in rows}
    md = (full_run / "report" / "tables" / "comparisons.md").read_text()
    assert md.count("yes *") == sum(d["significant"] for _, _, d in expected)


def test_memory_table_lists_phases_with_measured_and_estimated_peaks(full_run):
    res = results(full_run)
    rows = read_csv(full_run / "report" / "tables" / "memory.csv")
    ppo = {r["phase"]: r for r in rows if r["method"] == "ppo"}
    assert {"SFT", "reward model", "training", "evaluation: mt_bench", "all phases"} <= set(ppo)
    assert not any(r["stage"] in ("prompts", "preferences") for r in rows)  # data loaders are not phases
    profile = res["methods"]["ppo"]["profile"]
    assert close(ppo["training"]["cuda_max_allocated_bytes"], profile["cuda"]["devices"][0]["max_memory_allocated_bytes"])
    assert close(ppo["training"]["estimated_bytes"], profile["estimate"][0]["peak_bytes"])  # the largest phase
    assert close(ppo["training"]["peak_rss_bytes"], profile["peak_rss_bytes"])
    assert ppo["SFT"]["shared_by_methods"] == "5"  # every method reads the SFT policy
    wall = sum(float(r["wall_s"]) for r in rows if r["method"] == "ppo" and r["phase"] != "all phases")
    assert close(ppo["all phases"]["wall_s"], wall)


def test_reward_model_and_pair_tables(full_run):
    res = results(full_run)
    rm = read_csv(full_run / "report" / "tables" / "reward_model.csv")
    assert close(rm[0]["heldout_accuracy"], res["stages"]["reward_model"]["stats"]["heldout_accuracy"])
    assert close(rm[0]["sample_reward_mean"], res["stages"]["scored_samples"]["stats"]["reward_mean"])
    pairs = read_csv(full_run / "report" / "tables" / "pairs.csv")
    selection = res["stages"]["rsdpo"]["stats"]["pair_selection"]
    assert pairs[0]["pairs_kept"] == str(selection["pairs_kept"])
    assert (float(pairs[0]["eta"]), float(pairs[0]["tau"])) == (0.85, 1.0)  # from config.yaml
    assert close(pairs[0]["min_reward_gap"], math.log(0.85 / 0.15))
    assert close(pairs[0]["kept_fraction"], selection["pairs_kept"] / selection["max_possible_pairs"])


def test_mt_bench_categories_and_alpaca_per_source(full_run):
    res = results(full_run)
    categories = {r["method"]: r for r in read_csv(full_run / "report" / "tables" / "mt_bench_categories.csv")}
    for method, entry in res["methods"].items():
        for category, score in entry["evaluations"]["mt_bench"]["per_category"].items():
            assert close(categories[method][category], score)
    per_source = read_csv(full_run / "report" / "tables" / "alpaca_eval_per_dataset.csv")
    assert len(per_source) == 3 * len(res["methods"])
    for row in per_source:
        stats = res["methods"][row["method"]]["evaluations"]["alpaca_eval"]["per_dataset"][row["dataset"]]
        assert close(row["win_rate"], stats["win_rate"]) and row["n_total"] == str(stats["n_total"])


# ---------------------------------------------------------------- sweeps


def test_one_ablation_table_and_curve_per_swept_key(eta_tau_sweep):
    res = results(eta_tau_sweep)
    report = eta_tau_sweep / "report"
    for key in ("rsdpo_eta", "rsdpo_tau"):
        assert (report / "tables" / f"ablation_{key}.csv").exists()
        assert (report / "figures" / f"sweep_{key}.png").exists()
    rows = read_csv(report / "tables" / "ablation_rsdpo_eta.csv")
    assert len(rows) == 4
    for row in rows:
        entry = res["methods"][row["stage"]]
        assert row["point"] == entry["point"] == f"rsdpo.eta={row['rsdpo.eta']},rsdpo.tau={row['rsdpo.tau']}"
        assert row["pairs_kept"] == str(entry["stats"]["pair_selection"]["pairs_kept"])
        assert close(row["mt_bench_average"], entry["evaluations"]["mt_bench"]["overall"])
        assert close(row["alpaca_eval_win_rate"], entry["evaluations"]["alpaca_eval"]["win_rate"])
    # grouped by the other key, then ordered by the swept value
    assert [(r["rsdpo.tau"], r["rsdpo.eta"]) for r in rows] == [("0.5", "0.8"), ("0.5", "0.9"), ("1.0", "0.8"), ("1.0", "0.9")]
    pairs = {r["stage"]: r for r in read_csv(report / "tables" / "pairs.csv")}
    point = pairs["rsdpo[rsdpo.eta=0.9,rsdpo.tau=0.5]"]
    assert (float(point["eta"]), float(point["tau"])) == (0.9, 0.5)  # the point's values, not config.yaml's
    assert close(point["min_reward_gap"], 0.5 * math.log(9))


def test_reward_model_sweep_links_each_method_point_to_its_reward_model(rm_sweep):
    res = results(rm_sweep)
    rows = read_csv(rm_sweep / "report" / "tables" / "ablation_reward_model_learning_rate.csv")
    assert {r["method"] for r in rows} == {"rs", "rsdpo"} and len(rows) == 6
    for row in rows:
        rm = f"reward_model[{row['point']}]"
        assert row["reward_model"] == rm
        assert close(row["reward_model_heldout_accuracy"], res["stages"][rm]["stats"]["heldout_accuracy"])
    assert (rm_sweep / "report" / "figures" / "rm_accuracy.png").exists()
    assert len(read_csv(rm_sweep / "report" / "tables" / "reward_model.csv")) == 3


# ---------------------------------------------------------------- stage files


def test_reward_gaps_come_from_every_pair_of_samples_of_a_prompt(tmp_path):
    path = tmp_path / "scored_samples.jsonl"
    rows = [("a", 0.0), ("a", 1.0), ("a", 3.0), ("b", 2.0), ("b", 2.0)]
    path.write_text("".join(json.dumps({"prompt_id": p, "sample_id": i, "reward": r}) + "\n" for i, (p, r) in enumerate(rows)))
    assert sorted(sample_gaps(path).tolist()) == [1.0, 2.0, 3.0]  # a: 1-0, 3-0, 3-1; b: a tie, no gap
    assert selection_threshold(0.5, 1.0) == 0.0
    assert math.isclose(selection_threshold(0.85, 2.0), 2 * math.log(0.85 / 0.15))
    assert selection_threshold(1.0, 1.0) is None


# ---------------------------------------------------------------- published numbers


def test_the_packaged_published_file_is_empty_and_says_so():
    rows, status = load_published()
    assert rows == [] and status.startswith("EMPTY")
    assert json.loads(PACKAGED.read_text())["rows"] == []


def test_published_rows_are_marked_and_enter_no_statistic(tmp_path):
    run = make_run(tmp_path / "run", evaluations=("heldout_reward", "mt_bench"), methods=("rsdpo",), seed=3)
    build_report(run, ["csv"])
    before = (run / "report" / "tables" / "comparisons.csv").read_text()
    published = tmp_path / "published.json"
    published.write_text(json.dumps({"status": "test rows", "rows": [
        {"method": "RS-DPO", "table": "Table 9", "setting": "a test row", "mt_bench_turn_1": 9.5,
         "mt_bench_turn_2": 9.0, "mt_bench_average": 9.25}]}))
    build_report(run, ["csv", "html"], published=published)
    main_rows = read_csv(run / "report" / "tables" / "main.csv")
    ours = [r for r in main_rows if r["source"] == "ours"]
    theirs = [r for r in main_rows if r["source"] != "ours"]
    assert [r["method"] for r in ours] == ["sft", "rsdpo"]
    assert theirs[0]["source"] == "published: arXiv 2402.10038 Table 9, a test row"
    assert close(theirs[0]["mt_bench_average"], 9.25)
    assert (run / "report" / "tables" / "comparisons.csv").read_text() == before
    assert [r["method"] for r in read_csv(run / "report" / "tables" / "published.csv")] == ["RS-DPO"]
    index = (run / "report" / "index.html").read_text()
    assert 'class="published"' in index and "Published, not ours" in index
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rows": [{"method": "RS-DPO", "table": "Table 2", "mt_bench_average": "high"}]}))
    with pytest.raises(ReportError, match=r"bad.json: rows\[0\]: field 'mt_bench_average' must be a number"):
        load_published(bad)


# ---------------------------------------------------------------- bad input


def test_a_missing_field_fails_in_one_line_naming_file_record_and_field(tmp_path, capsys):
    run = make_run(tmp_path / "run", evaluations=("mt_bench",), methods=("rs",), seed=4)
    res = results(run)
    del res["methods"]["rs"]["evaluations"]["mt_bench"]["turn_2"]
    (run / "results.json").write_text(json.dumps(res))
    with pytest.raises(ReportError) as err:
        load_run(run)
    assert str(err.value) == f"{run / 'results.json'}: methods['rs'].evaluations.mt_bench: field 'turn_2' missing"
    assert main(["report", str(run)]) == 1
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and "field 'turn_2' missing" in stderr
    assert main(["report", str(tmp_path / "nowhere")]) == 1
    assert "results.json: not found" in capsys.readouterr().err
    assert main(["report", str(run), "--format", "md,pdf"]) == 1
    assert "unknown report format(s) pdf" in capsys.readouterr().err


def test_a_bad_stage_file_names_its_line(tmp_path):
    run = make_run(tmp_path / "run", evaluations=("heldout_reward",), methods=("rsdpo",), seed=5)
    scored = run / results(run)["stages"]["scored_samples"]["dir"] / "scored_samples.jsonl"
    lines = scored.read_text().splitlines()
    lines[2] = json.dumps({"prompt_id": "p0", "sample_id": 2, "reward": None})
    scored.write_text("\n".join(lines) + "\n")
    with pytest.raises(ReportError, match=r"scored_samples.jsonl: line 3: field 'reward' missing or not a number"):
        build_report(run, ["csv"])
    assert not (run / "report").exists() and not list(run.glob(".report-*"))


# ---------------------------------------------------------------- the paired bootstrap, by hand


def test_paired_bootstrap_on_three_items_computed_by_hand():
    # Differences a - b on the shared items x, y, z are 1, 2, 3 ('w' is only in a: not paired).
    a = {"x": 3.0, "y": 5.0, "z": 4.0, "w": 100.0}
    b = {"x": 2.0, "y": 3.0, "z": 1.0}
    result = paired_difference(a, b, seed=0)
    # A resample of 3 draws has mean 1 only when all draws are 1: P = (1/3)^3 = 3.7% > 2.5%, so the 2.5%
    # quantile of the bootstrap means is exactly 1; symmetrically the 97.5% quantile is exactly 3.
    assert result == {"mean": 2.0, "ci_low": 1.0, "ci_high": 3.0, "level": 0.95, "n": 3, "significant": True}
    reverse = paired_difference(b, a, seed=0)
    assert (reverse["mean"], reverse["ci_low"], reverse["ci_high"]) == (-2.0, -3.0, -1.0)
    # Differences 0 and 1: means 0, 0.5, 1 with P 1/4, 1/2, 1/4 -> interval [0, 1], which touches 0.
    tie = paired_difference({"x": 1.0, "y": 2.0}, {"x": 1.0, "y": 1.0}, seed=0)
    assert (tie["ci_low"], tie["ci_high"], tie["significant"]) == (0.0, 1.0, False)


def test_paired_bootstrap_matches_the_exact_bootstrap_distribution():
    diffs = [-1.0, 0.0, 2.0, 5.0]
    # Every one of the 4^4 equally likely resamples, enumerated: the exact bootstrap distribution of the mean.
    means = np.sort([np.mean(r) for r in itertools.product(diffs, repeat=4)])
    cdf = np.arange(1, means.size + 1) / means.size
    exact_low = means[np.searchsorted(cdf, 0.025)]
    exact_high = means[np.searchsorted(cdf, 0.975)]
    result = paired_difference({str(i): d for i, d in enumerate(diffs)}, {str(i): 0.0 for i in range(4)}, seed=7)
    assert result["mean"] == pytest.approx(1.5)
    # 10,000 resamples put the percentile on the same atom as the exact distribution, or on its neighbour
    atoms = np.unique(means)
    for estimate, exact in ((result["ci_low"], exact_low), (result["ci_high"], exact_high)):
        index = int(np.searchsorted(atoms, exact))
        assert atoms[max(0, index - 1)] - 1e-12 <= estimate <= atoms[min(atoms.size - 1, index + 1)] + 1e-12


# ---------------------------------------------------------------- a real smoke run


@pytest.mark.smoke
def test_report_of_a_real_smoke_run_survives_deleting_the_models(tmp_path):
    run = tmp_path / "run"
    out = harness("run", "--profile", "smoke", "--methods", "rs,rsdpo", "--set", "rsdpo.eta=0.5,0.6",
                  "--run-dir", str(run), cwd=tmp_path)
    assert f"report: {run / 'report' / 'index.html'}" in out.stdout
    first = sorted(str(p.relative_to(run / "report")) for p in (run / "report").rglob("*") if p.is_file())
    for name in ("tables/main.csv", "tables/comparisons.csv", "tables/memory.tex", "tables/pairs.md",
                 "tables/ablation_rsdpo_eta.csv", "figures/reward_gaps.svg", "figures/sweep_rsdpo_eta.png",
                 "figures/reward_distributions.png", "index.html"):
        assert name in first
    for policy in run.glob("stages/*/policy"):
        shutil.rmtree(policy)
    for model in run.glob("stages/reward_model-*/reward_model"):
        shutil.rmtree(model)
    shutil.rmtree(run / "report")
    harness("report", str(run), cwd=tmp_path)
    again = sorted(str(p.relative_to(run / "report")) for p in (run / "report").rglob("*") if p.is_file())
    assert again == first
    res = results(run)
    rows = {r["method"]: r for r in read_csv(run / "report" / "tables" / "main.csv")}
    assert set(rows) == set(res["methods"])
    for method, entry in res["methods"].items():
        assert close(rows[method]["heldout_reward"], entry["evaluations"]["heldout_reward"]["reward"]["mean"])
    ablation = read_csv(run / "report" / "tables" / "ablation_rsdpo_eta.csv")
    assert [r["rsdpo.eta"] for r in ablation] == ["0.5", "0.6"]
    for row in ablation:
        assert row["pairs_kept"] == str(res["methods"][row["stage"]]["stats"]["pair_selection"]["pairs_kept"])


def test_a_null_score_is_shown_as_a_dash_not_an_error(tmp_path):
    # A judge whose every reply is unparseable leaves the scores null (evals/mt_bench.py): still a report.
    run = make_run(tmp_path / "run", evaluations=("mt_bench", "alpaca_eval"), methods=("rs",), seed=6)
    res = results(run)
    mt = res["methods"]["rs"]["evaluations"]["mt_bench"]
    mt.update(turn_1=None, turn_2=None, overall=None, overall_ci=None)
    res["methods"]["rs"]["evaluations"]["alpaca_eval"]["win_rate"] = None
    res["methods"]["rs"]["evaluations"]["mt_bench"]["per_category"]["math"] = None
    (run / "results.json").write_text(json.dumps(res))
    build_report(run, ["csv", "md"])
    row = read_csv(run / "report" / "tables" / "main.csv")[1]
    assert row["method"] == "rs" and row["mt_bench_turn_1"] == "" and row["alpaca_eval_win_rate"] == ""
    line = next(line for line in (run / "report" / "tables" / "main.md").read_text().splitlines() if line.startswith("| rs |"))
    assert [cell.strip() for cell in line.strip("|").split("|")][2:6] == ["–", "–", "–", "–"]
    res["methods"]["rs"]["evaluations"]["mt_bench"]["turn_1"] = "high"
    (run / "results.json").write_text(json.dumps(res))
    with pytest.raises(ReportError, match=r"methods\['rs'\].evaluations.mt_bench: field 'turn_1' is 'high', not a number"):
        load_run(run)


def test_estimates_from_harness_profile_summary_in_the_run_folder(tmp_path):
    # `harness profile` writes its summary as profile.json: phases (method, stage, estimated_bytes), methods.
    run = make_run(tmp_path / "run", evaluations=("heldout_reward",), methods=("rsdpo", "dpo"), seed=8)
    (run / "profile.json").write_text(json.dumps({
        "phases": [{"method": "rsdpo", "phase": "generation", "stage": "samples", "estimated_bytes": 3 * 2 ** 30},
                   {"method": "rsdpo", "phase": "training", "stage": "rsdpo", "estimated_bytes": 7 * 2 ** 30}],
        "methods": [{"method": "rsdpo", "estimated_bytes": 7 * 2 ** 30}]}))
    build_report(run, ["csv"])
    rows = {(r["method"], r["stage"]): r for r in read_csv(run / "report" / "tables" / "memory.csv")}
    assert close(rows[("rsdpo", "samples")]["estimated_bytes"], 3 * 2 ** 30)
    assert close(rows[("rsdpo", "rsdpo")]["estimated_bytes"], 7 * 2 ** 30)
    assert close(rows[("rsdpo", "")]["estimated_bytes"], 7 * 2 ** 30)  # 'all phases'
    assert rows[("dpo", "dpo")]["estimated_bytes"] == ""  # not profiled: no estimate, not a made-up one
