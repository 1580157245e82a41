"""The ``tlbench recommend`` report: the answer first, every candidate, escaped text, the ladder plot; in a browser too."""

from __future__ import annotations

import html
import os
import re
import struct

import pytest

from tlbench.recommend.page import write_recommend_report
from tlbench.recommend.search import answer
from tlbench.report.browser import CHROMIUM, chromium_page

REQUIRED = bool(os.environ.get("TLBENCH_REQUIRE_BROWSER"))
HOSTILE_NAME = "<script>alert('name')</script> & cats"
HOSTILE_REASON = "<img src=x onerror=alert('reason')> stopped"
BACKBONES = ("timm/tf_efficientnet_lite0", "timm/mobilenetv2_100")
STRATEGIES = (("extractor", {"head": "logreg", "C": 1.0}, "extractor"),
              ("finetune", {"depth": 1, "lr": 0.001}, "finetune-part"),
              ("finetune", {"depth": 2, "lr": 0.0001}, "finetune-part"),
              ("finetune", {"depth": "all", "lr": 0.001}, "finetune-all"),
              ("finetune", {"depth": "all", "lr": 0.0001}, "finetune-all"),
              ("scratch", {"lr": 0.001}, "scratch"))
# (last rung, epochs, dropped at) per candidate, backbone by backbone in STRATEGIES order
LADDER = [(2, 9, None), (1, 3, "rung 1"), (0, 1, "rung 0"), (2, 9, None), (2, 9, None), (0, 1, "rung 0"),
          (1, 3, "rung 1"), (0, 1, "rung 0"), (0, 1, "rung 0"), (1, 3, "rung 1"), (None, 0, "failed"), (0, 1, "rung 0")]


def side(backbone, strategy, options, family, mean, seeds=(0, 1, 2)):
    interval = {"mean": mean, "low": mean - 0.03, "high": mean + 0.03, "method": "t interval over seeds"}
    return {"backbone": backbone, "strategy": strategy, "options": options, "family": family,
            "validation_accuracy": interval, "test_accuracy": {**interval, "mean": mean - 0.01}, "seeds": list(seeds),
            "converged": True, "best_epochs": [11, 14, None], "cell_ids": [f"cell-{s}" for s in seeds]}


def make_result() -> dict:
    """A recommendation.json as ``tlbench recommend`` writes it: 2 backbones x 6 candidates, 3 rungs searched."""
    candidates = []
    for i, (rung, epochs, dropped) in enumerate(LADDER):
        backbone, (strategy, options, family) = BACKBONES[i // 6], STRATEGIES[i % 6]
        top = 0.55 + 0.03 * (i % 6) - 0.05 * (i // 6)
        curve = [round(top * (1 - 0.6 / (e + 1.5)), 4) for e in range(epochs)]
        candidates.append({
            "backbone": backbone, "strategy": strategy, "options": dict(options), "family": family,
            "last_rung": rung, "epochs": epochs, "val_accuracy": curve[-1] if curve else None, "dropped_at": dropped,
            "reason": {"failed": "RuntimeError: CUDA out of memory", "rung 0": "pruned by successive halving at 1 epoch",
                       "rung 1": HOSTILE_REASON}.get(dropped), "converged": False, "curve": curve})
    result = {
        "format": 1, "folder": "/data/cats", "dataset": {"name": HOSTILE_NAME, "plugin": "folder", "root": "/data/cats"},
        "pick": side(BACKBONES[0], "finetune", {"depth": "all", "lr": 0.0001}, "finetune-all", 0.83),
        "runner_up": side(BACKBONES[0], "extractor", {"head": "logreg", "C": 1.0}, "extractor", 0.78),
        "comparison": {"difference": 0.05, "ci_low": 0.01, "ci_high": 0.09, "p_value": 0.012, "significant": True,
                       "method": "paired bootstrap over seeds and test images"},
        "candidates": candidates,
        "scores": [{"backbone": BACKBONES[0], "logme": 1.2345678, "seconds": 12.3, "kept": True, "dropped": None},
                   {"backbone": BACKBONES[1], "logme": 0.98765, "seconds": 8.1, "kept": True, "dropped": None},
                   {"backbone": "timm/convnext_tiny", "logme": None, "seconds": None, "kept": False,
                    "dropped": "no weights on this machine (offline)"}],
        "search": {"scheduler": "optuna.pruners.SuccessiveHalvingPruner", "min_resource": 1, "reduction_factor": 3,
                   "rungs": [1, 3, 9, 27, 30], "seed": 100, "image_size": 64, "stopped": "budget: rung 3 would not fit"},
        "budget_seconds": 600.0, "spent_seconds": 512.4, "full_grid_seconds_estimate": 5400.0,
        "full_grid_seconds_at_cap": 9000.0,
        "full_grid_estimate_method": "every candidate trained until it stops improving on 2 tuning seeds",
        "saved_model": "/out/cats/cells/cell-0", "answer": ""}
    result["answer"] = answer(result)
    return result


def test_the_page_answers_first_names_every_candidate_and_escapes_the_dataset(tmp_path):
    result = make_result()
    path = write_recommend_report(tmp_path, result)
    page = path.read_text(encoding="utf-8")
    assert path == tmp_path / "report.html"
    text = html.unescape(re.sub(r"<wbr>", "", page))
    lines = result["answer"].split("\n")
    assert len(lines) == 3 and all(f"<p>{html.escape(line)}</p>" in page for line in lines)
    assert page.index(html.escape(lines[0])) < page.index('id="pick"') < page.index('src="ladder.png"') \
        < page.index('id="candidates"') < page.index('id="scores"') < page.index('id="cost"')
    for c in result["candidates"]:
        assert re.search(f"<td>{re.escape(c['backbone'])}</td><td>{c['strategy']}</td>", text)
    assert "<script>alert" not in page and "<img src=x" not in page.replace("<wbr>", "")
    assert f"tlbench recommend: {html.escape(HOSTILE_NAME)}</h1>" in page
    assert f"<td>{html.escape(HOSTILE_REASON)}</td>" in page.replace("<wbr>", "")
    rows = re.findall(r"<tr><td>(.*?)</td>.*?</tr>", text.split('id="candidates"')[1].split("</table>")[0])
    assert len(rows) == 12
    assert "finetune[depth=all,lr=0.0001]" in text and "0.0500" in text and "p = 0.012: significant" in text
    assert "1.2346" in text and "8.5 min of a 10.0 min budget" in text and "90.0 min (150.0 min at the cap)" in text and "0.09" in text
    assert "tlbench predict --cell /out/cats/cells/cell-0 IMAGE" in text
    assert (tmp_path / "ladder.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_the_candidates_go_best_first_and_the_failed_one_last(tmp_path):
    page = write_recommend_report(tmp_path, make_result()).read_text(encoding="utf-8")
    table = page.split('id="candidates"')[1].split("</table>")[0].replace("<wbr>", "")
    rows = [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", table)[1:]]
    rungs = [-1 if r[4] == "—" else int(r[4]) for r in rows]
    assert rungs == sorted(rungs, reverse=True)
    assert rows[0][:3] == [BACKBONES[0], "finetune", "depth=all,lr=0.0001"] and rows[0][6] == "0.6277"
    assert rows[-1][7:] == ["failed", "RuntimeError: CUDA out of memory"] and rows[-1][6] == "—"


def test_no_runner_up_no_comparison_and_open_intervals_render(tmp_path):
    result = make_result()
    result.update(runner_up=None, comparison=None, saved_model=None, full_grid_seconds_estimate=0.0,
                  answer="Fine-tune all of timm/x.\nNothing else ran.")
    result["pick"]["test_accuracy"].update(low=None, high=None)
    result["pick"]["best_epochs"] = [None, None, None]
    for c in result["candidates"]:
        c.update(dropped_at="rung 0", curve=c["curve"][:1])  # every line grey: the legend has only "dropped"
    page = write_recommend_report(tmp_path, result).read_text(encoding="utf-8")
    assert "<p>Fine-tune all of timm/x.</p><p>Nothing else ran.</p>" in page
    assert "runner-up</th>" not in page and "No runner-up" in page and "tlbench predict" not in page
    assert "0.8200 [—, —]" in page and "—, —, —" in page
    assert (tmp_path / "ladder.png").read_bytes().startswith(b"\x89PNG")


def test_the_ladder_is_a_wide_png(tmp_path):
    write_recommend_report(tmp_path, make_result())
    data = (tmp_path / "ladder.png").read_bytes()
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert data[12:16] == b"IHDR" and 900 <= width <= 1400 and 400 <= height <= 1000


def test_in_chromium_at_1280_px_the_answer_is_on_the_first_screen_and_nothing_overflows(tmp_path):
    if not REQUIRED and not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; TLBENCH_REQUIRE_BROWSER=1 makes this a failure)")
    if not REQUIRED:
        pytest.importorskip("playwright", reason="playwright is not installed (pip install 'tlbench[browser]')")
    result = make_result()
    path = write_recommend_report(tmp_path, result)
    problems = []
    with chromium_page(width=1280, height=800) as page:
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("dialog", lambda dialog: problems.append(f"dialog {dialog.message}") or dialog.dismiss())
        page.on("request", lambda request: None if request.url.startswith("file:")
                else problems.append(f"requested {request.url}"))
        page.goto(path.as_uri(), wait_until="load")
        shown = page.eval_on_selector_all("#answer p", "all => all.map(p => [p.innerText, p.getBoundingClientRect().top,"
                                          " p.getBoundingClientRect().bottom, p.checkVisibility()])")
        pick_top = page.eval_on_selector("#pick table", "t => t.getBoundingClientRect().top")
        image = page.eval_on_selector("img", "i => [i.complete, i.naturalWidth, i.getBoundingClientRect().right]")
        scroll_width, inner_width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        wide = page.evaluate("[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right"
                             " > window.innerWidth + 0.5).map(e => e.tagName + ' ' + e.textContent.slice(0, 40))")
        title = page.title()
    assert problems == []
    assert [s[0] for s in shown] == result["answer"].split("\n")
    assert all(visible and 0 <= top < bottom <= 800 for _, top, bottom, visible in shown)
    assert pick_top < 800  # the pick's table starts on the first screen too
    assert image[0] and image[1] > 900 and image[2] <= 1280
    assert scroll_width <= inner_width == 1280 and wide == []
    assert title == f"tlbench recommend: {HOSTILE_NAME}"
