"""The RS-DPO paper's published numbers (arXiv 2402.10038) as optional reference rows.

They live in ``published.json`` beside this file (or a file given with ``harness report --published FILE``),
are marked as published wherever they appear, and never enter our statistics or plots. The shipped file
has no rows until someone copies them from the paper (see its ``status``)."""

from __future__ import annotations

import json
from pathlib import Path

from reports.load import ReportError, number

PACKAGED = Path(__file__).with_name("published.json")
NUMERIC = ("mt_bench_turn_1", "mt_bench_turn_2", "mt_bench_average", "alpaca_eval_win_rate",
           "alpaca_eval_standard_error", "trained_on")
CITATION = "arXiv 2402.10038"


def load_published(path: Path | str | None = None) -> tuple[list[dict], str]:
    """(rows, status) from the packaged file or ``path``; each row gets a 'citation' naming paper and table."""
    path = Path(path) if path else PACKAGED
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(f"{path}: published numbers file not found") from None
    except json.JSONDecodeError as err:
        raise ReportError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(document, dict) or not isinstance(document.get("rows"), list):
        raise ReportError(f"{path}: expected an object with a 'rows' list")
    rows = []
    for index, row in enumerate(document["rows"]):
        where = f"{path}: rows[{index}]"
        if not isinstance(row, dict):
            raise ReportError(f"{where}: expected an object")
        for key in ("method", "table"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise ReportError(f"{where}: field '{key}' must be a non-empty string (the paper's method and table)")
        for key in NUMERIC:
            if row.get(key) is not None and number(row[key]) is None:
                raise ReportError(f"{where}: field '{key}' must be a number or null, found {row[key]!r}")
        if all(row.get(key) is None for key in NUMERIC[:4]):
            raise ReportError(f"{where}: no number given (need one of {', '.join(NUMERIC[:4])})")
        setting = f", {row['setting']}" if row.get("setting") else ""
        rows.append({**row, "citation": f"{CITATION} {row['table']}{setting}"})
    status = str(document.get("status") or f"{len(rows)} rows from {document.get('paper', CITATION)}")
    return rows, status
