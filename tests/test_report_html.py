"""index.html in a real browser: headless Chromium (Debian's `chromium`, installed by `make setup`) renders
the self-contained page; the screenshot must not be blank and the main table must be in the DOM with our
rows and numbers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from report_fixtures import make_run
from reports.build import build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("CI"):  # `make setup` installs it on CI machines: missing there is a failure
            pytest.fail("chromium not found on PATH; `make setup` installs Debian's chromium package")
        pytest.skip("chromium not found on PATH (apt-get install chromium)")
    return CHROMIUM


def browse(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio",
               "--no-first-run", f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


class TableRows(HTMLParser):
    """The text of each cell of the table with a given id."""

    def __init__(self, table_id: str):
        super().__init__()
        self.table_id, self.inside, self.rows, self.cell = table_id, False, [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table" and dict(attrs).get("id") == self.table_id:
            self.inside = True
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag in ("td", "th"):
            self.cell = ""

    def handle_endtag(self, tag):
        if tag == "table":
            self.inside = False
        elif self.inside and tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append(self.cell.strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def test_index_html_renders_in_chromium_with_the_main_table(chromium, tmp_path):
    run = make_run(tmp_path / "run")
    build_report(run, ["html"])
    index = run / "report" / "index.html"
    # self-contained: the page is moved away from its figures folder and still shows every figure
    alone = tmp_path / "alone" / "index.html"
    alone.parent.mkdir()
    shutil.copy(index, alone)

    shot = tmp_path / "page.png"
    browse(chromium, tmp_path / "profile", "--window-size=1280,2200", f"--screenshot={shot}", alone.as_uri())
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (2200, 1280)
    not_white = np.any(pixels < 0.95, axis=-1).mean()
    colours = np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0).shape[0]
    assert not_white > 0.02, f"screenshot is nearly blank ({not_white:.1%} non-white pixels)"
    assert colours > 200, f"only {colours} colours: text and tables but no rendered figures?"

    dom = browse(chromium, tmp_path / "profile", "--dump-dom", alone.as_uri()).stdout
    parser = TableRows("table-main")
    parser.feed(dom)
    header, *rows = parser.rows
    assert header[0] == "Method" and "MT-Bench average [95% CI]" in header
    results = json.loads((run / "results.json").read_text())
    assert [r[0] for r in rows] == ["sft", "rs", "ppo", "dpo", "rsdpo"]
    column = header.index("MT-Bench turn 1")
    for row in rows:
        assert row[column] == f"{results['methods'][row[0]]['evaluations']['mt_bench']['turn_1']:.2f}"
    assert dom.count("<img") == len(list((run / "report" / "figures").glob("*.png")))
