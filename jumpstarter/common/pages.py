"""Self-contained HTML pages (the run's timeline, the lab's health): one file, inline CSS and SVG, no script,
nothing fetched, so it opens from disk anywhere and can be kept with a CI run. What the pages share: their
frame, styling and the few ways they write numbers and names."""

from __future__ import annotations

from html import escape

CSS = """
body { margin: 0; padding: 0 16px 24px 16px; font: 13px/1.4 "DejaVu Sans", Verdana, sans-serif; color: #222;
       background: #fff; }
header { height: 72px; box-sizing: border-box; padding-top: 10px; overflow: hidden; }
h1 { font-size: 18px; margin: 0 0 4px 0; }
.meta { margin: 0; color: #555; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
svg.chart { display: block; }
.band { fill: #fff; }
.odd .band { fill: #f4f6f8; }
.name { font-size: 13px; font-weight: bold; fill: #222; }
.stats { font-size: 11px; fill: #666; }
.tick { stroke: #dde1e6; }
.ticklabel { font-size: 11px; fill: #666; }
.legend span { display: inline-block; margin: 10px 14px 0 0; }
.legend i { display: inline-block; width: 22px; height: 11px; margin-right: 5px; vertical-align: -1px; }
table.usage { border-collapse: collapse; margin-top: 14px; }
table.usage th, table.usage td { padding: 3px 10px; border-bottom: 1px solid #e3e6ea; text-align: right; }
table.usage th:first-child, table.usage td:first-child { text-align: left; }
.advice { font-weight: bold; }
"""


def head(heading: str, meta: str, css: str = "") -> str:
    """The page up to its body's content: title, styles (``CSS`` and the page's own), the header line."""
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8"/>\n<title>{escape(heading)}</title>\n'
        f"<style>{CSS}{css}</style>\n</head>\n<body>\n<header>\n<h1>{escape(heading)}</h1>\n"
        f'<p class="meta">{escape(meta)}</p>\n</header>\n'
    )


FOOT = "</body>\n</html>\n"


def seconds(value: float) -> str:
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"


def fit(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, an ellipsis saying so."""
    return text if len(text) <= limit else text[: max(1, limit - 1)] + "…"
