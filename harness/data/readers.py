"""Readers that turn public chat and preference data into the internal records of ``records.py``.

``load_records(kind, path)`` is the one entry point. It reads the packaged seed files (``path="seed"``), local
files and Hugging Face hub datasets, in four formats:

- ``internal``: records already in our format (``records.py``), checked one by one.
- ``hh-rlhf``: Anthropic HH-RLHF transcripts ``{"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": ...}``.
- ``webgpt``: OpenAI WebGPT comparisons (``question``, ``answer_0/1``, ``score_0/1``).
- ``oasst``: OpenAssistant message trees, nested (the export format) or flat (the ``oasst1`` message table).

Files are JSON lines, a JSON list or Parquet, each optionally gzip-compressed. Record numbers in errors count
from 1: the line number in JSON lines, the position in a JSON list or a Parquet table.

Readers drop what cannot make a usable record (tied scores, identical replies, deleted messages...) and count
it: every reader returns ``Records``, a list whose ``skipped`` says how many were left out and why.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import math
import re
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from itertools import combinations
from pathlib import Path
from typing import Any

from harness.data.records import KINDS, DataError, _kind, check_record

log = logging.getLogger(__name__)

FORMATS = ("auto", "internal", "hh-rlhf", "webgpt", "oasst")
SEED_FILES = {"demonstration": "demonstrations.jsonl", "preference": "preferences.jsonl", "prompt": "prompts.jsonl"}

Row = tuple[int, Any]  # (record number counted from 1, the parsed JSON value or Parquet row)


class Records(list):
    """A list of records that also counts, by reason, what its reader left out."""

    def __init__(self, records: Iterable[dict] = (), skipped: dict[str, int] | None = None):
        super().__init__(records)
        self.skipped: dict[str, int] = dict(skipped or {})


@dataclass(frozen=True)
class Origin:
    """Where rows came from: ``where`` names it in errors, ``label`` in record ids and sources."""

    where: str
    label: str

    @classmethod
    def of_file(cls, path: Path) -> Origin:
        # The folder name keeps ids apart for files that share a name, like HH-RLHF's four test.jsonl.gz.
        folder = f"{path.parent.name}/" if path.parent.name else ""
        return cls(str(path), f"{folder}{path.name}")

    @classmethod
    def of_hub(cls, hub_id: str, subset: str | None, split: str) -> Origin:
        label = ":".join(part for part in (hub_id, subset, split) if part)
        return cls(label, label)

    def record_id(self, record: int) -> str:
        return f"{_strip_data_suffixes(self.label)}:{record}"


# ---------------------------------------------------------------------------------------------------------------
# The entry point


def load_records(
    kind: str,
    path: str | Path,
    format: str = "auto",
    split: str = "train",
    subset: str | None = None,
    limit: int | None = None,
) -> Records:
    """Load ``kind`` records (demonstration, preference or prompt) from a seed file, a local file or the hub.

    ``path`` is ``"seed"`` (the packaged seed file for ``kind``), a local file, or a hub id ``owner/name``
    loaded with ``datasets.load_dataset(path, subset, split=split)``; ``split`` and ``subset`` only apply to
    the hub. ``format="auto"`` picks the reader from the first record's fields. A preference source also
    gives demonstrations (prompt + chosen) and prompts (each distinct prompt once). ``limit`` keeps the first
    records. Every record carries an ``id`` and a ``source``.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown record kind {kind!r}; expected one of {', '.join(KINDS)}")
    if format not in FORMATS:
        raise ValueError(f"unknown data format {format!r}; expected one of {', '.join(FORMATS)}")
    rows, origin = _locate(kind, path, split, subset)
    chosen_format = detect_format(rows[0][1]) if format == "auto" else format
    records = _records_of_kind(kind, chosen_format, rows, origin)
    if limit is not None:
        records = Records(records[:limit], records.skipped)
    if not records:
        raise DataError(origin.where, None, None, f"no {kind} records in this {chosen_format} data")
    return records


def detect_format(row: Any) -> str:
    """The reader for a source whose first record is ``row``: internal unless its fields say otherwise."""
    if not isinstance(row, dict):
        return "internal"  # the internal reader reports what is wrong with it
    if isinstance(row.get("chosen"), str) and isinstance(row.get("rejected"), str):
        return "hh-rlhf"
    if "question" in row and "answer_0" in row:
        return "webgpt"
    if isinstance(row.get("prompt"), dict) or ("message_id" in row and "parent_id" in row):
        return "oasst"
    return "internal"


def _locate(kind: str, path: str | Path, split: str, subset: str | None) -> tuple[list[Row], Origin]:
    if str(path) == "seed" or str(path).startswith("seed:"):
        return _read_seed(str(path).partition(":")[2] or kind)
    local = Path(path)
    if local.exists() or not _looks_like_hub_id(path):
        return read_rows(local), Origin.of_file(local)
    return _hub_rows(str(path), subset, split), Origin.of_hub(str(path), subset, split)


def _read_seed(name: str) -> tuple[list[Row], Origin]:
    """``name`` is a record kind (its own seed file) or a seed file's stem: ``seed:preferences`` gives the
    prompts of the seed pairs when prompts are asked for."""
    with resources.as_file(_seed_file(name)) as path:
        return read_rows(path), Origin.of_file(path)


def _seed_file(name: str):
    file = SEED_FILES.get(name) or f"{name}.jsonl"
    if file not in SEED_FILES.values():
        raise DataError(f"seed:{name}", None, None, f"no such seed file; available: seed, "
                        + ", ".join(f"seed:{f.removesuffix('.jsonl')}" for f in SEED_FILES.values()))
    return resources.files("harness.data") / "seed" / file


def _looks_like_hub_id(path: str | Path) -> bool:
    if not isinstance(path, str) or _strip_data_suffixes(path) != path:
        return False  # a Path object, or a name with a data file's suffix, is meant as a local file
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*", path) is not None


def _hub_rows(hub_id: str, subset: str | None, split: str) -> list[Row]:
    import datasets  # slow to import, and only the hub needs it

    try:
        try:
            table = datasets.load_dataset(hub_id, subset, split=split)
        except ValueError as error:
            # Some repos keep subsets in folders rather than configs (Anthropic/hh-rlhf: data_dir="helpful-base").
            if subset is None or "BuilderConfig" not in str(error):
                raise
            table = datasets.load_dataset(hub_id, data_dir=subset, split=split)
    except Exception as error:  # network, auth, unknown dataset: report one line, not a traceback
        where = Origin.of_hub(hub_id, subset, split).where
        raise DataError(where, None, None, f"cannot load from the Hugging Face hub: {_one_line(error)}") from error
    rows = [(number, dict(row)) for number, row in enumerate(table, 1)]
    if not rows:
        raise DataError(Origin.of_hub(hub_id, subset, split).where, None, None, "no records")
    return rows


def _records_of_kind(kind: str, data_format: str, rows: list[Row], origin: Origin) -> Records:
    if data_format == "internal":
        native = _internal_kind(kind, rows[0][1])
        return _as_kind(kind, native, _internal_records(rows, native, origin), origin)
    if data_format == "hh-rlhf":
        return _as_kind(kind, "preference", _hh_rlhf_records(rows, origin), origin)
    if data_format == "webgpt":
        return _as_kind(kind, "preference", _webgpt_records(rows, origin), origin)
    pairs, demonstrations, prompts = _oasst_records(rows, origin)
    return {"preference": pairs, "demonstration": demonstrations, "prompt": prompts}[kind]


def _internal_kind(kind: str, first: Any) -> str:
    """The kind an internal file holds: the one asked for, unless its first record is a richer kind."""
    if not isinstance(first, dict):
        return kind
    if kind != "preference" and "chosen" in first and "messages" not in first:
        return "preference"
    if kind == "prompt" and "messages" in first and "prompt" not in first:
        return "demonstration"
    return kind


def _as_kind(kind: str, native: str, records: Records, origin: Origin) -> Records:
    """Turn preference records into demonstrations (prompt + chosen) or prompts, and demonstrations into prompts."""
    if kind == native:
        return records
    if native == "preference" and kind == "demonstration":
        converted = [_with_keys(r, messages=r["prompt"] + r["chosen"]) for r in records]
        return Records(converted, records.skipped)
    if kind == "prompt" and native in ("preference", "demonstration"):
        prompts = [_with_keys(r, prompt=r["prompt"] if native == "preference" else r["messages"][:-1]) for r in records]
        return _distinct_prompts(prompts, records.skipped, origin)
    raise DataError(origin.where, None, None, f"{native} records cannot give {kind} records")


def _with_keys(record: dict, **content: Any) -> dict:
    kept = {key: record[key] for key in ("id", "source", "category") if key in record}
    return {**kept, **content}


def _distinct_prompts(prompts: list[dict], skipped: dict[str, int], origin: Origin) -> Records:
    # Several pairs often share one prompt; sampling it twice would waste compute.
    seen, distinct, dropped = set(), [], Counter(skipped)
    for record in prompts:
        key = json.dumps(record["prompt"])
        if not record["prompt"] or record["prompt"][-1]["role"] != "user":
            dropped["no user turn to prompt with"] += 1
        elif key in seen:
            dropped["repeated prompts"] += 1
        else:
            seen.add(key)
            distinct.append(record)
    return _finish(distinct, dropped, origin, "prompts", quiet=True)


# ---------------------------------------------------------------------------------------------------------------
# Public readers, one per format


def read_internal(path: str | Path, kind: str) -> Records:
    """Records of ``kind`` from a file already in the internal format, each checked by ``check_record``."""
    path = Path(path)
    return _internal_records(read_rows(path), kind, Origin.of_file(path))


def read_hh_rlhf(path: str | Path) -> Records:
    """Preference pairs from an Anthropic HH-RLHF file; ``_hh_pair`` says how the transcripts are split."""
    path = Path(path)
    return _hh_rlhf_records(read_rows(path), Origin.of_file(path))


def read_webgpt(path: str | Path) -> Records:
    """Preference pairs from OpenAI WebGPT comparisons: the higher-scored answer is chosen, ties are dropped."""
    path = Path(path)
    return _webgpt_records(read_rows(path), Origin.of_file(path))


def read_oasst(path: str | Path) -> tuple[Records, Records]:
    """(preferences, demonstrations) from OpenAssistant message trees, nested or as a flat message table.

    Pairs: every two ranked sibling assistant replies, the better rank (lower number) chosen, with the
    conversation that led to them as the prompt. Demonstrations: the conversations that follow the best
    ranked reply to every user turn (a lone reply, never ranked against anything, counts as best), one per
    branch of user follow-ups. Deleted messages and everything under them are skipped.
    """
    path = Path(path)
    pairs, demonstrations, _ = _oasst_records(read_rows(path), Origin.of_file(path))
    return pairs, demonstrations


# ---------------------------------------------------------------------------------------------------------------
# Rows: JSON lines, JSON lists and Parquet, optionally gzip-compressed


def read_rows(path: str | Path) -> list[Row]:
    """The raw rows of a data file, numbered from 1; a ``DataError`` for anything that cannot be read."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, None, "no such file")
    if path.is_dir():
        raise DataError(path, None, None, "is a folder; expected a .jsonl, .json or .parquet file")
    data = _file_bytes(path)
    if data[:4] == b"PAR1":
        rows = list(enumerate(_parquet_rows(data, path), 1))
    else:
        text = _utf8(data, path)
        is_list = text.lstrip().startswith("[") and not path.name.removesuffix(".gz").endswith(".jsonl")
        rows = _json_list_rows(text, path) if is_list else _json_lines_rows(text, path)
    if not rows:
        raise DataError(path, None, None, "no records")
    return rows


def _file_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
        return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(path, None, None, f"cannot read the file: {_one_line(error)}") from error


def _utf8(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(path, None, None, f"not UTF-8 text (byte {error.start})") from error


def _parquet_rows(data: bytes, path: Path) -> list[dict]:
    import pyarrow.parquet as pq  # slow to import, and only Parquet needs it

    try:
        return pq.read_table(io.BytesIO(data)).to_pylist()
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise DataError(path, None, None, f"not a readable Parquet file: {_one_line(error)}") from error


def _json_lines_rows(text: str, path: Path) -> list[Row]:
    rows = []
    # split("\n"), not splitlines(): JSON strings may hold U+2028 and other characters splitlines() breaks on.
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as error:
            problem = f"line {number} is not valid JSON: {error.msg} (column {error.colno})"
            raise DataError(path, number, None, problem) from None
    return rows


def _json_list_rows(text: str, path: Path) -> list[Row]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        problem = f"not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
        raise DataError(path, None, None, problem) from None
    if not isinstance(value, list):
        raise DataError(path, None, None, f"expected a JSON list of records, found {_kind(value)}")
    return list(enumerate(value, 1))


def _strip_data_suffixes(name: str | Path) -> str:
    """``name`` without ``.gz`` and a data suffix (.jsonl, .json, .parquet)."""
    name = str(name).removesuffix(".gz")
    for suffix in (".jsonl", ".json", ".parquet"):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


# ---------------------------------------------------------------------------------------------------------------
# Internal records


def _internal_records(rows: list[Row], kind: str, origin: Origin) -> Records:
    records = []
    for number, raw in rows:
        if isinstance(raw, dict):
            raw = {**raw, "id": _present(raw.get("id"), origin.record_id(number))}
            raw["source"] = _present(raw.get("source"), f"internal:{origin.label}")
        records.append(check_record(kind, raw, origin.where, number))
    return Records(records)


def _present(value: Any, default: Any) -> Any:
    return default if value is None else value


# ---------------------------------------------------------------------------------------------------------------
# Anthropic HH-RLHF

# "Human:" at the very start is accepted too: some copies drop the leading blank line.
_HH_MARKER = re.compile(r"(?:^|\n\n)(Human|Assistant): ?")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


@dataclass(frozen=True)
class _Turn:
    role: str
    content: str
    start: int  # where the content begins in the transcript


def _hh_turns(text: str) -> list[_Turn] | None:
    """Split an HH transcript into turns; None when it does not start with a ``Human:`` marker.

    A marker naming the role already speaking stays in the content: models sometimes wrote
    "\\n\\nAssistant:" inside their own reply, and the raters saw it as part of that reply.
    """
    turns: list[list] = []  # [role, content start, content end]
    for marker in _HH_MARKER.finditer(text):
        role = _HH_ROLES[marker.group(1)]
        if not turns and marker.start() != 0:
            return None
        if turns and turns[-1][0] == role:
            continue
        if turns:
            turns[-1][2] = marker.start()
        turns.append([role, marker.end(), len(text)])
    if not turns or turns[0][0] != "user":
        return None
    return [_Turn(role, text[start:end], start) for role, start, end in turns]


def _hh_pair(chosen: tuple[str, list[_Turn]], rejected: tuple[str, list[_Turn]]) -> tuple[list[dict], str, str] | str:
    """(prompt, chosen reply, rejected reply) of two split HH transcripts, or why they make no pair.

    The prompt is the turns both share up to the last user turn; each reply is the rest of its transcript
    from the final assistant turn on, so a reply that went on to write a "\\n\\nHuman:" turn of its own keeps
    it, as the raters saw it (two rejected replies in the HH-RLHF test splits do this). Pairs whose replies are
    identical are left out: they state no preference (36 in the test splits, all byte-identical transcripts).
    """
    (chosen_text, chosen_turns), (rejected_text, rejected_turns) = chosen, rejected
    # The final reply is the last assistant turn at or before the first difference.
    start = min(_shared_turns(chosen_turns, rejected_turns), len(chosen_turns) - 1, len(rejected_turns) - 1)
    while start > 0 and chosen_turns[start].role != "assistant":  # both alternate from a user turn
        start -= 1
    if start == 0:
        if min(len(chosen_turns), len(rejected_turns)) == 1:
            return "a transcript has no assistant reply"
        return "transcripts differ before the final reply"
    if any(turn.role == "assistant" for turn in chosen_turns[start + 1 :] + rejected_turns[start + 1 :]):
        if "user" in (chosen_turns[-1].role, rejected_turns[-1].role):
            return "a transcript lacks the final assistant reply"
        return "transcripts differ before the final reply"
    chosen_reply = chosen_text[chosen_turns[start].start :]
    rejected_reply = rejected_text[rejected_turns[start].start :]
    if chosen_reply == rejected_reply:
        return "identical replies"
    prompt = [{"role": turn.role, "content": turn.content} for turn in chosen_turns[:start]]
    return prompt, chosen_reply, rejected_reply


def _shared_turns(a: list[_Turn], b: list[_Turn]) -> int:
    shared = 0
    while shared < min(len(a), len(b)) and (a[shared].role, a[shared].content) == (b[shared].role, b[shared].content):
        shared += 1
    return shared


def _hh_transcript(row: Any, side: str, origin: Origin, number: int) -> tuple[str, list[_Turn]]:
    text = _field(row, side, str, origin, number)
    turns = _hh_turns(text)
    if turns is None:
        raise DataError(origin.where, number, side, 'expected a transcript that starts with "\\n\\nHuman: "')
    return text, turns


def _hh_rlhf_records(rows: list[Row], origin: Origin) -> Records:
    records, skipped = [], Counter()
    for number, row in rows:
        pair = _hh_pair(_hh_transcript(row, "chosen", origin, number), _hh_transcript(row, "rejected", origin, number))
        if isinstance(pair, str):
            skipped[pair] += 1
            continue
        prompt, chosen_reply, rejected_reply = pair
        record = {
            "id": origin.record_id(number),
            "source": f"hh-rlhf:{origin.label}",
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": chosen_reply}],
            "rejected": [{"role": "assistant", "content": rejected_reply}],
        }
        records.append(check_record("preference", record, origin.where, number))
    return _finish(records, skipped, origin, "pairs")


# ---------------------------------------------------------------------------------------------------------------
# OpenAI WebGPT comparisons


def _webgpt_records(rows: list[Row], origin: Origin) -> Records:
    records, skipped = [], Counter()
    for number, row in rows:
        question = _field(row, "question", dict, origin, number)
        text = _field(question, "full_text", str, origin, number, name="question.full_text")
        answers = [_field(row, f"answer_{i}", str, origin, number) for i in (0, 1)]
        scores = [_field(row, f"score_{i}", (int, float), origin, number) for i in (0, 1)]
        if scores[0] == scores[1]:
            skipped["tied scores"] += 1
            continue
        if answers[0] == answers[1]:
            skipped["identical replies"] += 1
            continue
        # The quotes the raters saw are left out: policies answer from the question alone.
        better = 0 if scores[0] > scores[1] else 1
        record = {
            "id": origin.record_id(number),
            "source": f"webgpt:{origin.label}",
            "prompt": [{"role": "user", "content": text}],
            "chosen": [{"role": "assistant", "content": answers[better]}],
            "rejected": [{"role": "assistant", "content": answers[1 - better]}],
        }
        records.append(check_record("preference", record, origin.where, number))
    return _finish(records, skipped, origin, "pairs")


# ---------------------------------------------------------------------------------------------------------------
# OpenAssistant


@dataclass
class _Message:
    id: str
    role: str  # "user" or "assistant"
    text: str
    rank: int | None
    replies: list[_Message] = field(default_factory=list)


_OASST_ROLES = {"prompter": "user", "assistant": "assistant"}


def _oasst_records(rows: list[Row], origin: Origin) -> tuple[Records, Records, Records]:
    """(pairs, demonstrations, prompts of the pairs) from nested trees or a flat message table."""
    skipped: Counter = Counter()
    if isinstance(rows[0][1], dict) and "prompt" in rows[0][1]:
        roots = [_nested_tree(row, origin, number, skipped) for number, row in rows]
    else:
        roots = _trees_from_table(rows, origin, skipped)
    pairs, demonstrations, prompts = [], [], {}
    for root in roots:
        if root is not None:
            _collect_pairs(root, [root], pairs, prompts, skipped)
            if root.role == "user":
                demonstrations.extend(_best_conversations(root, [root]))
    source = f"oasst:{origin.label}"
    return (
        _finish(_checked("preference", pairs, source, origin), skipped, origin, "pairs"),
        _finish(
            _checked("demonstration", demonstrations, source, origin), skipped, origin, "demonstrations", quiet=True
        ),
        _finish(_checked("prompt", list(prompts.values()), source, origin), skipped, origin, "prompts", quiet=True),
    )


def _nested_tree(row: Any, origin: Origin, number: int, skipped: Counter) -> _Message | None:
    return _oasst_message(_field(row, "prompt", dict, origin, number), "prompt", origin, number, skipped)


def _oasst_message(raw: Any, name: str, origin: Origin, number: int, skipped: Counter) -> _Message | None:
    """One message of a nested tree with its replies; None when deleted (its replies go with it)."""
    message = _oasst_fields(raw, name, origin, number)
    if message is None:
        skipped["deleted messages and their replies"] += 1 + _count_nested(raw)
        return None
    replies = _field(raw, "replies", list, origin, number, name=f"{name}.replies", default=[])
    for i, reply in enumerate(replies):
        if not isinstance(reply, dict):
            raise DataError(origin.where, number, f"{name}.replies[{i}]", f"expected an object, found {_kind(reply)}")
        child = _oasst_message(reply, f"{name}.replies[{i}]", origin, number, skipped)
        if child is not None:
            message.replies.append(child)
    return message


def _count_nested(raw: dict) -> int:
    replies = raw.get("replies") if isinstance(raw.get("replies"), list) else []
    return sum(1 + _count_nested(reply) for reply in replies if isinstance(reply, dict))


def _oasst_fields(raw: Any, name: str, origin: Origin, number: int) -> _Message | None:
    """The fields of one message, checked; None for a deleted message."""

    def get(key: str, expected: Any, **default: Any) -> Any:
        return _field(raw, key, expected, origin, number, name=f"{name}.{key}" if name else key, **default)

    if get("deleted", (bool, type(None)), default=False):
        return None
    role = get("role", str)
    if role not in _OASST_ROLES:
        where = f"{name}.role" if name else "role"
        raise DataError(origin.where, number, where, f"expected prompter or assistant, found {role!r}")
    rank = get("rank", (int, float, type(None)), default=None)
    if isinstance(rank, float):
        rank = None if math.isnan(rank) else int(rank)  # tables store a missing rank as NaN
    return _Message(str(get("message_id", (str, int))), _OASST_ROLES[role], get("text", str), rank)


def _trees_from_table(rows: list[Row], origin: Origin, skipped: Counter) -> list[_Message]:
    """Build the trees of a flat message table (``OpenAssistant/oasst1``) from each row's ``parent_id``."""
    messages, parents, deleted = {}, {}, set()
    for number, row in rows:
        message = _oasst_fields(row, "", origin, number)
        message_id = str(_field(row, "message_id", (str, int), origin, number))
        parents[message_id] = _field(row, "parent_id", (str, int, type(None)), origin, number)
        if message is None:
            deleted.add(message_id)
        else:
            messages[message_id] = message
    roots = []
    for message_id, message in messages.items():  # rows keep their order, and so do the replies
        parent = parents[message_id]
        if parent is None:
            roots.append(message)
        elif str(parent) in messages:
            messages[str(parent)].replies.append(message)
    reachable = _count_reachable(roots)
    under_deleted = sum(1 for m in messages if _has_deleted_ancestor(m, parents, deleted))
    if deleted or under_deleted:
        skipped["deleted messages and their replies"] += len(deleted) + under_deleted
    orphans = len(messages) - reachable - under_deleted
    if orphans:
        skipped["messages whose parent is missing"] += orphans
    return roots


def _count_reachable(roots: list[_Message]) -> int:
    return sum(1 + _count_reachable(root.replies) for root in roots)


def _has_deleted_ancestor(message_id: str, parents: dict, deleted: set) -> bool:
    parent, seen = parents.get(message_id), set()
    while parent is not None and str(parent) not in seen:
        if str(parent) in deleted:
            return True
        seen.add(str(parent))
        parent = parents.get(str(parent))
    return False


def _collect_pairs(node: _Message, path: list[_Message], pairs: list, prompts: dict, skipped: Counter) -> None:
    """Every (better, worse) pair among the ranked assistant replies under ``node``, recursively."""
    ranked = sorted((m for m in node.replies if m.role == "assistant" and m.rank is not None), key=lambda m: m.rank)
    if node.role == "user" and len(ranked) >= 2:
        prompt = _conversation(path)
        prompts.setdefault(node.id, {"id": node.id, "prompt": prompt})
        for better, worse in combinations(ranked, 2):
            if better.rank == worse.rank:
                skipped["tied ranks"] += 1
                continue
            pairs.append(
                {
                    "id": f"{better.id}>{worse.id}",
                    "prompt": prompt,
                    "chosen": _conversation([better]),
                    "rejected": _conversation([worse]),
                }
            )
    for reply in node.replies:
        _collect_pairs(reply, path + [reply], pairs, prompts, skipped)


def _best_conversations(user: _Message, path: list[_Message]) -> list[dict]:
    """Conversations from ``path`` (ending with a user turn) down the best reply at each level."""
    best = _best_reply(user)
    if best is None:
        return []
    path = path + [best]
    longer = [
        c
        for follow_up in best.replies
        if follow_up.role == "user"
        for c in _best_conversations(follow_up, path + [follow_up])
    ]
    return longer or [{"id": best.id, "messages": _conversation(path)}]


def _best_reply(user: _Message) -> _Message | None:
    replies = [m for m in user.replies if m.role == "assistant"]
    ranked = [m for m in replies if m.rank is not None]
    if ranked:
        return min(ranked, key=lambda m: m.rank)  # rank 0 is best; it may be gone with a deleted message
    return replies[0] if len(replies) == 1 else None


def _conversation(path: list[_Message]) -> list[dict]:
    return [{"role": m.role, "content": m.text} for m in path]


def _checked(kind: str, records: list[dict], source: str, origin: Origin) -> list[dict]:
    return [check_record(kind, {**r, "source": source}, origin.where, i) for i, r in enumerate(records, 1)]


# ---------------------------------------------------------------------------------------------------------------
# Shared helpers

_MISSING = object()


def _field(
    row: Any, key: str, expected: Any, origin: Origin, number: int, name: str | None = None, default: Any = _MISSING
) -> Any:
    """``row[key]``, checked to be of the ``expected`` type(s); a one-line ``DataError`` otherwise."""
    name = name or key
    if not isinstance(row, dict):
        where = name.rpartition(".")[0] or None
        raise DataError(origin.where, number, where, f"expected a JSON object, found {_kind(row)}")
    if key not in row or (row[key] is None and default is not _MISSING):
        if default is _MISSING:
            raise DataError(origin.where, number, name, "missing")
        return default
    value = row[key]
    types = expected if isinstance(expected, tuple) else (expected,)
    # bool is an int to Python, never a score or a rank to us.
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise DataError(origin.where, number, name, f"expected {_describe(types)}, found {_kind(value)}")
    return value


def _describe(types: tuple) -> str:
    names = {str: "a string", int: "a number", float: "a number", dict: "an object", list: "a list", bool: "a boolean"}
    return " or ".join(dict.fromkeys(names.get(t, "null") for t in types))


def _finish(records: list[dict], skipped: dict, origin: Origin, what: str, quiet: bool = False) -> Records:
    skipped = {reason: count for reason, count in skipped.items() if count}
    if skipped and not quiet:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in skipped.items())
        log.warning(
            "%s: kept %d %s, left out %d (%s)", origin.where, len(records), what, sum(skipped.values()), reasons
        )
    return Records(records, skipped)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
