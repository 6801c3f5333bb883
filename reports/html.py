"""A self-contained ``index.html``: provenance (config, versions, judge, data, seeds), every table, and every
figure embedded as a PNG data URI, so the one file can be mailed or archived on its own."""

from __future__ import annotations

import base64
import json
from html import escape

import yaml

from reports.load import RunData, get_path
from reports.plots import Plot
from reports.tables import Table, judge_of, to_html

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; background: #fff; line-height: 1.45; }
h1 { border-bottom: 2px solid #2ca02c; padding-bottom: .2em; }
table.report-table, table.facts { border-collapse: collapse; margin: .5em 0 .3em; font-size: 14px; }
table.report-table th, table.report-table td, table.facts th, table.facts td {
  border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: right; }
table.report-table th, table.facts th { background: #f3f6f3; border-bottom: 2px solid #999; }
table.report-table td:first-child, table.report-table th:first-child, table.facts td, table.facts th { text-align: left; }
p.note, figcaption { color: #555; font-size: 13px; max-width: 1100px; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: 12px; }
.published { background: #fff6e0; border-left: 4px solid #e0a000; padding: .3em 1em; }
"""


def _facts(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="facts">{body}</table>'


def provenance_rows(run: RunData) -> list[tuple[str, str]]:
    p = run.results.get("produced_by") or {}
    rows = [("run", str(run.results.get("run", run.root.name))), ("profile", str(p.get("profile", "?"))),
            ("model", json.dumps(p.get("model", {}), sort_keys=True)), ("seed", str(p.get("seed", "?"))),
            ("device", str(p.get("device", "?")))]
    git = p.get("git") or {}
    if git:
        rows.append(("git", f"{git.get('commit')}{' (uncommitted changes)' if git.get('dirty') else ''}"))
    for name, label in (("mt_bench", "MT-Bench judge"), ("alpaca_eval", "AlpacaEval judge")):
        judge = judge_of(run, name)
        if judge:
            rows.append((label, judge))
    for name in run.methods:
        reference = get_path(run.evaluation(name, "alpaca_eval") or {}, "reference")
        if reference:
            rows.append(("AlpacaEval reference outputs", str(reference)))
            break
    argv = get_path(run.manifest, "harness_environment.argv")
    if isinstance(argv, list):
        rows.append(("command", " ".join(str(a) for a in argv)))
    hardware = get_path(run.manifest, "harness_environment.hardware")
    if isinstance(hardware, dict):
        rows.append(("hardware", ", ".join(f"{k}: {v}" for k, v in hardware.items())))
    if run.sweep:
        rows.append(("sweep", ", ".join(pt.get("label", "") for pt in run.sweep.get("points") or [])))
    return rows


def render_index(run: RunData, tables: list[Table], plots: list[Plot], published_status: str | None) -> str:
    p = run.results.get("produced_by") or {}
    title = f"rsdpo-harness report: {run.results.get('run', run.root.name)}"
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{escape(title)}</title>",
             f"<style>{CSS}</style>\n</head>\n<body>", f"<h1>{escape(title)}</h1>",
             "<p>Built by <code>harness report</code> from <code>results.json</code> and the stage files only; "
             "no model was loaded.</p>", "<h2>How these numbers were produced</h2>", _facts(provenance_rows(run))]
    versions = p.get("versions") or {}
    if versions:
        parts += ["<h3>Versions</h3>", _facts([(k, str(v)) for k, v in versions.items()])]
    data = p.get("data") or {}
    if data:
        parts += ["<h3>Data</h3>", _facts([(k, json.dumps(v, sort_keys=True)) for k, v in data.items()])]
    if run.config:
        parts += ["<details><summary>Resolved config (config.yaml)</summary>",
                  f"<pre>{escape(yaml.safe_dump(run.config, sort_keys=False))}</pre></details>"]
    parts.append("<h2>Tables</h2>")
    for table in tables:
        if table.name == "published":
            parts.append(f'<div class="published">{to_html(table)}</div>')
        else:
            parts.append(to_html(table))
    if published_status is not None and not any(t.name == "published" for t in tables):
        parts.append(f'<p class="published">Published numbers: {escape(published_status)}</p>')
    parts.append("<h2>Figures</h2>")
    for plot in plots:
        png = next((f for f in plot.files if f.suffix == ".png"), None)
        if png is None:
            continue
        data_uri = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")
        parts.append(f'<figure id="figure-{escape(plot.name)}"><img alt="{escape(plot.title)}" src="{data_uri}">'
                     f"<figcaption>{escape(plot.title)}. {escape(plot.caption)}. Files: "
                     f"{escape(', '.join(f'figures/{f.name}' for f in plot.files))}</figcaption></figure>")
    parts.append("</body>\n</html>\n")
    return "\n".join(parts)
