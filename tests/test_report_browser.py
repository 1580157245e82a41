"""The HTML report in a real browser: headless Chromium (Debian's package) driven by Playwright."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

import tlbench
from support import REPO
from tlbench.report.browser import CHROMIUM, chromium_page
from tlbench.report.document import write_report

REQUIRED = bool(os.environ.get("TLBENCH_REQUIRE_BROWSER"))
if not REQUIRED and not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; TLBENCH_REQUIRE_BROWSER=1 makes this a failure)",
                allow_module_level=True)
if not REQUIRED:
    pytest.importorskip("playwright", reason="playwright is not installed (pip install 'tlbench[browser]')")

GRID = {
    "name": "browser",
    "datasets": [{"name": "stripes", "per_class": 12, "train_size": [2, "all"]}],
    "backbones": ["toy/centroid"],
    "strategies": ["extractor", {"name": "finetune", "depth": [1, 2]}, "scratch"],
    "seeds": [0, 1],
}


def test_the_report_page_loads_every_image_decodes_and_the_verdicts_lead(toy_plugin, tmp_path):
    out = tmp_path / "run"  # not tmp_path itself: it holds the fake site (a run refuses a folder of other files)
    tlbench.run_grid(GRID, out=out, device="cpu")
    verdicts = json.loads((out / "verdicts.json").read_text())
    problems = []
    with chromium_page() as page:
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("request", lambda request: None if request.url.startswith(("file:", "data:"))
                else problems.append(f"requested {request.url}"))
        page.goto((out / "report.html").as_uri(), wait_until="load")
        images = page.eval_on_selector_all("img", "all => all.map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
        first_section = page.eval_on_selector("main > section", "s => s.id")
        headers = page.eval_on_selector_all("section#verdicts table th", "all => all.map(h => h.textContent)")
        rows = page.eval_on_selector_all("section#verdicts table tbody tr", "all => all.map(r => r.cells.length)")
        title = page.title()
    assert problems == []
    assert len(images) == 6 and all(complete and width > 300 and height > 200 for complete, width, height in images)
    assert first_section == "scenarios" and title == f"tlbench report: {GRID['name']}"  # the grid's name, not the folder's
    assert "difference (95% CI)" in headers and headers[3] == "verdict"
    assert rows == [len(headers)] * len(verdicts) and len(verdicts) == 2

    shot = tmp_path / "verdicts.png"
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "screenshot_verdicts.py"), str(out), str(shot)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert shot.read_bytes().startswith(b"\x89PNG")


def test_at_1280_px_the_verdict_column_shows_without_scrolling_the_header_sticks_and_a_click_sorts(tmp_path):
    run = tmp_path / "scenarios-cpu"  # a real run's long names: 16 rows, two timm backbones
    shutil.copytree(REPO / "results" / "reference" / "scenarios-cpu-3epochs", run, ignore=shutil.ignore_patterns("*.png", "report.*"))
    write_report(run)
    table = "section#verdicts table"
    with chromium_page(width=1280, height=800) as page:
        page.goto((run / "report.html").as_uri(), wait_until="load")
        scroll_width, inner_width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        name, right = page.eval_on_selector(f"{table} th:nth-child(4)", "h => [h.textContent, h.getBoundingClientRect().right]")
        page.eval_on_selector(f"{table} tbody tr:last-child", "row => row.scrollIntoView()")
        header_top = page.eval_on_selector(f"{table} th", "h => h.getBoundingClientRect().top")
        column = f"[...document.querySelectorAll('{table} tbody tr')].map(r => r.cells[9].textContent)"
        page.click(f"{table} th:has-text('images/class')")
        ascending = page.evaluate(column)
        page.click(f"{table} th:has-text('images/class')")
        descending = page.evaluate(column)
    assert scroll_width <= inner_width == 1280  # nothing to scroll sideways
    assert name == "verdict" and right <= 1280
    assert header_top == 0  # the header stays in view while the rows scroll under it
    values = [float(v.split()[0]) for v in ascending]
    assert len(values) == 16 and values == sorted(values) and descending == ascending[::-1]
