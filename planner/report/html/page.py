"""One self-contained HTML page: text, tables and Plotly charts, with plotly.js inlined once.

The page needs no server and no network: the figures are plain Plotly JSON (data + layout, the
schema of https://plotly.com/javascript/reference/) in one `application/json` block, drawn by
the inlined plotly.js when the page loads. Every string from an input file is HTML-escaped in
the text and cannot end the JSON block (`<`, `>` and `&` are written as \\u escapes).

When every chart has been drawn the page sets `data-charts-rendered` on <body> to the number of
charts, and a script error anywhere sets `data-errors`: the browser tests read both from the DOM.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from typing import Any

CHART_CONFIG = {"displaylogo": False, "responsive": True}


@dataclass
class Section:
    """A heading, paragraphs of plain text, then optionally a chart (a Plotly figure as a dict
    with `data` and `layout`) and a table (header and rows of plain text)."""

    heading: str
    notes: list[str] = field(default_factory=list)
    figure: dict[str, Any] | None = None
    chart_name: str = ""
    table_header: list[str] = field(default_factory=list)
    table_rows: list[list[str]] = field(default_factory=list)


def chart_text(text: str) -> str:
    """A string from an input file as chart text: Plotly reads a few HTML tags in labels (<b>,
    <a href>, <br>), so <, > and & are written as entities, which it shows as themselves."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def plotly_js() -> str:
    """plotly.js (minified) as shipped in the plotly Python package."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _json(value: Any) -> str:
    """Strict JSON that is safe inside a <script> block (no NaN: a non-finite number is null)."""
    text = json.dumps(_finite(value), allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1200px;
       color: #222; padding: 0 16px; }
h1 { font-size: 1.4em; margin-bottom: 4px; } h2 { font-size: 1.15em; margin-top: 32px; }
p.sub { color: #555; margin: 2px 0; font-family: ui-monospace, monospace; font-size: 0.9em; }
p.note { color: #444; margin: 4px 0; font-size: 0.92em; }
table { border-collapse: collapse; font-size: 0.85em; margin-top: 8px; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
td.num { text-align: right; font-family: ui-monospace, monospace; white-space: nowrap; }
div.chart { width: 100%; min-height: 420px; }
"""

SCRIPT = """
(function () {
  var errors = [];
  window.addEventListener("error", function (e) {
    errors.push(String(e.message)); document.body.setAttribute("data-errors", errors.join(" | "));
  });
  var figures = JSON.parse(document.getElementById("figures").textContent);
  var drawn = [];
  figures.forEach(function (f) {
    drawn.push(Plotly.newPlot(f.id, f.figure.data, f.figure.layout, f.config));
  });
  Promise.all(drawn).then(function () {
    document.body.setAttribute("data-charts-rendered", String(drawn.length));
  }, function (e) {
    errors.push(String(e)); document.body.setAttribute("data-errors", errors.join(" | "));
  });
})();
"""


def _cell(text: str) -> str:
    value = html.escape(str(text))
    numeric = len(value) <= 16 and (value[:1].isdigit() or (value[:1] in "+-" and value[1:2].isdigit()))
    return f'<td class="num">{value}</td>' if numeric else f"<td>{value}</td>"


def render_page(title: str, subtitle: list[str], sections: list[Section], js: str | None = None) -> str:
    """The whole HTML document. `js` replaces the inlined plotly.js (tests only)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style>",
        f"<script>{plotly_js() if js is None else js}</script>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
        *(f'<p class="sub">{html.escape(line)}</p>' for line in subtitle),
    ]
    figures = []
    for section in sections:
        parts.append(f"<h2>{html.escape(section.heading)}</h2>")
        parts.extend(f'<p class="note">{html.escape(n)}</p>' for n in section.notes)
        if section.figure is not None:
            chart_id = f"chart-{len(figures)}"
            parts.append(f'<div class="chart" id="{chart_id}" data-chart="{html.escape(section.chart_name)}"></div>')
            figures.append({"id": chart_id, "figure": section.figure, "config": CHART_CONFIG})
        if section.table_header:
            parts.append("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in section.table_header)
                         + "</tr></thead><tbody>")
            parts.extend("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in section.table_rows)
            parts.append("</tbody></table>")
    parts.append(f'<script type="application/json" id="figures">{_json(figures)}</script>')
    parts.append(f"<script>{SCRIPT}</script>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def chart_names(sections: list[Section]) -> list[str]:
    """The names of the charts a page made of `sections` draws, in order."""
    return [s.chart_name for s in sections if s.figure is not None]
