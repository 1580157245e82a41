"""``OUT/report.html`` of ``tlbench recommend``: the answer on the first screen, then the pick against the
runner-up, the search's ladder plot (``ladder.png`` beside the page), its candidates, scores and cost."""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from tlbench.files import atomic_write, write_text
from tlbench.recommend.search import past_the_budget
from tlbench.report.render import CSS, OKABE_ITO, Table, html_block, html_page

LADDER = "ladder.png"
PAGE_CSS = CSS + """
body { max-width: 75rem; } main { overflow-wrap: break-word; }
.answer { font-size: 1.15rem; border-left: 5px solid #0072B2; background: #f3f8fc; padding: .3rem 1rem; }
.answer p { margin: .45rem 0; } .answer p:first-child { font-weight: 600; }
table.scenarios td { width: auto; }
"""


def write_recommend_report(out: Path, result: Mapping[str, Any]) -> Path:
    """Write ``out/ladder.png`` and ``out/report.html`` for ``result`` (a recommendation.json); the page's path."""
    out = Path(out)
    _write_ladder(out / LADDER, result)
    title = f"tlbench recommend: {result['dataset']['name']}"
    answer = "".join(f"<p>{html.escape(line)}</p>" for line in str(result["answer"]).splitlines() if line.strip())
    saved = result["saved_model"]
    body = "\n".join([
        f"<h1>{html.escape(title)}</h1>", f"<div class=\"answer\" id=\"answer\">{answer}</div>",
        _section("pick", "The pick and the runner-up", _sides(result)),
        _section("ladder", "The search: successive halving", f"<figure><img src=\"{LADDER}\" alt=\"validation "
                 "accuracy against epochs, one line per candidate\"><figcaption>Best validation accuracy so far against "
                 "epochs, one line per candidate (search seed); grey: dropped; thick: the pick.</figcaption></figure>"),
        _section("candidates", "Every candidate, best first", _table(
            ("backbone", "strategy", "options", "family", "last rung", "epochs", "val accuracy", "dropped at", "reason"),
            _candidate_rows(result["candidates"]), "sortable")),
        _section("scores", "Stage 1: transferability scores", _table(
            ("backbone", "LogME", "kept", "dropped", "seconds"),
            [(s["backbone"], _num(s["logme"]), _yes(s["kept"]), s["dropped"] or "—", _num(s["seconds"], 1))
             for s in result["scores"]])),
        _section("cost", "Cost and search settings", _table(("", "value"), _cost_rows(result), "scenarios")),
        _section("model", "The saved model", f"<p><code>tlbench predict --cell {html.escape(saved)} IMAGE</code></p>")
        if saved else ""])
    path = out / "report.html"
    write_text(path, html_page(title, body, PAGE_CSS, sortable=True))
    return path


def _section(anchor: str, title: str, *parts: str) -> str:
    return f"<section id=\"{anchor}\">\n<h2>{title}</h2>\n" + "\n".join(parts) + "\n</section>"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], kind: str = "") -> str:
    """A report_render table: every cell escaped, long names wrapping after / _ [ = and ,."""
    return html_block(Table(headers, [[str(cell) for cell in row] for row in rows], kind=kind))


def _sides(result: Mapping[str, Any]) -> str:
    """The pick and the runner-up side by side, then their comparison in test accuracy."""
    sides = [("pick", result["pick"])] + ([("runner-up", result["runner_up"])] if result["runner_up"] else [])
    fields: list[tuple[str, Callable[[Mapping[str, Any]], str]]] = [
        ("backbone", lambda s: s["backbone"]), ("strategy", _strategy), ("family", lambda s: s["family"]),
        ("validation accuracy", lambda s: _interval(s["validation_accuracy"])),
        ("test accuracy", lambda s: _interval(s["test_accuracy"])),
        ("seeds", lambda s: ", ".join(map(str, s["seeds"]))), ("converged", lambda s: _yes(s["converged"])),
        ("best epochs", lambda s: ", ".join("—" if e is None else str(e) for e in s["best_epochs"]))]
    table = _table(("", *(label for label, _ in sides)), [(f, *(get(s) for _, s in sides)) for f, get in fields],
                   "scenarios")
    c = result["comparison"]
    if not c:
        return table + "\n<p>No runner-up: no candidate of another family finished the search.</p>"
    line = (f"Pick minus runner-up in test accuracy: {c['difference']:+.4f}, 95% CI [{_num(c['ci_low'])}, "
            f"{_num(c['ci_high'])}], p = {c['p_value']:.3g}: "
            f"{'significant' if c['significant'] else 'not significant'} ({c['method']}).")
    return table + f"\n<p id=\"comparison\">{html.escape(line)}</p>"


def _candidate_rows(candidates: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    """Best first: the deepest rung reached, then the validation accuracy there."""
    ranked = sorted(candidates, reverse=True, key=lambda c: (-1 if c["last_rung"] is None else c["last_rung"],
                                                             -1.0 if c["val_accuracy"] is None else c["val_accuracy"]))
    return [(c["backbone"], c["strategy"], _options(c["options"]) or "—", c["family"], _num(c["last_rung"], None),
             c["epochs"], _num(c["val_accuracy"]), c["dropped_at"] or "—", c["reason"] or "—") for c in ranked]


def _cost_rows(result: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    spent, full, search = result["spent_seconds"], result["full_grid_seconds_estimate"], result["search"]
    return [("spent", f"{spent / 60:.1f} min of a {result['budget_seconds'] / 60:.1f} min budget{past_the_budget(result)}"),
            ("full grid estimate", f"{full / 60:.1f} min ({result['full_grid_seconds_at_cap'] / 60:.1f} min at the cap): "
                                   f"{result['full_grid_estimate_method']}"),
            ("spent / full grid", f"{spent / full:.2f}" if full else "—"),
            ("scheduler", search["scheduler"]), ("min resource (epochs)", search["min_resource"]),
            ("reduction factor", search["reduction_factor"]),
            ("rungs (epochs)", ", ".join(map(str, search["rungs"]))), ("search seed", search["seed"]),
            ("image size", f"{search['image_size']} px"), ("stopped", search["stopped"])]


def _write_ladder(path: Path, result: Mapping[str, Any]) -> None:
    """Each candidate's best validation accuracy by epoch: dropped grey and thin, the rest coloured, the pick thick."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(10, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    pick = result["pick"]
    colours = iter(OKABE_ITO * len(result["candidates"]))
    handles = []
    for c in result["candidates"]:
        epochs = range(1, len(c["curve"]) + 1)
        if c["dropped_at"] is not None:
            ax.plot(epochs, c["curve"], color="#b0b0b0", lw=0.8, marker="o", ms=2.5, zorder=1)
            continue
        chosen = all(c[k] == pick[k] for k in ("backbone", "strategy", "options"))
        label = f"{c['backbone']} {_strategy(c)}" + (" (the pick)" if chosen else "")
        handles += ax.plot(epochs, c["curve"], color=next(colours), lw=3.2 if chosen else 1.6, marker="o",
                           ms=5 if chosen else 3.5, zorder=3 if chosen else 2, label=label)
    if any(c["dropped_at"] is not None for c in result["candidates"]):
        handles.append(Line2D([], [], color="#b0b0b0", lw=0.8, marker="o", ms=2.5, label="dropped"))
    longest = max((len(c["curve"]) for c in result["candidates"]), default=1)
    rungs = [r for r in result["search"]["rungs"] if r <= longest] or [1]
    ax.set_xscale("log", base=2)
    ax.set_xticks(rungs, [str(r) for r in rungs], minor=False)
    ax.set_xticks([], minor=True)
    ax.set_xlim(0.85, max(longest, 2) * 1.15)
    ax.set_xlabel("epochs (log scale; ticks at the rungs)")
    ax.set_ylabel("best validation accuracy so far")
    ax.grid(alpha=0.3)
    fig.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False)
    atomic_write(path, partial(fig.savefig, format="png", dpi=110))


def _strategy(entry: Mapping[str, Any]) -> str:
    """``finetune[depth=2,lr=0.001]``, as the run report writes a strategy."""
    options = _options(entry["options"])
    return f"{entry['strategy']}[{options}]" if options else entry["strategy"]


def _options(options: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in options.items())


def _interval(found: Mapping[str, Any]) -> str:
    return f"{found['mean']:.4f} [{_num(found['low'])}, {_num(found['high'])}]"


def _num(value: float | None, digits: int | None = 4) -> str:
    return "—" if value is None else str(value) if digits is None else f"{value:.{digits}f}"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"
