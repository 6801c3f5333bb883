"""The report's figures (matplotlib, PNG and SVG), built from results.json and stage files only.

Each ``plot_*`` returns a ``Figure`` or None when the run has nothing to show for it; ``all_figures`` saves
them. Figures are built through the object API (no pyplot), so importing this module changes no global
matplotlib state."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib import rc_context
from matplotlib.figure import Figure

from reports.load import RunData, base_name, get_path, number, read_jsonl_rewards
from reports.tables import (
    GIB, cuda_peak, estimated_bytes, method_order, produced_by, selection_threshold, sweep_rows,
)

STYLE = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 9,
         "xtick.labelsize": 9, "ytick.labelsize": 9, "figure.dpi": 110, "savefig.dpi": 110,
         "svg.hashsalt": "rsdpo-harness", "axes.spines.top": False, "axes.spines.right": False}
COLORS = {"sft": "#7f7f7f", "rs": "#1f77b4", "ppo": "#9467bd", "dpo": "#ff7f0e", "dpo-bw": "#8c564b",
          "rsdpo": "#2ca02c"}
EXTRA_COLORS = ["#d62728", "#e377c2", "#17becf", "#bcbd22", "#393b79", "#637939"]


@dataclass
class Plot:
    """A saved figure: file stem, title, caption (what produced it) and the files written."""

    name: str
    title: str
    caption: str
    files: list[Path] = field(default_factory=list)


def color(method: str, index: int = 0) -> str:
    return COLORS.get(base_name(method), EXTRA_COLORS[index % len(EXTRA_COLORS)])


def _new_figure(width: float = 7.5, height: float = 4.5) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _label_methods(ax, names: list[str]) -> None:
    ax.set_xticks(range(len(names)))
    long = max((len(n) for n in names), default=0) > 8
    ax.set_xticklabels(names, rotation=30 if long else 0, ha="right" if long else "center")


# ---------------------------------------------------------------- scores with CIs


def plot_scores(run: RunData) -> Figure | None:
    """Per evaluation: each method's score with its interval (95% CI; AlpacaEval: ±1.96 SE)."""
    panels = []
    specs = (
        ("mt_bench", "MT-Bench average (1-10)", lambda e: (e.get("overall"), get_path(e, "overall_ci.ci_low"),
                                                           get_path(e, "overall_ci.ci_high"))),
        ("alpaca_eval", "AlpacaEval win rate (%)", lambda e: _pm(e.get("win_rate"), e.get("standard_error"))),
        ("heldout_reward", "Held-out reward (RM score)", lambda e: (get_path(e, "reward.mean"),
                                                                    get_path(e, "reward.ci_low"),
                                                                    get_path(e, "reward.ci_high"))),
    )
    for evaluation, label, extract in specs:
        values = {}
        for name in method_order(run.methods):
            stats = run.evaluation(name, evaluation)
            extracted = tuple(number(v) for v in extract(stats)) if stats else (None,)
            if extracted[0] is not None:  # a null score (e.g. no parseable judgment) has no bar
                values[name] = extracted
        if values:
            panels.append((label, values))
    if not panels:
        return None
    fig = _new_figure(4.2 * len(panels) + 1, 4.6)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (label, values) in zip(axes, panels):
        names = list(values)
        means = [values[n][0] for n in names]
        low = [m - (values[n][1] if values[n][1] is not None else m) for n, m in zip(names, means)]
        high = [(values[n][2] if values[n][2] is not None else m) - m for n, m in zip(names, means)]
        ax.bar(range(len(names)), means, color=[color(n, i) for i, n in enumerate(names)],
               yerr=[low, high], capsize=4, edgecolor="black", linewidth=0.5)
        _label_methods(ax, names)
        ax.set_ylabel(label)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Scores per method (bars: mean; whiskers: 95% interval)")
    return fig


def _pm(mean, se):
    mean, se = number(mean), number(se)
    if mean is None:
        return None, None, None
    return (mean, None, None) if se is None else (mean, mean - 1.96 * se, mean + 1.96 * se)


# ---------------------------------------------------------------- MT-Bench radar


def plot_mt_bench_radar(run: RunData) -> Figure | None:
    series = {}
    for name in method_order(run.methods):
        per_category = get_path(run.evaluation(name, "mt_bench") or {}, "per_category")
        if isinstance(per_category, dict) and per_category:
            series[name] = {c: number(v) for c, v in per_category.items()}
    if not series:
        return None
    categories = sorted({c for values in series.values() for c in values})
    angles = np.linspace(0, 2 * np.pi, len(categories), endpoint=False).tolist()
    fig = _new_figure(6.8, 6.2)
    ax = fig.add_subplot(projection="polar")
    for i, (name, values) in enumerate(series.items()):
        points = [values.get(c) if values.get(c) is not None else math.nan for c in categories]
        ax.plot(angles + angles[:1], points + points[:1], color=color(name, i), linewidth=1.8, label=name)
        ax.fill(angles + angles[:1], points + points[:1], color=color(name, i), alpha=0.08)
    ax.set_xticks(angles)
    ax.set_xticklabels(categories)
    ax.set_ylim(0, 10)
    ax.set_yticks([2, 4, 6, 8, 10])
    ax.set_rlabel_position(360 / len(categories) / 2)  # radial labels between two category spokes
    ax.set_title("MT-Bench score per category (1-10)", pad=18)
    ax.legend(loc="upper right", bbox_to_anchor=(1.32, 1.1))
    return fig


# ---------------------------------------------------------------- memory


def plot_memory(run: RunData) -> Figure | None:
    """Peak memory of each method's own training stage: measured (CUDA allocated, else RSS) vs estimated."""
    names, measured, estimated, kinds = [], [], [], set()
    for name in method_order(run.methods):
        entry = run.methods[name]
        profile = entry.get("profile") or {}
        allocated = cuda_peak(profile)
        value = allocated if allocated is not None else number(profile.get("peak_rss_bytes"))
        if value is None:
            continue
        kinds.add("CUDA max allocated" if allocated is not None else "peak RSS (CPU)")
        names.append(name)
        measured.append(value / GIB)
        estimate = estimated_bytes(entry)
        if estimate is None:
            estimate = run.estimate_for(name, name)  # the training stage's phase in `harness profile`'s summary
        estimated.append(estimate / GIB if estimate is not None else math.nan)
    if not names:
        return None
    fig = _new_figure(max(6.0, 1.1 * len(names) + 2), 4.6)
    ax = fig.add_subplot()
    x = np.arange(len(names))
    label = "measured: " + " / ".join(sorted(kinds))
    if not all(math.isnan(v) for v in estimated):
        ax.bar(x - 0.2, measured, width=0.4, color="#4c72b0", label=label)
        ax.bar(x + 0.2, [0 if math.isnan(v) else v for v in estimated], width=0.4, color="#dd8452",
               label="estimated (analytic; missing bars: none recorded)")
    else:
        ax.bar(x, measured, width=0.5, color="#4c72b0", label=label + "; no analytic estimate recorded")
    _label_methods(ax, names)
    ax.set_ylabel("peak memory of the training stage (GiB)")
    ax.set_title("Peak memory per method: measured vs estimated")
    ax.legend(loc="lower left")
    ax.grid(axis="y", alpha=0.3)
    return fig


# ---------------------------------------------------------------- reward distributions


def policy_rewards(run: RunData) -> dict[str, np.ndarray]:
    """Rewards of each policy's held-out samples (heldout_rewards.jsonl of its heldout_reward stage)."""
    out = {}
    for name in method_order(run.methods):
        for stage in run.evaluation_stages(name):
            folder = run.stage_dir(stage)
            if base_name(stage).startswith("heldout_reward") and folder and (folder / "heldout_rewards.jsonl").is_file():
                out[name] = np.array([float(r["reward"]) for r in read_jsonl_rewards(folder / "heldout_rewards.jsonl")])
                break
    return out


def plot_reward_distributions(run: RunData) -> Figure | None:
    rewards = {name: values for name, values in policy_rewards(run).items() if values.size}
    if not rewards:
        return None
    names = list(rewards)
    fig = _new_figure(max(6.0, 1.1 * len(names) + 2), 4.6)
    ax = fig.add_subplot()
    ax.boxplot([rewards[n] for n in names], positions=range(len(names)), widths=0.5, showfliers=False)
    rng = np.random.default_rng(0)  # fixed jitter: the figure is the same each time it is built
    for i, name in enumerate(names):
        jitter = rng.uniform(-0.15, 0.15, size=rewards[name].size)
        ax.scatter(i + jitter, rewards[name], s=10, alpha=0.6, color=color(name, i))
    _label_methods(ax, names)
    ax.set_ylabel("reward-model score of a sample")
    ax.set_title("Rewards of each policy's samples on held-out prompts")
    ax.grid(axis="y", alpha=0.3)
    return fig


# ---------------------------------------------------------------- reward gaps and eta


def sample_gaps(path: Path) -> np.ndarray:
    """Every positive reward gap r_j - r_l between two samples of one prompt (scored_samples.jsonl)."""
    by_prompt: dict[str, list[float]] = {}
    for row in read_jsonl_rewards(path):
        by_prompt.setdefault(str(row.get("prompt_id")), []).append(float(row["reward"]))
    gaps = []
    for values in by_prompt.values():
        r = np.asarray(values)
        diff = r[:, None] - r[None, :]
        gaps.append(diff[diff > 0])
    return np.concatenate(gaps) if gaps else np.array([])


def plot_reward_gaps(run: RunData) -> Figure | None:
    """Histogram of reward gaps between samples of a prompt, with each RS-DPO threshold marked."""
    selections = [n for n in method_order(run.stages) if base_name(n) == "rsdpo"
                  and isinstance(get_path(run.stages[n], "stats.pair_selection"), dict)]
    if not selections:
        return None
    scored = (run.stages[selections[0]].get("inputs") or {}).get("scored_samples")
    folder = run.stage_dir(scored) if scored else None
    fig = _new_figure(7.5, 4.6)
    ax = fig.add_subplot()
    if folder and (folder / "scored_samples.jsonl").is_file():
        gaps = sample_gaps(folder / "scored_samples.jsonl")
        ax.hist(gaps, bins=min(60, max(10, int(np.sqrt(gaps.size)))), color="#4c72b0", alpha=0.8,
                label=f"all {gaps.size} sample pairs with a positive gap")
        source = "all pairs of SFT samples of a prompt"
    else:
        hist = get_path(run.stages[selections[0]], "stats.pair_selection.reward_gap_histogram") or {}
        edges, counts = hist.get("bin_edges") or [], hist.get("counts") or []
        if not counts:
            return None
        ax.stairs(counts, edges, fill=True, color="#4c72b0", alpha=0.8, label="kept pairs (stats histogram)")
        source = "kept pairs only: scored_samples.jsonl is not in the run folder"
    for i, name in enumerate(selections):
        point = run.stages[name].get("point")
        eta, tau = run.setting("rsdpo.eta", point), run.setting("rsdpo.tau", point)
        threshold = selection_threshold(eta, tau)
        if threshold is None:
            continue
        kept = get_path(run.stages[name], "stats.pair_selection.pairs_kept")
        ax.axvline(threshold, color=EXTRA_COLORS[i % len(EXTRA_COLORS)], linestyle="--", linewidth=1.6,
                   label=f"eta={eta:g}, tau={tau:g}: gap > {threshold:.3g} ({kept} kept)")
    ax.set_xlabel(f"reward gap r_j - r_l ({source})")
    ax.set_ylabel("pairs")
    ax.set_title("Reward gaps between samples of a prompt; RS-DPO keeps those right of its line")
    ax.legend(loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    return fig


# ---------------------------------------------------------------- sweeps


SWEEP_METRICS = (
    ("pairs_kept", None, None, "pairs kept"),
    ("heldout_reward", "heldout_reward_ci_low", "heldout_reward_ci_high", "held-out reward"),
    ("mt_bench_average", "mt_bench_ci_low", "mt_bench_ci_high", "MT-Bench average"),
    ("alpaca_eval_win_rate", None, None, "AlpacaEval win rate (%)"),
)


def plot_sweep(run: RunData, key: str) -> Figure | None:
    """Each metric against the swept value; one line per method (and per value of the other swept keys)."""
    rows = [r for r in sweep_rows(run) if r.get(key) is not None]
    metrics = [m for m in SWEEP_METRICS if any(number(r.get(m[0])) is not None for r in rows)]
    if not rows or not metrics:
        return None
    others = [k for k in run.sweep["keys"] if k != key]
    numeric = all(_float(r[key]) is not None for r in rows)
    categories = sorted({str(r[key]) for r in rows}, key=lambda v: (_float(v) is None, _float(v) or 0, v))
    fig = _new_figure(4.0 * len(metrics) + 1, 4.2)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, (metric, low_key, high_key, label) in zip(axes, metrics):
        groups: dict[str, list[dict]] = {}
        for r in rows:
            group = r["method"] + "".join(f", {k}={r[k]}" for k in others)
            groups.setdefault(group, []).append(r)
        for i, (group, members) in enumerate(groups.items()):
            members = [m for m in members if number(m.get(metric)) is not None]
            if not members:
                continue
            members.sort(key=lambda m: _float(m[key]) if numeric else categories.index(str(m[key])))
            x = [_float(m[key]) if numeric else categories.index(str(m[key])) for m in members]
            y = [float(m[metric]) for m in members]
            if low_key and all(number(m.get(low_key)) is not None for m in members):
                err = [[yy - float(m[low_key]) for yy, m in zip(y, members)],
                       [float(m[high_key]) - yy for yy, m in zip(y, members)]]
                ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=color(group, i), label=group)
            else:
                ax.plot(x, y, marker="o", color=color(group, i), label=group)
        if not numeric:
            ax.set_xticks(range(len(categories)))
            ax.set_xticklabels(categories)
        ax.set_xlabel(key)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best")
    fig.suptitle(f"Sweep of {key}")
    return fig


def _float(value) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def plot_rm_accuracy(run: RunData) -> Figure | None:
    """When reward_model.* is swept: each method's score against its reward model's held-out accuracy."""
    if not run.sweep or not any(k.startswith("reward_model.") for k in run.sweep["keys"]):
        return None
    rows = [r for r in sweep_rows(run) if number(r.get("reward_model_heldout_accuracy")) is not None]
    metrics = [m for m in SWEEP_METRICS[1:] if any(number(r.get(m[0])) is not None for r in rows)]
    if not rows or not metrics:
        return None
    fig = _new_figure(4.0 * len(metrics) + 1, 4.2)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, (metric, _, _, label) in zip(axes, metrics):
        methods = sorted({r["method"] for r in rows})
        for i, method in enumerate(methods):
            points = sorted((float(r["reward_model_heldout_accuracy"]), float(r[metric]),
                             ",".join(str(v) for v in run.point_values(r["point"]).values()))
                            for r in rows if r["method"] == method and number(r.get(metric)) is not None)
            if not points:
                continue
            # points, not a line: the reward models differ in a setting, accuracy is only their outcome
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", linestyle="none",
                    color=color(method, i), label=method)
            for x, y, values in points:
                ax.annotate(values, (x, y), fontsize=8, xytext=(4, 3), textcoords="offset points")
        ax.set_xlabel("reward model held-out accuracy")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best")
    fig.suptitle(f"Scores against reward-model accuracy (labels: {', '.join(run.sweep['keys'])})")
    return fig


# ---------------------------------------------------------------- paired differences


def plot_comparisons(run: RunData) -> Figure | None:
    comparisons = {e: p for e, p in (run.results.get("comparisons") or {}).items() if p}
    if not comparisons:
        return None
    fig = _new_figure(max(7.0, 4.6 * len(comparisons) + 1), max(3.0, 0.45 * max(len(p) for p in comparisons.values()) + 1.5))
    axes = fig.subplots(1, len(comparisons), squeeze=False)[0]
    for ax, (evaluation, pairs) in zip(axes, comparisons.items()):
        labels = list(pairs)
        for y, label in enumerate(labels):
            diff = pairs[label]
            significant = bool(diff.get("significant", diff["ci_low"] > 0 or diff["ci_high"] < 0))
            ax.errorbar([diff["mean"]], [y], xerr=[[diff["mean"] - diff["ci_low"]], [diff["ci_high"] - diff["mean"]]],
                        fmt="o", capsize=3, color="#c44e52" if significant else "#4c72b0",
                        markerfacecolor="#c44e52" if significant else "white")
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels)
        ax.invert_yaxis()
        ax.set_xlabel(f"{evaluation}: paired difference (95% CI)")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Paired differences (filled red: the 95% interval excludes 0)")
    return fig


# ---------------------------------------------------------------- saving


def all_figures(run: RunData, folder: Path) -> list[Plot]:
    """Build every figure the run has data for; write each as PNG and SVG into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    origin = produced_by(run)
    specs = [
        ("scores", "Scores with confidence intervals", plot_scores),
        ("comparisons", "Paired differences", plot_comparisons),
        ("mt_bench_radar", "MT-Bench per category", plot_mt_bench_radar),
        ("memory", "Peak memory: measured vs estimated", plot_memory),
        ("reward_distributions", "Reward distributions of each policy's samples", plot_reward_distributions),
        ("reward_gaps", "Reward gaps and the eta threshold", plot_reward_gaps),
        ("rm_accuracy", "Scores against reward-model accuracy", plot_rm_accuracy),
    ]
    for key in (run.sweep or {}).get("keys", []):
        specs.append((f"sweep_{''.join(c if c.isalnum() or c in '-_' else '_' for c in key)}",
                      f"Sweep of {key}", lambda r, k=key: plot_sweep(r, k)))
    plots = []
    with rc_context(STYLE):
        for name, title, build in specs:
            fig = build(run)
            if fig is None:
                continue
            plot = Plot(name, title, origin)
            for ext in ("png", "svg"):
                path = folder / f"{name}.{ext}"
                fig.savefig(path, format=ext, metadata={"Date": None} if ext == "svg" else None)
                plot.files.append(path)
            plots.append(plot)
    return plots
