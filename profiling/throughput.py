"""Throughput of a stage, derived from the stats it returned (plain dicts; nothing of the harness imported).

Known stat keys: ``generated_tokens`` (or ``generated_tokens_this_attempt``) with ``tokens_per_second``
when the stage timed generation itself; ``train_samples_per_second``, ``train_runtime_s`` and
``train_tokens`` (or TRL's cumulative ``num_tokens`` in the training log); ``judge_requests`` with
``judge_seconds``. A rate divided by the stage's wall time includes model loading: its ``*_source`` says so.
"""

from __future__ import annotations


def _first(stats: dict, *keys: str):
    for key in keys:
        value = stats.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    return None


def _rate(count: float, seconds: float | None) -> float | None:
    return round(count / seconds, 3) if seconds and seconds > 0 else None


def train_tokens_from_log(log: list[dict] | None) -> int | None:
    """Tokens seen in training: TRL logs a cumulative ``num_tokens`` (non-padding) with each step."""
    counts = [entry["num_tokens"] for entry in log or () if isinstance(entry.get("num_tokens"), (int, float))]
    return int(max(counts)) if counts else None


def stage_throughput(stats: dict, wall_s: float, train_log: list[dict] | None = None) -> dict:
    """Generation tokens/s, training samples/s and tokens/s, judge requests/s: whichever the stats allow."""
    out: dict = {}
    generated = _first(stats, "generated_tokens", "generated_tokens_this_attempt")
    if generated is not None:
        out["generated_tokens"] = generated
        timed = _first(stats, "tokens_per_second")
        out["generation_tokens_per_s"] = round(timed, 3) if timed is not None else _rate(generated, wall_s)
        out["generation_tokens_per_s_source"] = "stage's own timing" if timed is not None else "stage wall time"
    samples_per_s = _first(stats, "train_samples_per_second")
    if samples_per_s is not None:
        out["train_samples_per_s"] = samples_per_s
    train_tokens = _first(stats, "train_tokens")
    if train_tokens is None:
        train_tokens = train_tokens_from_log(train_log)
    if train_tokens is not None:
        runtime = _first(stats, "train_runtime_s")
        out["train_tokens"] = train_tokens
        out["train_tokens_per_s"] = _rate(train_tokens, runtime or wall_s)
        out["train_tokens_per_s_source"] = "trainer runtime" if runtime else "stage wall time"
    requests = _first(stats, "judge_requests")
    if requests is not None:
        seconds = _first(stats, "judge_seconds")
        out["judge_requests"] = requests
        out["judge_requests_per_s"] = _rate(requests, seconds or wall_s)
        out["judge_requests_per_s_source"] = "judge timing" if seconds else "stage wall time"
    return out
