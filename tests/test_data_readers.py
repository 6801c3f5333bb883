"""Readers of public preference and chat data: real HH-RLHF and OpenAssistant files, fixtures for the rest."""

from __future__ import annotations

import gzip
import json
import sys
import types
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.data import DataError, load_records, read_hh_rlhf, read_internal, read_oasst, read_webgpt, readers

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HH_SPLITS = ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled")
OASST_TREES = SHARED_DATA / "oasst" / "en_100_tree.jsonl.gz"

needs_shared_data = pytest.mark.skipif(
    not (SHARED_DATA / "hh_rlhf").is_dir() or not OASST_TREES.is_file(),
    reason=f"the shared test data is not at {SHARED_DATA} (HH-RLHF test splits and OpenAssistant trees)",
)


def write_jsonl(path: Path, rows: list) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    return path


def write_json(path: Path, rows: list) -> Path:
    text = json.dumps(rows, indent=1)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def write_parquet(path: Path, rows: list) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def hh(*turns: str) -> str:
    """An HH transcript of alternating Human / Assistant turns."""
    return "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {turn}" for i, turn in enumerate(turns))


def data_error(call, *args) -> str:
    with pytest.raises(DataError) as caught:
        call(*args)
    message = str(caught.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------------------------------------
# Anthropic HH-RLHF, the four real test splits


@pytest.fixture(scope="module")
def hh_splits():
    return {split: read_hh_rlhf(SHARED_DATA / "hh_rlhf" / split / "test.jsonl.gz") for split in HH_SPLITS}


@needs_shared_data
def test_hh_rlhf_test_splits_parse_into_pairs_whose_final_replies_differ(hh_splits):
    kept = {split: len(records) for split, records in hh_splits.items()}
    assert kept == {
        "harmless-base": 2312,
        "helpful-base": 2352,
        "helpful-online": 1135,
        "helpful-rejection-sampled": 2717,
    }
    # 36 pairs have byte-identical chosen and rejected transcripts: they carry no preference, so they are left out.
    skipped = {split: records.skipped for split, records in hh_splits.items()}
    assert skipped == {
        "harmless-base": {},
        "helpful-base": {"identical replies": 2},
        "helpful-online": {"identical replies": 2},
        "helpful-rejection-sampled": {"identical replies": 32},
    }
    assert sum(kept.values()) + 36 == 8552
    pairs = [pair for records in hh_splits.values() for pair in records]
    assert all(pair["chosen"][0]["content"] != pair["rejected"][0]["content"] for pair in pairs)
    assert len({pair["id"] for pair in pairs}) == len(pairs)
    assert sum(len(pair["prompt"]) > 1 for pair in pairs) == 5905
    assert max(len(pair["prompt"]) for pair in pairs) == 49
    for pair in pairs:
        roles = [message["role"] for message in pair["prompt"]]
        assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"]


@needs_shared_data
def test_hh_rlhf_quirks_are_kept_as_the_raters_saw_them(hh_splits):
    pairs = {pair["id"]: pair for records in hh_splits.values() for pair in records}
    replies = [pair[side][0]["content"] for pair in pairs.values() for side in ("chosen", "rejected")]
    assert replies.count("") == 11  # "Assistant:" with nothing after it
    # A reply that wrote "\n\nAssistant:" itself stays one reply instead of becoming a second turn.
    drag = pairs["harmless-base/test:1255"]
    assert drag["chosen"][0]["content"].startswith("No. Men who impersonate stereotypical women are called drag kings.")
    assert "\n\nAssistant:  I think they call them that" in drag["chosen"][0]["content"]
    assert drag["prompt"][-1] == {"role": "user", "content": "Isn't that drag kings?"}
    # Two rejected replies go on to write a Human turn of their own; it stays part of the reply.
    mexico = pairs["helpful-online/test:786"]
    assert mexico["rejected"][0]["content"] == mexico["chosen"][0]["content"] + (
        "\n\nHuman:  Thanks, this all sounds really great.  Do you have any additional recommendations or advice"
        " to offer for a vacation in Mexico?"
    )
    assert pairs["helpful-online/test:786"]["source"] == "hh-rlhf:helpful-online/test.jsonl.gz"


@needs_shared_data
def test_hh_rlhf_gives_demonstrations_and_distinct_prompts():
    path = SHARED_DATA / "hh_rlhf" / "helpful-base" / "test.jsonl.gz"
    pairs = read_hh_rlhf(path)
    demonstrations = load_records("demonstration", path)
    assert [d["messages"] for d in demonstrations] == [p["prompt"] + p["chosen"] for p in pairs]
    prompts = load_records("prompt", SHARED_DATA / "hh_rlhf" / "harmless-base" / "test.jsonl.gz", limit=5000)
    assert len(prompts) == 2310 and prompts.skipped == {"repeated prompts": 2}
    assert load_records("preference", path, limit=3) == pairs[:3]


def test_hh_rlhf_splitting_rules(tmp_path):
    rows = [
        {"chosen": hh("Hi", "Hello", "Bye", "See you"), "rejected": hh("Hi", "Hello", "Bye", "Go away")},
        {"chosen": "Human: no blank line\n\nAssistant: a", "rejected": "Human: no blank line\n\nAssistant:"},
        {"chosen": hh("Q", "same"), "rejected": hh("Q", "same")},
        {"chosen": hh("Q", "A1", "Q2", "B"), "rejected": hh("Q", "A2", "Q2", "C")},
        {"chosen": hh("Q", "A", "Q2"), "rejected": hh("Q", "A", "Q2", "B")},
        {"chosen": hh("Q"), "rejected": hh("Q", "A")},
    ]
    records = read_hh_rlhf(write_jsonl(tmp_path / "rules.jsonl", rows))
    assert [r["id"] for r in records] == [f"{tmp_path.name}/rules:1", f"{tmp_path.name}/rules:2"]
    assert records[0]["prompt"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
    ]
    assert records[0]["chosen"] == [{"role": "assistant", "content": "See you"}]
    assert records[1]["rejected"] == [{"role": "assistant", "content": ""}]
    assert records.skipped == {
        "identical replies": 1,
        "transcripts differ before the final reply": 1,
        "a transcript lacks the final assistant reply": 1,
        "a transcript has no assistant reply": 1,
    }


def test_hh_rlhf_malformed_files(tmp_path):
    good = {"chosen": hh("Q", "A"), "rejected": hh("Q", "B")}
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text(json.dumps(good) + '\n{"chosen": "x",\n')
    assert data_error(read_hh_rlhf, bad_json) == (
        f"{bad_json}, record 2: line 2 is not valid JSON: Expecting property name enclosed in double quotes (column 16)"
    )
    missing = write_jsonl(tmp_path / "missing.jsonl.gz", [good, {"chosen": hh("Q", "A")}])
    assert data_error(read_hh_rlhf, missing) == f"{missing}, record 2, field 'rejected': missing"
    wrong = write_jsonl(tmp_path / "wrong.jsonl", [good, good, {"chosen": hh("Q", "A"), "rejected": 3}])
    assert data_error(read_hh_rlhf, wrong) == f"{wrong}, record 3, field 'rejected': expected a string, found int"
    no_marker = write_jsonl(tmp_path / "plain.jsonl", [{"chosen": "Q: hi", "rejected": hh("Q", "B")}])
    assert data_error(read_hh_rlhf, no_marker) == (
        f"{no_marker}, record 1, field 'chosen': expected a transcript that starts with \"\\n\\nHuman: \""
    )
    not_object = write_jsonl(tmp_path / "list.jsonl", [["chosen", "rejected"]])
    assert data_error(read_hh_rlhf, not_object) == f"{not_object}, record 1: expected a JSON object, found a list"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert data_error(read_hh_rlhf, empty) == f"{empty}: no records"
    assert data_error(read_hh_rlhf, tmp_path / "absent.jsonl") == f"{tmp_path / 'absent.jsonl'}: no such file"


# ---------------------------------------------------------------------------------------------------------------
# OpenAssistant trees, nested and flat


@pytest.fixture(scope="module")
def oasst_trees() -> list[dict]:
    with gzip.open(OASST_TREES, "rt") as f:
        return [json.loads(line) for line in f]


def all_messages(message: dict, parent_id=None):
    """The messages of a nested tree as rows of a flat table, like OpenAssistant/oasst1's."""
    yield {"rank": None, **{k: v for k, v in message.items() if k != "replies"}, "parent_id": parent_id}
    for reply in message.get("replies", []):
        yield from all_messages(reply, message["message_id"])


@needs_shared_data
def test_oasst_trees_give_ranked_pairs_and_best_path_demonstrations(oasst_trees):
    pairs, demonstrations = read_oasst(OASST_TREES)
    messages = {m["message_id"]: m for tree in oasst_trees for m in all_messages(tree["prompt"])}
    groups = [
        [r for r in parent.get("replies", []) if r.get("rank") is not None]
        for tree in oasst_trees
        for parent in _walk(tree["prompt"])
    ]
    groups = [group for group in groups if len(group) >= 2]
    assert len(groups) == 212  # as the data README says
    assert len(pairs) == sum(len(group) * (len(group) - 1) // 2 for group in groups) == 754
    assert len({json.dumps(p["prompt"]) for p in pairs}) == 212
    for pair in pairs:
        better, worse = pair["id"].split(">")
        assert messages[better]["rank"] < messages[worse]["rank"]
        assert messages[better]["parent_id"] == messages[worse]["parent_id"]
        assert pair["chosen"][0]["content"] == messages[better]["text"]
        assert pair["rejected"][0]["content"] == messages[worse]["text"]
        assert pair["prompt"][-1]["content"] == messages[messages[better]["parent_id"]]["text"]
        assert pair["source"] == "oasst:oasst/en_100_tree.jsonl.gz"
    assert pairs.skipped == {}

    # Demonstrations follow the best reply at each level: rank 0, or a lone reply that was never ranked.
    assert len(demonstrations) == 101
    assert sorted(len(d["messages"]) for d in demonstrations) == [2] * 55 + [4] * 46
    for demonstration in demonstrations:
        assert demonstration["messages"][-1]["role"] == "assistant"
        assert demonstration["id"] in messages
    best = [m for m in messages.values() if m["role"] == "assistant" and m.get("rank") == 0]
    assert {d["messages"][1]["content"] for d in demonstrations} <= {m["text"] for m in best}
    assert len(load_records("prompt", OASST_TREES)) == 212


def _walk(message: dict):
    yield message
    for reply in message.get("replies", []):
        yield from _walk(reply)


@needs_shared_data
def test_oasst_flat_table_gives_the_same_records_as_the_nested_trees(oasst_trees, tmp_path):
    rows = [
        {**m, "message_tree_id": tree["message_tree_id"], "emojis": None, "model_name": m.get("model_name")}
        for tree in oasst_trees
        for m in all_messages(tree["prompt"])
    ]
    flat_parquet = write_parquet(tmp_path / "oasst1.parquet", rows)
    flat_jsonl = write_jsonl(tmp_path / "oasst1.jsonl", rows[::-1])  # children before parents, order reversed
    nested = read_oasst(OASST_TREES)
    without_source = lambda records: [{k: v for k, v in r.items() if k != "source"} for r in records]  # noqa: E731
    by_id = lambda records: sorted(without_source(records), key=lambda r: r["id"])  # noqa: E731
    for flat in (read_oasst(flat_parquet), read_oasst(flat_jsonl)):
        assert by_id(flat[0]) == by_id(nested[0])
        assert by_id(flat[1]) == by_id(nested[1])
    assert without_source(read_oasst(flat_parquet)[0]) == without_source(nested[0])
    assert load_records("preference", flat_parquet)[0]["source"] == f"oasst:{tmp_path.name}/oasst1.parquet"


def test_oasst_skips_deleted_messages_and_messages_without_parent(tmp_path):
    def message(message_id, parent_id, role, rank=None, deleted=False):
        return dict(message_id=message_id, parent_id=parent_id, role=role, rank=rank, deleted=deleted,
                    text=f"text of {message_id}", lang="en")  # fmt: skip

    table = [
        message("q", None, "prompter"),
        message("a0", "q", "assistant", 0),
        message("a1", "q", "assistant", 1, deleted=True),
        message("a2", "q", "assistant", 2),
        message("a3", "q", "assistant", 3),
        message("f1", "a1", "prompter"),  # under a deleted reply
        message("stray", "gone", "assistant", 0),  # its parent is not in the table
    ]
    pairs, demonstrations = read_oasst(write_jsonl(tmp_path / "flat.jsonl", table))
    assert [p["id"] for p in pairs] == ["a0>a2", "a0>a3", "a2>a3"]
    assert pairs.skipped == {"deleted messages and their replies": 2, "messages whose parent is missing": 1}
    assert [d["messages"] for d in demonstrations] == [
        [{"role": "user", "content": "text of q"}, {"role": "assistant", "content": "text of a0"}]
    ]
    tree = {"message_tree_id": "t", "prompt": {**table[0], "replies": [{**m, "replies": []} for m in table[1:5]]}}
    tree["prompt"]["replies"][1]["replies"] = [{**table[5], "replies": []}]
    nested_pairs, _ = read_oasst(write_jsonl(tmp_path / "tree.jsonl", [tree]))
    assert [p["id"] for p in nested_pairs] == ["a0>a2", "a0>a3", "a2>a3"]
    assert nested_pairs.skipped == {"deleted messages and their replies": 2}


def test_oasst_malformed_files(tmp_path):
    reply = {"message_id": "a", "role": "assistant", "text": "hi", "rank": 0}
    tree = {"message_tree_id": "t", "prompt": {"message_id": "q", "role": "prompter", "text": "q", "replies": [reply]}}
    bad_json = tmp_path / "trees.jsonl"
    bad_json.write_text(json.dumps(tree) + "\n\n" + json.dumps(tree)[:-1] + "\n")
    assert data_error(read_oasst, bad_json) == (
        f"{bad_json}, record 3: line 3 is not valid JSON: Expecting ',' delimiter (column {len(json.dumps(tree))})"
    )
    no_text = {**tree, "prompt": {**tree["prompt"], "replies": [{k: v for k, v in reply.items() if k != "text"}]}}
    missing = write_jsonl(tmp_path / "missing.jsonl", [tree, no_text])
    assert data_error(read_oasst, missing) == f"{missing}, record 2, field 'prompt.replies[0].text': missing"
    bad_rank = {**tree, "prompt": {**tree["prompt"], "replies": [{**reply, "rank": "first"}]}}
    wrong = write_jsonl(tmp_path / "wrong.jsonl.gz", [bad_rank])
    assert data_error(read_oasst, wrong) == (
        f"{wrong}, record 1, field 'prompt.replies[0].rank': expected a number or null, found a string"
    )
    bad_role = write_jsonl(
        tmp_path / "role.jsonl", [{"message_id": "q", "parent_id": None, "role": "user", "text": ""}]
    )
    assert (
        data_error(read_oasst, bad_role)
        == f"{bad_role}, record 1, field 'role': expected prompter or assistant, found 'user'"
    )
    flat = write_parquet(tmp_path / "flat.parquet", [{"message_id": "q", "parent_id": None, "role": "prompter"}])
    assert data_error(read_oasst, flat) == f"{flat}, record 1, field 'text': missing"
    empty = write_json(tmp_path / "empty.json", [])
    assert data_error(read_oasst, empty) == f"{empty}: no records"


# ---------------------------------------------------------------------------------------------------------------
# OpenAI WebGPT comparisons (fields as on the hub: openai/webgpt_comparisons)


def webgpt_row(question: str, answers: tuple[str, str], scores: tuple[float, float]) -> dict:
    quotes = {"title": ["A page"], "extract": ["Some text."]}
    return {
        "question": {"dataset": "eli5", "id": question, "full_text": question},
        "quotes_0": quotes, "answer_0": answers[0], "tokens_0": [], "score_0": scores[0],
        "quotes_1": quotes, "answer_1": answers[1], "tokens_1": [], "score_1": scores[1],
    }  # fmt: skip


WEBGPT_ROWS = [
    webgpt_row("Why is the sky blue?", ("Rayleigh scattering [1].", "Because it is."), (1.0, -1.0)),
    webgpt_row("Why do cats purr?", ("No idea.", "To communicate [1]."), (-0.5, 0.5)),
    webgpt_row("What is 2+2?", ("4", "Four"), (0.0, 0.0)),
    webgpt_row("Is water wet?", ("Yes.", "No."), (0, 1)),
]


@pytest.mark.parametrize("name", ["webgpt.jsonl", "webgpt.json.gz", "webgpt.parquet"])
def test_webgpt_prefers_the_higher_score_and_drops_ties(tmp_path, name):
    writer = {".jsonl": write_jsonl, ".gz": write_json, ".parquet": write_parquet}[Path(name).suffix]
    path = writer(tmp_path / name, WEBGPT_ROWS)
    records = read_webgpt(path)
    assert [(r["prompt"][0]["content"], r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in records] == [
        ("Why is the sky blue?", "Rayleigh scattering [1].", "Because it is."),
        ("Why do cats purr?", "To communicate [1].", "No idea."),
        ("Is water wet?", "No.", "Yes."),
    ]
    assert records.skipped == {"tied scores": 1}
    assert [r["id"] for r in records] == [f"{tmp_path.name}/webgpt:{n}" for n in (1, 2, 4)]
    assert records[0]["source"] == f"webgpt:{tmp_path.name}/{name}"
    assert load_records("preference", path) == records
    assert [p["prompt"] for p in load_records("prompt", path, limit=2)] == [r["prompt"] for r in records[:2]]


def test_webgpt_malformed_files(tmp_path):
    row = WEBGPT_ROWS[0]
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("[\n" + json.dumps(row) + ",\n]")
    assert data_error(read_webgpt, bad_json) == f"{bad_json}: not valid JSON: Expecting value (line 3, column 1)"
    missing = write_json(tmp_path / "missing.json", [row, {k: v for k, v in row.items() if k != "score_1"}])
    assert data_error(read_webgpt, missing) == f"{missing}, record 2, field 'score_1': missing"
    wrong = write_jsonl(tmp_path / "wrong.jsonl", [{**row, "question": {"full_text": ["Why?"]}}])
    assert (
        data_error(read_webgpt, wrong)
        == f"{wrong}, record 1, field 'question.full_text': expected a string, found a list"
    )
    boolean = write_jsonl(tmp_path / "boolean.jsonl", [row, {**row, "score_0": True, "score_1": False}])
    assert (
        data_error(read_webgpt, boolean) == f"{boolean}, record 2, field 'score_0': expected a number, found a boolean"
    )
    empty = tmp_path / "empty.jsonl.gz"
    empty.write_bytes(gzip.compress(b""))
    assert data_error(read_webgpt, empty) == f"{empty}: no records"


# ---------------------------------------------------------------------------------------------------------------
# The internal format


def chat(*contents: str) -> list[dict]:
    """Alternating user / assistant messages."""
    return [{"role": ("user", "assistant")[i % 2], "content": content} for i, content in enumerate(contents)]


def reply(content: str) -> list[dict]:
    return [{"role": "assistant", "content": content}]


INTERNAL = {
    "preference": [
        {
            "id": "p1",
            "prompt": chat("Hi"),
            "chosen": reply("Hello"),
            "rejected": reply("Go away"),
            "category": "greeting",
        },
        {
            "prompt": [{"role": "system", "content": "Be brief."}, *chat("Hi")],
            "chosen": reply("Hi."),
            "rejected": reply(""),
        },
    ],
    "demonstration": [
        {"id": "d1", "messages": chat("Hi", "Hello")},
        {"messages": chat("Count", "1 2 3"), "source": "mine"},
    ],
    "prompt": [{"id": "q1", "prompt": chat("Hi")}, {"prompt": chat("Why?")}],
}


@pytest.mark.parametrize("kind", sorted(INTERNAL))
@pytest.mark.parametrize("name", ["data.jsonl", "data.jsonl.gz", "data.json", "data.json.gz", "data.parquet"])
def test_internal_round_trip(tmp_path, kind, name):
    writer = {"data.parquet": write_parquet, "data.json": write_json, "data.json.gz": write_json}.get(name, write_jsonl)
    path = writer(tmp_path / name, INTERNAL[kind])
    records = read_internal(path, kind)
    label = f"{tmp_path.name}/{name}"
    expected_ids = [INTERNAL[kind][0]["id"], f"{tmp_path.name}/data:2"]
    assert [r["id"] for r in records] == expected_ids
    assert records[0]["source"] == f"internal:{label}"
    for record, raw in zip(records, INTERNAL[kind], strict=True):
        assert {k: v for k, v in record.items() if k not in ("id", "source")} == {
            k: v for k, v in raw.items() if k not in ("id", "source")
        }
    assert load_records(kind, path) == records


def test_internal_preferences_give_demonstrations_and_prompts(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", INTERNAL["preference"])
    demonstrations = load_records("demonstration", path)
    assert demonstrations[0]["messages"] == INTERNAL["preference"][0]["prompt"] + INTERNAL["preference"][0]["chosen"]
    assert demonstrations[0]["category"] == "greeting"
    assert [p["prompt"] for p in load_records("prompt", path)] == [r["prompt"] for r in INTERNAL["preference"]]
    demo_path = write_jsonl(tmp_path / "demos.jsonl", INTERNAL["demonstration"])
    assert [p["prompt"] for p in load_records("prompt", demo_path)] == [
        d["messages"][:-1] for d in INTERNAL["demonstration"]
    ]
    assert data_error(load_records, "preference", demo_path) == f"{demo_path}, record 1, field 'prompt': missing"


def test_internal_malformed_files(tmp_path):
    good = INTERNAL["demonstration"][0]
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n{oops}\n")
    assert data_error(read_internal, bad_json, "demonstration") == (
        f"{bad_json}, record 3: line 3 is not valid JSON: Expecting property name enclosed in double quotes (column 2)"
    )
    missing = write_json(tmp_path / "missing.json", [good, {"id": "d2"}])
    assert data_error(read_internal, missing, "demonstration") == f"{missing}, record 2, field 'messages': missing"
    wrong_role = {"messages": [{"role": "human", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    wrong = write_parquet(tmp_path / "wrong.parquet", [good, wrong_role])
    assert data_error(read_internal, wrong, "demonstration") == (
        f"{wrong}, record 2, field 'messages[0].role': expected one of system, user, assistant, found 'human'"
    )
    wrong_type = write_jsonl(tmp_path / "wrong.jsonl", [{**good, "source": 7}])
    assert data_error(read_internal, wrong_type, "demonstration") == (
        f"{wrong_type}, record 1, field 'source': expected a string, found int"
    )
    empty = tmp_path / "empty.json"
    empty.write_text("")
    assert data_error(read_internal, empty, "prompt") == f"{empty}: no records"
    text_prompt = write_json(tmp_path / "text.json", [{"prompt": "hi"}])
    assert data_error(read_internal, text_prompt, "prompt") == (
        f"{text_prompt}, record 1, field 'prompt': expected a non-empty list of messages, found a string"
    )
    pretty_object = write_json(tmp_path / "object.json", {"data": INTERNAL["prompt"]})
    assert data_error(read_internal, pretty_object, "prompt") == (
        f"{pretty_object}, record 1: line 1 is not valid JSON: Expecting property name enclosed in double quotes"
        " (column 2)"
    )
    broken_gzip = tmp_path / "broken.jsonl.gz"
    broken_gzip.write_bytes(gzip.compress(json.dumps(good).encode())[:20])
    assert data_error(read_internal, broken_gzip, "demonstration").startswith(f"{broken_gzip}: cannot read the file: ")
    broken_parquet = tmp_path / "broken.parquet"
    broken_parquet.write_bytes(b"PAR1 not really")
    assert data_error(read_internal, broken_parquet, "prompt").startswith(
        f"{broken_parquet}: not a readable Parquet file"
    )
    assert (
        data_error(read_internal, tmp_path, "prompt")
        == f"{tmp_path}: is a folder; expected a .jsonl, .json or .parquet file"
    )


# ---------------------------------------------------------------------------------------------------------------
# load_records: seed files, format detection, the hub


def test_seed_files_are_found_in_the_package(tmp_path, monkeypatch):
    assert str(readers._seed_file("preference")).endswith(str(Path("harness", "data", "seed", "preferences.jsonl")))
    (tmp_path / "seed").mkdir()
    write_jsonl(tmp_path / "seed" / "prompts.jsonl", INTERNAL["prompt"])
    monkeypatch.setattr(readers, "_seed_file", lambda kind: tmp_path / "seed" / readers.SEED_FILES[kind])
    records = load_records("prompt", "seed")
    assert [r["id"] for r in records] == ["q1", "seed/prompts:2"]
    assert records[0]["source"] == "internal:seed/prompts.jsonl"
    assert (
        data_error(load_records, "demonstration", "seed")
        == f"{tmp_path / 'seed' / 'demonstrations.jsonl'}: no such file"
    )


def test_load_records_detects_the_format_and_keeps_the_first_records(tmp_path):
    hh_path = write_jsonl(
        tmp_path / "hh.jsonl", [{"chosen": hh("Q", f"A{i}"), "rejected": hh("Q", "B")} for i in range(5)]
    )
    webgpt_path = write_jsonl(tmp_path / "webgpt.jsonl", WEBGPT_ROWS)
    internal_path = write_jsonl(tmp_path / "internal.jsonl", INTERNAL["preference"])
    assert [r["source"] for r in load_records("preference", hh_path, limit=2)] == [
        f"hh-rlhf:{tmp_path.name}/hh.jsonl"
    ] * 2
    assert load_records("preference", webgpt_path)[0]["source"].startswith("webgpt:")
    assert load_records("preference", internal_path)[0]["source"].startswith("internal:")
    assert len(load_records("preference", hh_path, format="hh-rlhf", limit=3)) == 3
    assert (
        data_error(load_records, "preference", webgpt_path, "hh-rlhf")
        == f"{webgpt_path}, record 1, field 'chosen': missing"
    )
    assert data_error(load_records, "preference", tmp_path / "data" / "nothing.jsonl") == (
        f"{tmp_path / 'data' / 'nothing.jsonl'}: no such file"
    )
    assert data_error(load_records, "preference", "data/nothing.jsonl") == "data/nothing.jsonl: no such file"
    with pytest.raises(ValueError, match="unknown data format 'csv'; expected one of auto, internal"):
        load_records("preference", hh_path, format="csv")
    with pytest.raises(ValueError, match="unknown record kind 'pairs'"):
        load_records("pairs", hh_path)


def fake_datasets(monkeypatch, load_dataset) -> list:
    calls = []

    def record_call(*args, **kwargs):
        calls.append((args, kwargs))
        return load_dataset(*args, **kwargs)

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=record_call))
    return calls


def test_hub_ids_load_through_datasets(monkeypatch):
    rows = [{"chosen": hh("Q", "A"), "rejected": hh("Q", "B")}, {"chosen": hh("R", "C"), "rejected": hh("R", "D")}]
    calls = fake_datasets(monkeypatch, lambda *args, **kwargs: iter(rows))
    records = load_records("demonstration", "someone/pairs", split="test", subset="helpful-base")
    assert calls == [(("someone/pairs", "helpful-base"), {"split": "test"})]
    assert [r["id"] for r in records] == ["someone/pairs:helpful-base:test:1", "someone/pairs:helpful-base:test:2"]
    assert records[0]["source"] == "hh-rlhf:someone/pairs:helpful-base:test"
    assert records[1]["messages"][-1] == {"role": "assistant", "content": "C"}


def test_hub_subsets_kept_in_folders_are_found_with_data_dir(monkeypatch):
    def load_dataset(hub_id, name=None, split=None, data_dir=None):
        if name is not None:
            raise ValueError(f"BuilderConfig '{name}' not found. Available: ['default']")
        return [webgpt_row("Q", ("good", "bad"), (1.0, 0.0))]

    calls = fake_datasets(monkeypatch, load_dataset)
    records = load_records("preference", "Anthropic/hh-rlhf", subset="helpful-base")
    assert [kwargs for _, kwargs in calls] == [{"split": "train"}, {"data_dir": "helpful-base", "split": "train"}]
    assert records[0]["chosen"][0]["content"] == "good"


def test_hub_failures_are_one_line(monkeypatch):
    def load_dataset(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nobody/nothing' on the Hub (LocalEntryNotFoundError)\nmore detail")

    fake_datasets(monkeypatch, load_dataset)
    assert data_error(load_records, "preference", "nobody/nothing") == (
        "nobody/nothing:train: cannot load from the Hugging Face hub: ConnectionError: Couldn't reach 'nobody/nothing'"
        " on the Hub (LocalEntryNotFoundError)"
    )
    fake_datasets(monkeypatch, lambda *args, **kwargs: [])
    assert data_error(lambda: load_records("prompt", "nobody/empty", split="test")) == "nobody/empty:test: no records"
