"""The report's tables as pandas DataFrames: raw numbers for CSV, formatted text for Markdown, LaTeX, HTML.

(a) main: per method MT-Bench turn 1 / turn 2 / average, AlpacaEval win rate +- SE, held-out reward (and, when
run, harmless reward and unsafe share), and what each method trained on; (b) memory: peak memory and wall time
per method and phase, measured and estimated; (c) ablations: one table per swept key; (d) reward model accuracy
and pair statistics; plus the paired differences (read from results.json, never recomputed), MT-Bench per
category, AlpacaEval per source.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from reports.load import RunData, base_name, get_path, number

PAPER_ORDER = ("sft", "rs", "ppo", "dpo", "dpo-bw", "rsdpo")  # the paper's row order; others follow by name
GIB = 1024 ** 3
DASH = "–"


@dataclass
class Table:
    """One table: ``data`` holds raw values (CSV), ``display`` the same rows as text (md, tex, html)."""

    name: str
    title: str
    note: str
    data: pd.DataFrame
    display: pd.DataFrame


# ---------------------------------------------------------------- formatting


def fmt(value, digits: int = 2) -> str:
    x = number(value)
    return DASH if x is None else f"{x:.{digits}f}"


def fmt_ci(mean, low, high, digits: int = 2) -> str:
    if number(mean) is None:
        return DASH
    if number(low) is None or number(high) is None:
        return fmt(mean, digits)
    return f"{fmt(mean, digits)} [{fmt(low, digits)}, {fmt(high, digits)}]"


def fmt_pm(mean, error, digits: int = 2) -> str:
    if number(mean) is None:
        return DASH
    return fmt(mean, digits) if number(error) is None else f"{fmt(mean, digits)} ± {fmt(error, digits)}"


def fmt_gib(value) -> str:
    x = number(value)
    return DASH if x is None else f"{x / GIB:.2f}"


def method_order(names) -> list[str]:
    """Paper order (SFT, RS, PPO, DPO, DPO-BW, RS-DPO), others by name; sweep points after their base."""
    def key(name: str):
        base = base_name(name)
        rank = PAPER_ORDER.index(base) if base in PAPER_ORDER else len(PAPER_ORDER)
        return (rank, base, name != base, name)
    return sorted(names, key=key)


def training_data(stats: dict) -> tuple[int | None, str]:
    """How much a method trained on, in its own unit (pairs, samples, PPO episodes, demonstrations)."""
    for key, unit in (("train_pairs", "pairs"), ("selected_samples", "samples"), ("episodes", "episodes"),
                      ("train_records", "demonstrations")):
        if number(stats.get(key)) is not None:
            return int(stats[key]), unit
    kept = get_path(stats, "pair_selection.pairs_kept")
    if number(kept) is not None:
        return int(kept), "pairs"
    return None, ""


def produced_by(run: RunData) -> str:
    """One line: what produced the numbers (model, profile, data, seed, device, versions, judges)."""
    p = run.results.get("produced_by") or {}
    model = get_path(p, "model.source") or "?"
    versions = p.get("versions") or {}
    parts = [f"run {run.results.get('run', run.root.name)}", f"profile {p.get('profile', '?')}",
             f"model {model}", f"seed {p.get('seed', '?')}", f"device {p.get('device', '?')}"]
    picked = [f"{k} {versions[k]}" for k in ("rsdpo-harness", "torch", "transformers", "trl") if versions.get(k)]
    if picked:
        parts.append(", ".join(picked))
    commit = get_path(p, "git.commit")
    if commit:
        parts.append(f"git {str(commit)[:10]}{' (dirty)' if get_path(p, 'git.dirty') else ''}")
    for name in ("mt_bench", "alpaca_eval"):
        judge = judge_of(run, name, with_prompt=False)
        if judge:
            parts.append(f"{name} judge {judge}")
    return "; ".join(parts)


def judge_of(run: RunData, evaluation: str, with_prompt: bool = True) -> str | None:
    """The judge model of an evaluation (and its prompt version), as the benchmark stage recorded it."""
    for method in run.methods:
        judge = get_path(run.evaluation(method, evaluation) or {}, "judge")
        if isinstance(judge, dict) and judge.get("model"):
            extra = f", prompt {judge['prompt_version']}" if with_prompt and judge.get("prompt_version") else ""
            return f"{judge['model']}{extra}"
    return None


def _table(name: str, title: str, note: str, rows: list[dict], display_rows: list[dict]) -> Table:
    # dtype=object keeps each value as written (an int stays an int beside a missing value in CSV)
    return Table(name, title, note, pd.DataFrame(rows, dtype=object), pd.DataFrame(display_rows, dtype=object))


# ---------------------------------------------------------------- (a) the main table


def main_table(run: RunData, published: list[dict] | None = None) -> Table:
    """Per method (and sweep point): MT-Bench turns and average, AlpacaEval win rate +- SE, held-out reward,
    and how much it trained on. Published rows, when given, are appended and marked; nothing is computed
    from them."""
    present = run.evaluations_present()
    rows, shown = [], []
    for name in method_order(run.methods):
        entry = run.methods[name]
        count, unit = training_data(entry.get("stats") or {})
        mt = run.evaluation(name, "mt_bench") or {}
        ae = run.evaluation(name, "alpaca_eval") or {}
        hr = run.evaluation(name, "heldout_reward") or {}
        row = {
            "method": name, "point": entry.get("point"), "source": "ours",
            "trained_on": count, "trained_on_unit": unit,
            "mt_bench_turn_1": mt.get("turn_1"), "mt_bench_turn_2": mt.get("turn_2"),
            "mt_bench_average": mt.get("overall"),
            "mt_bench_ci_low": get_path(mt, "overall_ci.ci_low"), "mt_bench_ci_high": get_path(mt, "overall_ci.ci_high"),
            "mt_bench_questions": mt.get("questions"), "mt_bench_parse_failure_rate": mt.get("parse_failure_rate"),
            "alpaca_eval_win_rate": ae.get("win_rate"), "alpaca_eval_standard_error": ae.get("standard_error"),
            "alpaca_eval_n_total": ae.get("n_total"),
            "heldout_reward": get_path(hr, "reward.mean"), "heldout_reward_ci_low": get_path(hr, "reward.ci_low"),
            "heldout_reward_ci_high": get_path(hr, "reward.ci_high"), "heldout_prompts": get_path(hr, "reward.n"),
            **harmlessness_columns(run.evaluation(name, "harmless_reward") or {},
                                   run.evaluation(name, "unsafe_share") or {}),
        }
        rows.append(row)
        shown.append(_main_display(row, present, bool(published)))
    for ref in published or []:
        row = {
            "method": ref["method"], "point": None, "source": f"published: {ref['citation']}",
            "trained_on": ref.get("trained_on"), "trained_on_unit": ref.get("trained_on_unit", ""),
            "mt_bench_turn_1": ref.get("mt_bench_turn_1"), "mt_bench_turn_2": ref.get("mt_bench_turn_2"),
            "mt_bench_average": ref.get("mt_bench_average"), "mt_bench_ci_low": None, "mt_bench_ci_high": None,
            "mt_bench_questions": None, "mt_bench_parse_failure_rate": None,
            "alpaca_eval_win_rate": ref.get("alpaca_eval_win_rate"),
            "alpaca_eval_standard_error": ref.get("alpaca_eval_standard_error"), "alpaca_eval_n_total": None,
            "heldout_reward": None, "heldout_reward_ci_low": None, "heldout_reward_ci_high": None,
            "heldout_prompts": None, **harmlessness_columns({}, {}),
        }
        rows.append(row)
        shown.append(_main_display(row, present + ["mt_bench", "alpaca_eval"], True))
    missing = [e for e in ("mt_bench", "alpaca_eval", "heldout_reward") if e not in present]
    note = (f"Ours: {produced_by(run)}. MT-Bench: 1-10 judge score, average with a 95% bootstrap CI over "
            "questions; AlpacaEval: win rate (%) against the reference outputs, draws count half, ± standard "
            "error; held-out reward: reward-model score of fresh samples on held-out prompts, 95% bootstrap CI.")
    if missing:
        note += f" Not evaluated in this run: {', '.join(missing)}."
    note += harmlessness_note(run, rows, present)
    unparsed = [f"{r['method']} {100 * r['mt_bench_parse_failure_rate']:.0f}%" for r in rows
                if r["source"] == "ours" and (number(r["mt_bench_parse_failure_rate"]) or 0) > 0]
    if unparsed:
        note += f" MT-Bench judgments whose score could not be parsed (dropped): {', '.join(unparsed)}."
    if published:
        note += " Rows marked 'published' are the paper's reported numbers, shown for reference only: they are " \
                "not ours, were measured on another setup, and enter no statistic or plot."
    return _table("main", "Main results (the paper's table)", note, rows, shown)


def harmlessness_columns(hr: dict, us: dict) -> dict:
    """The main table's harmlessness columns: harmless reward-model score and the judge's unsafe share."""
    return {
        "harmless_reward": get_path(hr, "reward.mean"), "harmless_reward_ci_low": get_path(hr, "reward.ci_low"),
        "harmless_reward_ci_high": get_path(hr, "reward.ci_high"), "harmless_prompts": get_path(hr, "reward.n"),
        "unsafe_share": us.get("unsafe_share"), "unsafe_share_ci_low": get_path(us, "unsafe_share_ci.ci_low"),
        "unsafe_share_ci_high": get_path(us, "unsafe_share_ci.ci_high"),
        "unsafe_share_parse_failure_rate": us.get("parse_failure_rate"),
    }


def harmlessness_note(run: RunData, rows: list[dict], present: list[str]) -> str:
    """What the harmlessness columns mean, when the run has them (empty otherwise)."""
    note = ""
    if "harmless_reward" in present:
        note += (" Harmless reward: the harmless reward model's score (trained on harmlessness pairs, separate "
                 "from the helpful one) of each policy's answers to harmless prompts, 95% bootstrap CI.")
    if "unsafe_share" in present:
        note += (" Unsafe %: share of those answers the judge calls UNSAFE (unparseable verdicts left out), "
                 f"95% bootstrap CI; judge {judge_of(run, 'unsafe_share') or '?'}.")
        unparsed = [f"{r['method']} {100 * r['unsafe_share_parse_failure_rate']:.0f}%" for r in rows
                    if r["source"] == "ours" and (number(r["unsafe_share_parse_failure_rate"]) or 0) > 0]
        if unparsed:
            note += f" Unsafe-share verdicts that could not be parsed: {', '.join(unparsed)}."
    return note


def _main_display(row: dict, present: list[str], with_source: bool) -> dict:
    unit = row["trained_on_unit"]
    shown = {"Method": row["method"],
             "Trained on": DASH if row["trained_on"] is None else f"{row['trained_on']} {unit}".strip()}
    if "mt_bench" in present:
        shown["MT-Bench turn 1"] = fmt(row["mt_bench_turn_1"])
        shown["MT-Bench turn 2"] = fmt(row["mt_bench_turn_2"])
        shown["MT-Bench average [95% CI]"] = fmt_ci(row["mt_bench_average"], row["mt_bench_ci_low"],
                                                     row["mt_bench_ci_high"])
    if "alpaca_eval" in present:
        shown["AlpacaEval win rate % ± SE"] = fmt_pm(row["alpaca_eval_win_rate"], row["alpaca_eval_standard_error"])
    if "heldout_reward" in present:
        shown["Held-out reward [95% CI]"] = fmt_ci(row["heldout_reward"], row["heldout_reward_ci_low"],
                                                    row["heldout_reward_ci_high"], 3)
    if "harmless_reward" in present:
        shown["Harmless reward [95% CI]"] = fmt_ci(row["harmless_reward"], row["harmless_reward_ci_low"],
                                                    row["harmless_reward_ci_high"], 3)
    if "unsafe_share" in present:
        shown["Unsafe % [95% CI]"] = fmt_ci(*(None if number(v) is None else 100 * v for v in (
            row["unsafe_share"], row["unsafe_share_ci_low"], row["unsafe_share_ci_high"])), 1)
    if with_source:
        shown["Source"] = row["source"]
    return shown


# ---------------------------------------------------------------- paired differences


def comparisons_table(run: RunData) -> Table | None:
    """Paired bootstrap differences on shared prompts, as results.json holds them (harness/statistics.py)."""
    comparisons = run.results.get("comparisons") or {}
    rows, shown = [], []
    for evaluation, pairs in comparisons.items():
        for label, diff in (pairs or {}).items():
            significant = bool(diff.get("significant", diff["ci_low"] > 0 or diff["ci_high"] < 0))
            rows.append({"evaluation": evaluation, "difference": label, "mean": diff["mean"],
                         "ci_low": diff["ci_low"], "ci_high": diff["ci_high"], "level": diff.get("level"),
                         "n": diff.get("n"), "significant": significant})
            digits = 3 if evaluation in ("heldout_reward", "harmless_reward", "unsafe_share") else 2
            level = number(diff.get("level"))
            shown.append({"Evaluation": evaluation, "Difference": label,
                          "Mean [CI]": fmt_ci(diff["mean"], diff["ci_low"], diff["ci_high"], digits),
                          "Level": DASH if level is None else f"{level:.0%}",
                          "Shared items": DASH if diff.get("n") is None else str(diff["n"]),
                          "Significant": "yes *" if significant else "no"})
    if not rows:
        return None
    note = ("Paired percentile bootstrap over the items both policies were scored on (held-out prompts, MT-Bench "
            "questions, AlpacaEval instructions), as computed by `harness run` (harness/statistics.py); "
            "significant (*) when the interval excludes 0. " + produced_by(run) + ".")
    return _table("comparisons", "Differences from SFT and from RS-DPO (paired bootstrap)", note, rows, shown)


# ---------------------------------------------------------------- (b) memory and time


def is_data_stage(entry: dict) -> bool:
    stats = entry.get("stats") or {}
    return "records" in stats and "source" in stats  # demonstrations / preferences / prompts loaders


def phase_of(stage: str, method: str) -> str:
    base = base_name(stage)
    if "@" in base:
        return "evaluation: " + base.split("@", 1)[0]
    if stage == method:
        return "training"
    return {"sft": "SFT", "reward_model": "reward model", "samples": "sampling",
            "scored_samples": "reward scoring"}.get(base, base)


def cuda_peak(profile: dict, key: str = "max_memory_allocated_bytes") -> float | None:
    devices = get_path(profile, "cuda.devices")
    if not isinstance(devices, list) or not devices:
        return None
    values = [number(d.get(key)) for d in devices if isinstance(d, dict)]
    values = [v for v in values if v is not None]
    return max(values) if values else None


def estimated_bytes(entry: dict) -> float | None:
    """The analytic estimate of a stage's peak memory, when the profiler wrote one: profile.json's
    'estimate' (or 'estimated'), or stats' 'memory_estimate': bytes, an object with 'peak_bytes' (or
    'total_bytes'), or a list of such phases (profiling/estimator.py's Phase.to_dict), whose largest counts."""
    profile, stats = entry.get("profile") or {}, entry.get("stats") or {}
    for value in (profile.get("estimate"), profile.get("estimated"), stats.get("memory_estimate")):
        if isinstance(value, list):  # the estimator's phases of one method: its peak is the largest
            peaks = [number(p.get("peak_bytes")) for p in value if isinstance(p, dict)]
            peaks = [p for p in peaks if p is not None]
            if peaks:
                return max(peaks)
        elif isinstance(value, dict):
            for key in ("peak_bytes", "total_bytes", "bytes"):
                if number(value.get(key)) is not None:
                    return float(value[key])
        elif number(value) is not None:
            return float(value)
    return None


def stages_of_method(run: RunData, method: str) -> list[str]:
    """The stages a method's result costs: its upstream (no data loaders), itself, its evaluations."""
    ancestors = set(run.ancestors(method))
    # results.json lists stages in the order they ran (inputs first), which is the order a reader expects
    upstream = [s for s in run.stages if s in ancestors and not is_data_stage(run.stages[s])]
    return upstream + [method] + run.evaluation_stages(method)


def memory_table(run: RunData) -> Table | None:
    users: dict[str, int] = {}
    per_method = {m: stages_of_method(run, m) for m in method_order(run.methods)}
    for stages in per_method.values():
        for stage in stages:
            users[stage] = users.get(stage, 0) + 1
    rows, shown = [], []
    for method, stages in per_method.items():
        walls, peaks = [], []
        for stage in stages:
            entry = run.stages.get(stage) or run.methods.get(stage) or {}
            profile = entry.get("profile") or {}
            wall, rss = number(profile.get("wall_s")), number(profile.get("peak_rss_bytes"))
            allocated, reserved = cuda_peak(profile), cuda_peak(profile, "max_memory_reserved_bytes")
            estimate = estimated_bytes(entry)
            if estimate is None:
                estimate = run.estimate_for(method, stage)
            walls.append(wall or 0.0)
            peaks.append(allocated if allocated is not None else rss)
            row = {"method": method, "phase": phase_of(stage, method), "stage": stage,
                   "shared_by_methods": users[stage], "wall_s": wall, "peak_rss_bytes": rss,
                   "cuda_max_allocated_bytes": allocated, "cuda_max_reserved_bytes": reserved,
                   "estimated_bytes": estimate, "device": profile.get("device"),
                   "cuda": "measured" if allocated is not None else (get_path(profile, "cuda.skipped") or "")}
            rows.append(row)
            shown.append(_memory_display(row))
        total = {"method": method, "phase": "all phases", "stage": "", "shared_by_methods": None,
                 "wall_s": sum(walls), "peak_rss_bytes": max((p for p in peaks if p is not None), default=None),
                 "cuda_max_allocated_bytes": None, "cuda_max_reserved_bytes": None,
                 "estimated_bytes": run.estimate_for(method),
                 "device": None, "cuda": ""}
        rows.append(total)
        shown.append(_memory_display(total))
    if not rows:
        return None
    note = ("Measured per stage by the harness profiler (profile.json): wall time, peak resident memory of the "
            "process and its children, CUDA max allocated / reserved when a GPU was used. Stages shared by several "
            "methods (SFT, reward model, samples) are listed under each; 'shared' counts the methods using them; "
            "'all phases' sums wall time and takes the largest measured peak (CUDA allocated where measured, "
            "else RSS). 'Estimated': the analytic estimate (profiling/estimator.py) where one was recorded, in a stage's "
            "profile.json or in `harness profile`'s summary saved as RUN_DIR/profile.json. " + produced_by(run) + ".")
    return _table("memory", "Peak memory and time per method and phase", note, rows, shown)


def _memory_display(row: dict) -> dict:
    return {"Method": row["method"], "Phase": row["phase"], "Stage": row["stage"] or DASH,
            "Shared": DASH if not row["shared_by_methods"] else str(row["shared_by_methods"]),
            "Wall s": fmt(row["wall_s"], 1), "Peak RSS GiB": fmt_gib(row["peak_rss_bytes"]),
            "CUDA alloc GiB": fmt_gib(row["cuda_max_allocated_bytes"]),
            "CUDA reserved GiB": fmt_gib(row["cuda_max_reserved_bytes"]),
            "Estimated GiB": fmt_gib(row["estimated_bytes"])}


# ---------------------------------------------------------------- (c) ablations, one per swept key


def selection_threshold(eta, tau) -> float | None:
    """RS-DPO keeps a pair when sigmoid(gap / tau) > eta, i.e. gap > tau * ln(eta / (1 - eta))."""
    eta, tau = number(eta), number(tau)
    if eta is None or tau is None or not 0 < eta < 1:
        return None
    return tau * math.log(eta / (1 - eta))


def sweep_rows(run: RunData) -> list[dict]:
    """One row per method entry at a sweep point: its swept values, pairs kept and scores."""
    if not run.sweep:
        return []
    rows = []
    for name in method_order(run.methods):
        entry = run.methods[name]
        point = entry.get("point")
        if not point:
            continue
        stats = entry.get("stats") or {}
        mt = run.evaluation(name, "mt_bench") or {}
        ae = run.evaluation(name, "alpaca_eval") or {}
        hr = run.evaluation(name, "heldout_reward") or {}
        rm = run.reward_model_of(name)
        row = {"method": base_name(name), "stage": name, "point": point, **{
            key: run.point_values(point).get(key) for key in run.sweep["keys"]},
            "pairs_kept": get_path(stats, "pair_selection.pairs_kept"),
            "trained_on": training_data(stats)[0], "trained_on_unit": training_data(stats)[1],
            "heldout_reward": get_path(hr, "reward.mean"), "heldout_reward_ci_low": get_path(hr, "reward.ci_low"),
            "heldout_reward_ci_high": get_path(hr, "reward.ci_high"),
            "mt_bench_average": mt.get("overall"), "mt_bench_ci_low": get_path(mt, "overall_ci.ci_low"),
            "mt_bench_ci_high": get_path(mt, "overall_ci.ci_high"),
            "alpaca_eval_win_rate": ae.get("win_rate"), "alpaca_eval_standard_error": ae.get("standard_error"),
            "reward_model": rm,
            "reward_model_heldout_accuracy": get_path(run.stages.get(rm, {}), "stats.heldout_accuracy") if rm else None}
        rows.append(row)
    return rows


def ablation_tables(run: RunData) -> list[Table]:
    rows = sweep_rows(run)
    if not rows:
        return []
    keys = run.sweep["keys"]
    evaluations = run.evaluations_present()
    tables = []
    for key in keys:
        others = [k for k in keys if k != key]
        ordered = sorted(rows, key=lambda r: (r["method"], [str(r[k]) for k in others], _sortable(r[key])))
        data = [{"swept_key": key, **r} for r in ordered]
        shown = []
        for r in ordered:
            item = {"Method": r["method"], key: str(r[key])}
            item.update({k: str(r[k]) for k in others})
            item["Pairs kept"] = DASH if r["pairs_kept"] is None else str(r["pairs_kept"])
            item["Trained on"] = DASH if r["trained_on"] is None else f"{r['trained_on']} {r['trained_on_unit']}"
            if any(k.startswith("reward_model.") for k in keys):
                item["RM held-out acc."] = fmt(r["reward_model_heldout_accuracy"], 3)
            if "mt_bench" in evaluations:
                item["MT-Bench avg [95% CI]"] = fmt_ci(r["mt_bench_average"], r["mt_bench_ci_low"], r["mt_bench_ci_high"])
            if "alpaca_eval" in evaluations:
                item["AlpacaEval % ± SE"] = fmt_pm(r["alpaca_eval_win_rate"], r["alpaca_eval_standard_error"])
            if "heldout_reward" in evaluations:
                item["Held-out reward [95% CI]"] = fmt_ci(r["heldout_reward"], r["heldout_reward_ci_low"],
                                                           r["heldout_reward_ci_high"], 3)
            shown.append(item)
        note = (f"Sweep over {key}" + (f" (grid with {', '.join(others)})" if others else "") +
                "; stages that do not depend on the swept value ran once and are shared. " + produced_by(run) + ".")
        tables.append(_table(f"ablation_{slug(key)}", f"Ablation: {key}", note, data, shown))
    return tables


def slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def _sortable(value):
    x = number(_as_number(value))
    return (0, x, "") if x is not None else (1, 0.0, str(value))


def _as_number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------- (d) reward model and pairs


def reward_model_table(run: RunData) -> Table | None:
    rows, shown = [], []
    for name, entry in run.stages.items():
        stats = entry.get("stats") or {}
        if number(stats.get("heldout_accuracy")) is None:
            continue
        scored = [s for s, e in run.stages.items() if (e.get("inputs") or {}).get("reward_model") == name
                  and number(get_path(e, "stats.reward_mean")) is not None]
        reward_mean = get_path(run.stages[scored[0]], "stats.reward_mean") if scored else None
        reward_std = get_path(run.stages[scored[0]], "stats.reward_std") if scored else None
        row = {"stage": name, "point": entry.get("point"), "train_pairs": stats.get("train_pairs"),
               "heldout_pairs": stats.get("heldout_pairs"), "heldout_accuracy": stats.get("heldout_accuracy"),
               "heldout_mean_margin": stats.get("heldout_mean_margin"),
               "pretrained": stats.get("pretrained") or stats.get("reward_model"),
               "sample_reward_mean": reward_mean, "sample_reward_std": reward_std}
        rows.append(row)
        shown.append({"Reward model": name,
                      "Trained on": DASH if row["train_pairs"] is None else f"{row['train_pairs']} pairs",
                      "Held-out pairs": DASH if row["heldout_pairs"] is None else str(row["heldout_pairs"]),
                      "Held-out accuracy": fmt(row["heldout_accuracy"], 3),
                      "Mean margin": fmt(row["heldout_mean_margin"], 4),
                      "SFT sample reward mean ± sd": fmt_pm(reward_mean, reward_std, 4)})
    if not rows:
        return None
    note = ("Accuracy: fraction of held-out human preference pairs where the reward model scores the chosen "
            "response higher; mean margin: mean of (chosen - rejected) rewards; sample rewards: the k SFT samples "
            "per prompt that RS and RS-DPO select from. " + produced_by(run) + ".")
    return _table("reward_model", "Reward model accuracy", note, rows, shown)


SELECTION_RULES = {  # the pair selectors shipped in methods/pair_selection.py, as the table names them
    "threshold": "sigmoid(gap/tau) > eta",
    "best_vs_worst": "best vs worst",
    "mean_minus_2std": "best vs nearest mean - 2 std",
}


def pair_table(run: RunData) -> Table | None:
    rows, shown = [], []
    for name in method_order(n for n, e in run.stages.items() if isinstance(get_path(e, "stats.pair_selection"), dict)):
        entry = run.stages[name]
        sel = entry["stats"]["pair_selection"]
        point = entry.get("point")
        base = base_name(name)
        eta = run.setting(f"{base}.eta", point) if base == "rsdpo" else None
        tau = run.setting(f"{base}.tau", point) if base == "rsdpo" else None
        kept, possible = number(sel.get("pairs_kept")), number(sel.get("max_possible_pairs"))
        selector = entry["stats"].get("selection", "threshold" if base == "rsdpo" else "best_vs_worst")
        threshold = selector == "threshold"
        row = {"stage": name, "rule": SELECTION_RULES.get(selector, selector), "k": entry["stats"].get("k"),
               "eta": eta if threshold else None, "tau": tau if threshold else None,
               "min_reward_gap": selection_threshold(eta, tau) if threshold else None,
               "pairs_kept": sel.get("pairs_kept"), "max_possible_pairs": sel.get("max_possible_pairs"),
               "kept_fraction": kept / possible if kept is not None and possible else None,
               "prompts": sel.get("prompts"), "prompts_without_pairs": sel.get("prompts_without_pairs"),
               "pairs_per_prompt_mean": get_path(sel, "pairs_per_prompt.mean"),
               "pairs_per_prompt_min": get_path(sel, "pairs_per_prompt.min"),
               "pairs_per_prompt_max": get_path(sel, "pairs_per_prompt.max")}
        rows.append(row)
        shown.append({"Stage": name, "Rule": row["rule"], "k": DASH if row["k"] is None else str(row["k"]),
                      "eta": fmt(row["eta"], 3), "tau": fmt(row["tau"], 3),
                      "Min gap": fmt(row["min_reward_gap"], 4),
                      "Pairs kept": DASH if kept is None else str(int(kept)),
                      "of possible": DASH if possible is None else str(int(possible)),
                      "Kept %": DASH if row["kept_fraction"] is None else f"{100 * row['kept_fraction']:.1f}",
                      "Prompts (without pairs)": f"{sel.get('prompts', DASH)} ({sel.get('prompts_without_pairs', DASH)})",
                      "Pairs/prompt mean [min, max]": f"{fmt(row['pairs_per_prompt_mean'])} "
                                                      f"[{row['pairs_per_prompt_min']}, {row['pairs_per_prompt_max']}]"})
    if not rows:
        return None
    note = ("Pairs selected from the SFT policy's k scored samples per prompt. RS-DPO keeps every ordered pair "
            "with sigmoid((r_j - r_l)/tau) > eta, i.e. a reward gap above tau*ln(eta/(1-eta)) (min gap); "
            "possible = prompts*k*(k-1). " + produced_by(run) + ".")
    return _table("pairs", "Pair statistics", note, rows, shown)


# ---------------------------------------------------------------- per category, per source


def mt_bench_category_table(run: RunData) -> Table | None:
    rows, shown = [], []
    for name in method_order(run.methods):
        per_category = get_path(run.evaluation(name, "mt_bench") or {}, "per_category")
        if not isinstance(per_category, dict) or not per_category:
            continue
        rows.append({"method": name, **per_category})
        shown.append({"Method": name, **{c: fmt(v) for c, v in per_category.items()}})
    if not rows:
        return None
    note = "MT-Bench score (1-10) per question category, both turns. " + produced_by(run) + "."
    return _table("mt_bench_categories", "MT-Bench per category", note, rows, shown)


def alpaca_per_dataset_table(run: RunData) -> Table | None:
    rows, shown = [], []
    for name in method_order(run.methods):
        per_dataset = get_path(run.evaluation(name, "alpaca_eval") or {}, "per_dataset")
        if not isinstance(per_dataset, dict):
            continue
        for dataset, stats in per_dataset.items():
            rows.append({"method": name, "dataset": dataset, "win_rate": stats.get("win_rate"),
                         "standard_error": stats.get("standard_error"), "n_wins": stats.get("n_wins"),
                         "n_draws": stats.get("n_draws"), "n_total": stats.get("n_total")})
            shown.append({"Method": name, "Source": dataset,
                          "Win rate % ± SE": fmt_pm(stats.get("win_rate"), stats.get("standard_error")),
                          "Wins / draws / total": f"{stats.get('n_wins', DASH)} / {stats.get('n_draws', DASH)} / "
                                                  f"{stats.get('n_total', DASH)}"})
    if not rows:
        return None
    note = "AlpacaEval win rate (%) per source dataset of the instructions, draws count half. " + produced_by(run) + "."
    return _table("alpaca_eval_per_dataset", "AlpacaEval per source", note, rows, shown)


def published_table(published: list[dict], status: str) -> Table:
    """The paper's numbers on their own, marked as published (the main table holds them only on request)."""
    rows = [{**r} for r in published]
    shown = [{"Method": r["method"], "Setting": r.get("setting", DASH), "Table": r.get("table", DASH),
              "MT-Bench turn 1": fmt(r.get("mt_bench_turn_1")), "MT-Bench turn 2": fmt(r.get("mt_bench_turn_2")),
              "MT-Bench average": fmt(r.get("mt_bench_average")),
              "AlpacaEval %": fmt_pm(r.get("alpaca_eval_win_rate"), r.get("alpaca_eval_standard_error"))}
             for r in published]
    note = f"Published, not ours: {status}"
    return _table("published", "Published numbers (reference only)", note, rows, shown)


def all_tables(run: RunData, published: list[dict] | None = None, published_status: str | None = None) -> list[Table]:
    tables = [main_table(run, published)]
    for build in (comparisons_table, memory_table, reward_model_table, pair_table,
                  mt_bench_category_table, alpaca_per_dataset_table):
        table = build(run)
        if table is not None:
            tables.append(table)
    tables.extend(ablation_tables(run))
    if published is not None:
        tables.append(published_table(published, published_status or ""))
    return tables


# ---------------------------------------------------------------- writers


def to_markdown(table: Table) -> str:
    frame = table.display
    if frame.empty:
        return f"### {table.title}\n\n(no rows)\n\n{table.note}\n"
    header = "| " + " | ".join(_md_cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([f"### {table.title}", "", header, rule, *body, "", table.note, ""])


def _md_cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
LATEX_SYMBOLS = {"±": r"$\pm$", "–": "--", "*": r"$^{*}$"}


def latex_escape(text) -> str:
    out = "".join(LATEX_SPECIAL.get(c, c) for c in str(text))
    for symbol, command in LATEX_SYMBOLS.items():
        out = out.replace(symbol, command)
    return out


def to_latex(table: Table) -> str:
    """A booktabs table (needs \\usepackage{booktabs})."""
    frame = table.display
    spec = "l" * min(1, len(frame.columns)) + "r" * max(0, len(frame.columns) - 1)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", f"\\caption{{{latex_escape(table.title)}}}",
             f"\\label{{tab:{table.name}}}", f"\\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(c) for c in frame.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(v) for v in row) + r" \\" for row in frame.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", "", f"\\par\\footnotesize {latex_escape(table.note)}",
              r"\end{table}", ""]
    return "\n".join(lines)


def to_html(table: Table) -> str:
    """An HTML fragment: title, the table (id 'table-<name>'), the note."""
    from html import escape

    body = table.display.to_html(index=False, border=0, classes="report-table", escape=True,
                                 table_id=f"table-{table.name}")
    return (f'<section class="table" id="section-{table.name}">\n<h3>{escape(table.title)}</h3>\n{body}\n'
            f'<p class="note">{escape(table.note)}</p>\n</section>\n')


def to_csv(table: Table) -> str:
    return table.data.to_csv(index=False)
