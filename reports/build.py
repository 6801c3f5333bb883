"""``build_report(run_dir, formats)``: every table, figure and index.html of a finished run, into
``RUN_DIR/report/``. Reads results.json, config.yaml, manifest.json and stage files; never loads a model,
so it works with the policy folders deleted. The new report is built in a temporary folder and swapped in,
so a failed build leaves the previous report whole."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from reports.html import render_index
from reports.load import ReportError, load_run
from reports.plots import all_figures
from reports.published import load_published
from reports.tables import all_tables, to_csv, to_html, to_latex, to_markdown

FORMATS = ("md", "csv", "tex", "html")
WRITERS = {"md": to_markdown, "csv": to_csv, "tex": to_latex}


def parse_formats(text: str | None) -> list[str]:
    """'md,csv' -> ['md', 'csv']; ReportError naming the unknown ones."""
    if not text:
        return list(FORMATS)
    formats = [f.strip().lower() for f in text.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ReportError(f"unknown report format(s) {', '.join(unknown) or '(none)'}; choose from {','.join(FORMATS)}")
    return formats


def build_report(run_dir: Path | str, formats: list[str] | tuple[str, ...] = FORMATS,
                 published: Path | str | bool | None = None) -> list[Path]:
    """Write the report of ``run_dir`` into ``run_dir/report``; return the files written.

    formats: table formats among md, csv, tex, html ('html' also writes index.html). Figures are always
    written (PNG and SVG). published: True for the packaged published numbers, a path for another file,
    None/False to leave them out; they are marked as published and enter no statistic or plot.
    """
    formats = parse_formats(",".join(formats)) if formats else list(FORMATS)
    run = load_run(run_dir)
    rows, status = (None, None)
    if published:
        rows, status = load_published(None if published is True else published)
    tables = all_tables(run, rows, status)

    target = run.root / "report"
    staging = Path(tempfile.mkdtemp(prefix=".report-", dir=run.root))
    try:
        (staging / "tables").mkdir()
        for table in tables:
            for ext in formats:
                if ext in WRITERS:
                    (staging / "tables" / f"{table.name}.{ext}").write_text(WRITERS[ext](table))
        if "md" in formats:
            (staging / "report.md").write_text("\n".join(to_markdown(t) for t in tables))
        plots = all_figures(run, staging / "figures")
        if "html" in formats:
            for table in tables:
                (staging / "tables" / f"{table.name}.html").write_text(to_html(table))
            (staging / "index.html").write_text(render_index(run, tables, plots, status))
        _swap(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return sorted(p for p in target.rglob("*") if p.is_file())


def _swap(staging: Path, target: Path) -> None:
    """Replace ``target`` with ``staging`` by renames, so readers see the old report or the new one."""
    old = None
    if target.exists():
        old = target.with_name(f".report-old-{os.getpid()}")
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
