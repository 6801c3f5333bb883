"""Run folders for the report tests, laid out exactly as results_schema says `harness run` writes them.

The numbers are arbitrary but fixed (a seeded generator); the tests read them back from results.json and
compare the report's cells against them, so nothing here is a hard-coded expectation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")
JUDGE = {"model": "gpt-4-0613", "base_url": "https://api.openai.com/v1", "prompt_version": "single-v1", "repeats": 1}
GIB = 1024 ** 3
CPU = {"skipped": "no CUDA device (torch.cuda.is_available() is False)"}


def _profile(wall: float, rss_gib: float, cuda_gib: float | None = None, estimate_gib: float | None = None) -> dict:
    profile = {"wall_s": wall, "peak_rss_bytes": int(rss_gib * GIB), "started": "2026-12-04T10:00:00+00:00",
               "finished": "2026-12-04T10:01:00+00:00", "resumed": False, "device": "cpu" if cuda_gib is None else "cuda",
               "cuda": CPU if cuda_gib is None else {"devices": [
                   {"device": 0, "name": "NVIDIA H200", "max_memory_allocated_bytes": int(cuda_gib * GIB),
                    "max_memory_reserved_bytes": int(cuda_gib * 1.1 * GIB)}]}}
    if estimate_gib is not None:
        profile["estimate"] = [{"method": "x", "phase": "training", "peak_bytes": int(estimate_gib * GIB)},
                               {"method": "x", "phase": "sampling", "peak_bytes": int(estimate_gib * 0.5 * GIB)}]
    return profile


def _mt_bench(rng) -> dict:
    turn_1, turn_2 = round(float(rng.uniform(4, 7)), 4), round(float(rng.uniform(3, 6)), 4)
    overall = round((turn_1 + turn_2) / 2, 4)
    return {"turn_1": turn_1, "turn_2": turn_2, "overall": overall,
            "overall_ci": {"mean": overall, "ci_low": overall - 0.31, "ci_high": overall + 0.29, "level": 0.95, "n": 80},
            "per_category": {c: round(float(rng.uniform(2, 9)), 3) for c in CATEGORIES},
            "questions": 80, "question_ids": list(range(81, 161)), "subset": "all 80", "judgments": 160,
            "parse_failures": 1, "parse_failure_rate": 1 / 160, "failed_calls": 0, "judge": JUDGE,
            "reference_answers": "gpt-4-0125-preview", "mean_answer_tokens": 212.5}


def _alpaca(rng) -> dict:
    per_dataset = {}
    for name, n in (("helpful_base", 129), ("koala", 156), ("oasst", 188)):
        wins = int(rng.integers(20, n - 20))
        per_dataset[name] = {"win_rate": round(100 * wins / n, 3), "standard_error": round(float(rng.uniform(2, 4)), 3),
                             "n_wins": wins, "n_wins_base": n - wins, "n_draws": 0, "n_total": n}
    wins = sum(d["n_wins"] for d in per_dataset.values())
    total = sum(d["n_total"] for d in per_dataset.values())
    return {"win_rate": round(100 * wins / total, 4), "standard_error": round(float(rng.uniform(1, 2)), 4),
            "n_wins": wins, "n_wins_base": total - wins, "n_draws": 0, "n_total": total,
            "length_controlled_win_rate": None, "length_controlled": "not available: fewer than 805 instructions",
            "per_dataset": per_dataset, "reference": "gpt4_1106_preview", "judge": JUDGE, "avg_length": 1103.2,
            "failed_calls": 0}


def _heldout(rng, prompts: int) -> dict:
    mean = round(float(rng.normal(0.5, 0.5)), 5)
    return {"reward": {"mean": mean, "ci_low": mean - 0.2, "ci_high": mean + 0.21, "level": 0.95, "n": prompts},
            "prompts": prompts, "samples_per_prompt": 1, "mean_token_count": 96.0}


def make_run(root: Path, sweep: dict[str, list[str]] | None = None, evaluations=("heldout_reward", "mt_bench", "alpaca_eval"),
             methods=("rs", "ppo", "dpo", "rsdpo"), seed: int = 0) -> Path:
    """Write a finished run folder (results.json, config.yaml, manifest.json, stage files) into ``root``.

    sweep: swept keys -> values ('rsdpo.eta' re-runs rsdpo; 'reward_model.*' re-runs everything that reads
    the reward model), forming a grid as `harness run --set k=a,b` does."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    keys = list(sweep or {})
    grid = [{}]
    for key in keys:
        grid = [{**g, key: v} for g in grid for v in sweep[key]]
    points = [",".join(f"{k}={v}" for k, v in g.items()) for g in grid] if keys else [None]
    prompts, k = 6, 4
    stages: dict[str, dict] = {}
    methods_out: dict[str, dict] = {}

    def stage(name, stats, profile, inputs, files=None, policy=False, point=None):
        folder = f"stages/{name}-{len(stages):012x}"
        (root / folder).mkdir(parents=True, exist_ok=True)
        for file_name, rows in (files or {}).items():
            (root / folder / file_name).write_text("".join(json.dumps(r) + "\n" for r in rows))
        (root / folder / "stats.json").write_text(json.dumps(stats))
        (root / folder / "profile.json").write_text(json.dumps(profile))
        (root / folder / "DONE").write_text("")
        entry = {"key": f"{len(stages):012x}", "dir": folder, "stats": stats, "profile": profile,
                 "point": point, "inputs": inputs}
        stages[name] = entry
        if policy:
            (root / folder / "policy").mkdir()
            (root / folder / "policy" / "config.json").write_text("{}")
            methods_out[name] = {**entry, "policy": f"{folder}/policy", "evaluations": {}}
        return name

    def evaluate(policy: str, point):
        for evaluation in evaluations:
            if evaluation == "heldout_reward":
                stats = _heldout(rng, prompts)
                rows = [{"prompt_id": f"h{p}", "sample_id": 0, "text": "...", "token_count": 96,
                         "reward": float(rng.normal(stats["reward"]["mean"], 0.4))} for p in range(prompts)]
                files = {"heldout_rewards.jsonl": rows}
            elif evaluation == "mt_bench":
                stats, files = _mt_bench(rng), {}
            else:
                stats, files = _alpaca(rng), {}
            name = stage(f"{evaluation}@{policy}", stats, _profile(30.0, 2.0),
                         {"policy": policy}, files, point=point)
            methods_out[policy]["evaluations"][evaluation] = stats

    for data in ("demonstrations", "preferences", "prompts", "heldout_prompts"):
        stage(data, {"records": 16, "source": "seed", "left_out": {}, "categories": {"writing": 16}},
              _profile(0.1, 0.2), {})
    stage("sft", {"train_records": 160, "global_step": 20, "train_loss": 2.2}, _profile(170.0, 5.5, 14.0, 13.0),
          {"demonstrations": "demonstrations"}, policy=True)
    rm_swept = any(key.startswith("reward_model.") for key in keys)
    rm_points = points if rm_swept else [None]
    for rm_point in rm_points:
        suffix = f"[{rm_point}]" if rm_point else ""
        rm = stage(f"reward_model{suffix}", {"train_pairs": 150, "heldout_pairs": 50,
                                             "heldout_accuracy": round(float(rng.uniform(0.55, 0.75)), 4),
                                             "heldout_mean_margin": 0.31, "reward_model": "reward_model"},
                   _profile(80.0, 6.0), {"preferences": "preferences"}, point=rm_point)
        if rm_point is None or rm_point == rm_points[0]:
            samples = stage("samples", {"prompts": prompts, "k": k, "samples": prompts * k}, _profile(60.0, 3.0),
                            {"sft": "sft", "prompts": "prompts"})
        rows = [{"prompt_id": f"p{p}", "sample_id": j, "text": "...", "reward": float(rng.normal(0, 1.5))}
                for p in range(prompts) for j in range(k)]
        stage(f"scored_samples{suffix}", {"samples": prompts * k, "reward_mean": float(np.mean([r["reward"] for r in rows])),
                                           "reward_std": float(np.std([r["reward"] for r in rows]))},
              _profile(20.0, 3.5), {"samples": samples, "reward_model": rm}, {"scored_samples.jsonl": rows},
              point=rm_point)
    evaluate("sft", None)

    for method in methods:
        swept_here = rm_swept or any(key.startswith(f"{method}.") for key in keys)
        for point in (points if swept_here else [None]):
            name = f"{method}[{point}]" if point else method
            suffix = f"[{point}]" if rm_swept and point else ""
            scored, rm = f"scored_samples{suffix}", f"reward_model{suffix}"
            if method == "dpo":
                stats = {"train_pairs": 200, "train_loss": 0.68}
                inputs = {"sft": "sft", "preferences": "preferences"}
            elif method == "rs":
                stats = {"selection": "best-of-k", "selected_samples": prompts, "train_records": prompts}
                inputs = {"sft": "sft", "scored_samples": scored}
            elif method == "ppo":
                stats = {"steps": 10, "episodes": 80, "last_kl": 0.28}
                inputs = {"sft": "sft", "reward_model": rm, "prompts": "prompts"}
            else:
                kept = int(rng.integers(10, prompts * k * (k - 1)))
                stats = {"pair_selection": {"pairs_kept": kept, "prompts": prompts, "prompts_without_pairs": 1,
                                            "pairs_per_prompt": {"mean": kept / prompts, "min": 0, "max": 9,
                                                                 "histogram": {"0": 1}},
                                            "reward_gap_histogram": {"bin_edges": [0.0, 1.0, 2.0], "counts": [3, 4]},
                                            "max_possible_pairs": prompts * k * (k - 1)},
                         "train_pairs": kept, "train_loss": 0.69}
                inputs = {"sft": "sft", "scored_samples": scored}
            stage(name, stats, _profile(120.0, 8.0, 20.0 if method == "ppo" else None,
                                        18.0 if method == "ppo" else None), inputs, policy=True, point=point)
            evaluate(name, point)

    comparisons = {}
    for evaluation in evaluations:
        for baseline in ("sft", "rsdpo"):
            if baseline not in methods_out:
                continue
            for other in methods_out:
                if other == baseline or f"{baseline} - {other}" in comparisons.get(evaluation, {}):
                    continue
                mean = float(rng.normal(0, 0.5))
                half = float(rng.uniform(0.1, 0.8))
                comparisons.setdefault(evaluation, {})[f"{other} - {baseline}"] = {
                    "mean": mean, "ci_low": mean - half, "ci_high": mean + half, "level": 0.95, "n": 80,
                    "significant": bool(mean - half > 0 or mean + half < 0)}

    results = {
        "run": root.name,
        "produced_by": {"profile": "fixture", "model": {"source": "tiny-random-llama"},
                        "data": {"prompts": {"path": "seed", "limit": 8}}, "seed": 0, "device": "cpu",
                        "versions": {"python": "3.11.7", "rsdpo-harness": "0.1.0", "torch": "2.13.0+cpu"},
                        "git": {"commit": "0123456789abcdef", "dirty": False}, "config": "config.yaml"},
        "methods": methods_out,
        "stages": stages,
        "sweep": {"keys": keys, "points": [{"label": label, "values": values} for label, values in zip(points, grid)]}
        if keys else None,
        "comparisons": comparisons,
    }
    (root / "results.json").write_text(json.dumps(results, indent=1))
    (root / "config.yaml").write_text(yaml.safe_dump({"profile": "fixture", "seed": 0,
                                                      "rsdpo": {"eta": 0.85, "tau": 1.0, "beta": 0.1},
                                                      "reward_model": {"learning_rate": 1e-5}}))
    (root / "manifest.json").write_text(json.dumps({"run": root.name, "harness_environment": {
        "argv": ["harness", "run", "--methods", ",".join(methods)], "hardware": {"cpu_count": 2}}}))
    return root
