"""Self-contained HTML building blocks: escaped text, tables, embedded figures, sections, the page.

Every page is one file: images are embedded as ``data:`` URIs (base64 PNG or inline SVG), styles
and scripts are inline, and nothing is fetched from the network, so a report opens offline in any
browser. Numbers are formatted by :func:`fmt` so a test can find exactly the text a JSON value
becomes.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from vbiopsy.errors import ConfigError

DIGITS = 3
"""Decimals of every number shown in a report (a test formats the JSON value the same way)."""

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;max-width:1100px;
padding:1em 2em;color:#1d1d1f;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #446;padding-bottom:.2em}h2{font-size:1.3em;margin-top:1.6em;
border-bottom:1px solid #ccd}h3{font-size:1.1em;margin-top:1.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #ccd;padding:.25em .6em;
text-align:right}th{background:#eef}td:first-child,th:first-child{text-align:left}
caption{caption-side:bottom;text-align:left;font-size:.85em;color:#444;padding-top:.3em;max-width:60em}
figure{display:inline-block;vertical-align:top;margin:.6em 1em .6em 0;max-width:520px}
figure img{max-width:100%;border:1px solid #dde}figcaption{font-size:.85em;color:#444}
.notice{background:#fff4e5;border:1px solid #f0b060;padding:.6em 1em;border-radius:4px}
.note{color:#555;font-size:.9em}pre{background:#f6f6f8;padding:.6em;overflow-x:auto;font-size:.8em}
"""


@dataclass(frozen=True)
class Figure:
    """An image for a report: encoded bytes, their MIME type, a caption a newcomer understands, alt text."""

    data: bytes
    mime: str
    caption: str
    alt: str

    def __post_init__(self) -> None:
        if self.mime not in ("image/png", "image/svg+xml"):
            raise ConfigError(f"figure mime must be image/png or image/svg+xml, got {self.mime!r}")
        if not self.data:
            raise ConfigError(f"figure {self.alt!r} has no image data")


@dataclass(frozen=True)
class Cell:
    """A table value read from a run's JSON: ``source`` is its dotted path there (e.g. ``test.auc.auc``),
    written as the cell's ``data-json`` attribute so a test can check the shown number against the file;
    ``p_value`` cells are shown with 3 significant digits instead of :data:`DIGITS` decimals."""

    value: Any
    source: str
    p_value: bool = False


def escape(text: Any) -> str:
    """``text`` as HTML-safe text (quotes escaped too)."""
    return html.escape(str(text), quote=True)


def fmt(value: Any, digits: int = DIGITS) -> str:
    """A number as shown in reports: ``digits`` decimals for floats, plain integers, ``—`` for missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_cell(value: Any) -> str:
    """The text of a table cell: :func:`fmt`, or 3 significant digits for a p-value :class:`Cell`."""
    if isinstance(value, Cell):
        if value.p_value and isinstance(value.value, (int, float)) and not isinstance(value.value, bool):
            return f"{float(value.value):.3g}"
        return fmt(value.value)
    return fmt(value)


def _td(value: Any) -> str:
    source = f' data-json="{escape(value.source)}"' if isinstance(value, Cell) else ""
    return f"<td{source}>{escape(fmt_cell(value))}</td>"


def data_uri(data: bytes, mime: str) -> str:
    """``data:<mime>;base64,...`` of ``data``."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def figure_html(figure: Figure) -> str:
    """``<figure>`` with the embedded image and its caption."""
    return (f'<figure><img src="{data_uri(figure.data, figure.mime)}" alt="{escape(figure.alt)}">'
            f"<figcaption>{escape(figure.caption)}</figcaption></figure>")


def table_html(columns: Sequence[str], rows: Iterable[Sequence[Any]], caption: str = "",
               css_class: str = "") -> str:
    """A table; cells (plain values or :class:`Cell`) are formatted by :func:`fmt_cell` and escaped.
    Every row must have ``len(columns)`` cells."""
    if not columns:
        raise ConfigError("a table needs at least one column")
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = list(row)
        if len(cells) != len(columns):
            raise ConfigError(f"table row {cells!r} has {len(cells)} cells for {len(columns)} columns")
        body.append("<tr>" + "".join(_td(v) for v in cells) + "</tr>")
    cls = f' class="{escape(css_class)}"' if css_class else ""
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f"<table{cls}>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def paragraph(text: str, css_class: str = "") -> str:
    """An escaped paragraph."""
    cls = f' class="{escape(css_class)}"' if css_class else ""
    return f"<p{cls}>{escape(text)}</p>"


def preformatted(text: str) -> str:
    """Escaped preformatted text (configs, logs)."""
    return f"<pre>{escape(text)}</pre>"


def section_html(title: str, parts: Iterable[str], level: int = 2, anchor: str = "") -> str:
    """A heading followed by already-rendered ``parts``."""
    if level not in (2, 3, 4):
        raise ConfigError(f"section level must be 2, 3 or 4, got {level!r}")
    ident = f' id="{escape(anchor)}"' if anchor else ""
    return f"<section{ident}><h{level}>{escape(title)}</h{level}>{''.join(parts)}</section>"


def page_html(title: str, body: Iterable[str], *, notice: str = "", script: str = "") -> str:
    """The whole document: inline CSS, an optional notice box, the body parts and an optional inline script."""
    box = f'<div class="notice">{escape(notice)}</div>' if notice else ""
    code = f"<script>\n{script}\n</script>" if script else ""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{escape(title)}</h1>{box}{''.join(body)}{code}</body></html>\n")
