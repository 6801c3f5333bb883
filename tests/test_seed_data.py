"""The seed dataset shipped in the package: the offline default of the smoke and quick profiles."""

from __future__ import annotations

from collections import Counter

import pytest

from harness.data import load_records

CATEGORIES = {"writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"}


@pytest.mark.parametrize(("kind", "per_category"), [("demonstration", 20), ("preference", 25), ("prompt", 10)])
def test_seed_files_cover_the_eight_mt_bench_categories_evenly(kind, per_category):
    records = load_records(kind, "seed")
    assert Counter(r["category"] for r in records) == {c: per_category for c in CATEGORIES}
    assert len({r["id"] for r in records}) == len(records)


def test_held_out_prompts_are_held_out():
    def first_user_turn(messages):
        return messages[0]["content"].strip().lower()

    training = {first_user_turn(r["messages"]) for r in load_records("demonstration", "seed")}
    training |= {first_user_turn(r["prompt"]) for r in load_records("preference", "seed")}
    held_out = [first_user_turn(r["prompt"]) for r in load_records("prompt", "seed")]
    assert not training.intersection(held_out)


def test_seed_preferences_differ_between_chosen_and_rejected():
    pairs = load_records("preference", "seed")
    assert all(p["chosen"][0]["content"] != p["rejected"][0]["content"] for p in pairs)
    # Not simply "longer wins": a reward model must look at content.
    assert sum(len(p["rejected"][0]["content"]) > len(p["chosen"][0]["content"]) for p in pairs) >= 20
