"""The one internal record format every reader produces, and its validation.

Conversations use TRL's conversational format: a list of ``{"role", "content"}`` messages.

- demonstration: ``{"id", "messages"}``; the last message is the assistant's reply to imitate.
- preference: ``{"id", "prompt", "chosen", "rejected"}``; ``prompt`` ends with a user turn, ``chosen`` and
  ``rejected`` each hold the single assistant message that answers it.
- prompt: ``{"id", "prompt"}``; held-out prompts for sampling and evaluation.

Every record may carry ``source`` (where it came from) and ``category``.
"""

from __future__ import annotations

from typing import Any

ROLES = ("system", "user", "assistant")
KINDS = ("demonstration", "preference", "prompt")


class DataError(ValueError):
    """Malformed input; ``str()`` is one line naming the file, the record and the field."""

    def __init__(self, path: Any, record: Any, field: str | None, problem: str):
        self.path, self.record, self.field, self.problem = str(path), record, field, problem
        where = f"{self.path}"
        if record is not None:
            where += f", record {record}"
        if field:
            where += f", field '{field}'"
        super().__init__(f"{where}: {problem}")


def check_messages(value: Any, path: Any, record: Any, field: str) -> list[dict]:
    """Validate a list of chat messages and return it with only ``role`` and ``content`` kept."""
    if not isinstance(value, list) or not value:
        raise DataError(path, record, field, f"expected a non-empty list of messages, found {_kind(value)}")
    messages = []
    for i, message in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(message, dict):
            raise DataError(path, record, where, f"expected an object with role and content, found {_kind(message)}")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise DataError(path, record, f"{where}.role", f"expected one of {', '.join(ROLES)}, found {role!r}")
        if not isinstance(content, str):
            raise DataError(path, record, f"{where}.content", f"expected a string, found {_kind(content)}")
        messages.append({"role": role, "content": content})
    return messages


def check_record(kind: str, raw: Any, path: Any, record: Any) -> dict:
    """Validate one record of ``kind`` in the internal format; return a clean copy."""
    if not isinstance(raw, dict):
        raise DataError(path, record, None, f"expected a JSON object, found {_kind(raw)}")
    out: dict[str, Any] = {"id": str(raw.get("id", record))}
    for optional in ("source", "category"):
        if raw.get(optional) is not None:
            if not isinstance(raw[optional], str):
                raise DataError(path, record, optional, f"expected a string, found {_kind(raw[optional])}")
            out[optional] = raw[optional]
    if kind == "demonstration":
        messages = check_messages(_required(raw, "messages", path, record), path, record, "messages")
        if messages[-1]["role"] != "assistant":
            raise DataError(path, record, "messages", "the last message must be the assistant's")
        out["messages"] = messages
    elif kind == "preference":
        out["prompt"] = _prompt(raw, path, record)
        for side in ("chosen", "rejected"):
            reply = check_messages(_required(raw, side, path, record), path, record, side)
            if len(reply) != 1 or reply[0]["role"] != "assistant":
                raise DataError(path, record, side, "expected exactly one assistant message")
            out[side] = reply
    elif kind == "prompt":
        out["prompt"] = _prompt(raw, path, record)
    else:
        raise ValueError(f"unknown record kind {kind!r}; expected one of {', '.join(KINDS)}")
    return out


def _prompt(raw: dict, path: Any, record: Any) -> list[dict]:
    prompt = check_messages(_required(raw, "prompt", path, record), path, record, "prompt")
    if prompt[-1]["role"] != "user":
        raise DataError(path, record, "prompt", "the last message must be the user's")
    return prompt


def _required(raw: dict, field: str, path: Any, record: Any) -> Any:
    if field not in raw:
        raise DataError(path, record, field, "missing")
    return raw[field]


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )
