"""One report, two renderings: blocks (headings, paragraphs, tables, lists, images) as Markdown and as
a self-contained HTML page (CSS inline, images as base64 PNG, nothing loaded from anywhere).

Text in blocks may use four inline Markdown marks: `code`, **bold**, *italic* and links to an anchor of
the page, ``[text](#anchor)``. The one script of the page sorts a ``sortable`` table by a clicked header.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 1


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: Sequence[str]


@dataclass(frozen=True)
class Table:
    headers: Sequence[str]
    rows: Sequence[Sequence[str]]
    marks: Mapping[str, str] = field(default_factory=dict)  # cell text -> CSS class of its HTML cell
    kind: str = ""  # the CSS class of the HTML table: "sortable" (a click on a header sorts it), "scenarios"


@dataclass(frozen=True)
class Image:
    path: Path  # a PNG beside the report
    caption: str


@dataclass(frozen=True)
class Section:
    anchor: str  # the HTML id
    title: str
    blocks: Sequence[Block]


Block = Heading | Paragraph | Bullets | Table | Image | Section

# Okabe & Ito's colour-blind-safe palette, also used by the plots
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 96rem;
       padding: 0 1.5rem; color: #1a1a1a; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.3rem; border-bottom: 1px solid #ccc; padding-bottom: .2rem; margin-top: 2.2rem; }
h3 { font-size: 1.05rem; margin-top: 1.4rem; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .86rem; }
th, td { border: 1px solid #c8c8c8; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
tr:nth-child(even) td { background: #fafafa; }
td.verdict-agrees { background: #cfe6f5 !important; font-weight: 600; }
td.verdict-disagrees { background: #f9dcc4 !important; font-weight: 600; }
td.verdict-not-significant { background: #eeeeee !important; }
td.verdict-not-covered { color: #666; font-style: italic; }
code { background: #f3f3f3; padding: 0 .2rem; border-radius: 3px; }
figure { margin: 1rem 0 2rem; } figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: .9rem; color: #444; }
table.sortable { width: 100%; }
table.sortable th { position: sticky; top: 0; z-index: 1; cursor: pointer; box-shadow: 0 1px 0 #c8c8c8; }
table.sortable th[aria-sort="ascending"]::after { content: " \\25B2"; }
table.sortable th[aria-sort="descending"]::after { content: " \\25BC"; }
table.scenarios td { white-space: pre-line; width: 40%; }
table.scenarios th[scope="row"] { width: 20%; }
li { margin: .25rem 0; }
"""
_INLINE = [(re.compile(r"`([^`]+)`"), r"<code>\1</code>"), (re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>"),
           (re.compile(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])"), r"<em>\1</em>"),
           (re.compile(r"\[([^\]]+)\]\((#[\w-]+)\)"), r'<a href="\2">\1</a>')]
_BREAKS = re.compile(r"([/_=,]|\[(?=[A-Za-z]))(?=\S)")  # not in "0.759 [0.596, 0.922]"
# sorts a table.sortable by the clicked header's column: numbers (a cell's first) as numbers, else text
SORT_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach((header, column) => header.addEventListener("click", () => {
  const body = header.closest("table").tBodies[0];
  const up = header.getAttribute("aria-sort") !== "ascending";
  header.closest("tr").querySelectorAll("th").forEach(h => h.removeAttribute("aria-sort"));
  header.setAttribute("aria-sort", up ? "ascending" : "descending");
  const key = row => { const text = row.cells[column].textContent.trim(); const n = parseFloat(text);
                       return Number.isNaN(n) ? text : n; };
  const rows = Array.from(body.rows).sort((a, b) => { const x = key(a), y = key(b);
    const order = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === "number" ? -1 : 1);
    return up ? order : -order; });
  rows.forEach(row => body.appendChild(row));
}));
"""


def render_markdown(blocks: Sequence[Block]) -> str:
    """The blocks as GitHub Markdown; images are linked files beside the report."""
    from tabulate import tabulate

    parts = []
    for block in blocks:
        if isinstance(block, Section):
            parts.append(f"## {block.title}")
            parts.append(render_markdown(block.blocks).rstrip("\n"))
        elif isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Paragraph):
            parts.append(block.text)
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Table):
            rows = [[_markdown_cell(c) for c in row] for row in block.rows]
            parts.append(tabulate(rows, headers=[_markdown_cell(h) for h in block.headers], tablefmt="github",
                                  disable_numparse=True))
        elif isinstance(block, Image):
            parts.append(f"![{block.caption}]({block.path.name})\n\n*{block.caption}* ([{block.path.name}]({block.path.name}))")
    return "\n\n".join(p for p in parts if p) + "\n"


def _markdown_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", "<br>")


def render_html(blocks: Sequence[Block], title: str) -> str:
    """The blocks as one self-contained HTML page: every text escaped, every image inline."""
    body = "\n".join(html_block(b) for b in blocks)
    return html_page(title, body, sortable=any(isinstance(t, Table) and t.kind == "sortable" for t in _tables(blocks)))


def html_page(title: str, body: str, css: str = CSS, sortable: bool = False) -> str:
    """A whole HTML page around ``body`` (already HTML): head, style, and the table-sorting script when ``sortable``."""
    script = f"<script>{SORT_SCRIPT}</script>\n" if sortable else ""
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{css}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n"
            f"{script}</body>\n</html>\n")


def _tables(blocks: Sequence[Block]) -> Iterator[Block]:
    for block in blocks:
        yield from _tables(block.blocks) if isinstance(block, Section) else [block]


def html_block(block: Block) -> str:
    if isinstance(block, Section):
        inner = "\n".join(html_block(b) for b in block.blocks)
        return f"<section id=\"{html.escape(block.anchor)}\">\n<h2>{inline_html(block.title)}</h2>\n{inner}\n</section>"
    if isinstance(block, Heading):
        return f"<h{block.level}>{inline_html(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        return f"<p>{inline_html(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>\n" + "\n".join(f"<li>{inline_html(item)}</li>" for item in block.items) + "\n</ul>"
    if isinstance(block, Table):
        head = "".join(f"<th scope=\"col\">{_breakable(h)}</th>" for h in block.headers)
        rows = "\n".join("<tr>" + "".join(_html_cell(c, block.marks, header=block.kind == "scenarios" and i == 0)
                                           for i, c in enumerate(row)) + "</tr>" for row in block.rows)
        kind = f" class=\"{html.escape(block.kind)}\"" if block.kind else ""
        return f"<table{kind}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>"
    if isinstance(block, Image):
        data = base64.b64encode(block.path.read_bytes()).decode("ascii")
        caption = inline_html(block.caption)
        return (f"<figure id=\"{html.escape(block.path.stem)}\"><img src=\"data:image/png;base64,{data}\" "
                f"alt=\"{html.escape(block.caption)}\"><figcaption>{caption}</figcaption></figure>")
    raise TypeError(f"not a report block: {block!r}")


def _html_cell(text: str, marks: Mapping[str, str], header: bool = False) -> str:
    if header:
        return f"<th scope=\"row\">{html.escape(text)}</th>"
    mark = marks.get(text)
    return f"<td class=\"{html.escape(mark)}\">{_breakable(text)}</td>" if mark else f"<td>{_breakable(text)}</td>"


def _breakable(text: str) -> str:
    """Escaped text that may wrap after / _ [ = and , too (``timm/tf_efficientnet_lite0``, ``finetune[depth=all]``),
    so that a wide table narrows to its window without breaking words anywhere."""
    return _BREAKS.sub(r"\1<wbr>", html.escape(text))


def inline_html(text: str) -> str:
    """Escaped text with `code`, **bold** and *italic* as HTML."""
    escaped = html.escape(text)
    for pattern, replacement in _INLINE:
        escaped = pattern.sub(replacement, escaped)
    return escaped
