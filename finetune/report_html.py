"""report.html: the report as one self-contained page (finetune-report --html): the configurations
table with sortable columns, the figures inlined, every run with links to its folder, results.json,
log and TensorBoard events, its provenance, and the failed and pruned runs with their reasons."""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path
from typing import Any, Sequence

Cell = tuple[str, Any]  # (the text shown, the value the column sorts by: a number, or the text)
STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f1f3f5; cursor: pointer; user-select: none; white-space: nowrap; }
th[aria-sort=ascending]::after { content: " \\25B2"; } th[aria-sort=descending]::after { content: " \\25BC"; }
td.number { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.warning { background: #fff3cd; border: 1px solid #e0c36b; padding: 0.5em 1em; }
figure { display: inline-block; margin: 0.5em; } figure img { max-width: 560px; border: 1px solid #ddd; }
"""
# a click on a header sorts the table's rows by that column, numbers as numbers; a second click reverses
SCRIPT = """
document.querySelectorAll("table.sortable th").forEach((header, column) => {
  header.addEventListener("click", () => {
    const table = header.closest("table"), body = table.tBodies[0];
    const ascending = header.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("th").forEach(other => other.removeAttribute("aria-sort"));
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    const key = row => row.cells[column].dataset.sort;
    const rows = Array.from(body.rows).sort((a, b) => {
      const x = key(a), y = key(b), nx = parseFloat(x), ny = parseFloat(y);
      if (x === "" || y === "") return (x === "") - (y === "");  // empty cells last, either way
      const order = !isNaN(nx) && !isNaN(ny) ? nx - ny : x.localeCompare(y);
      return ascending ? order : -order;
    });
    rows.forEach(row => body.appendChild(row));
  });
});
"""


def page(title: str, notes: Sequence[str], summary: tuple[list[str], list[list[Cell]]],
         runs: tuple[list[str], list[list[Cell]]], figures: Sequence[Path], problems: Sequence[tuple[str, str, str]],
         environments: dict[str, dict[str, int]]) -> str:
    """The whole page. `notes`: lines under the title (the first a warning where the runs' environments
    differ); `problems`: (run, status, reason) of the runs that did not complete; `environments`:
    per provenance key, how many runs had each value."""
    parts = [f"<h1>{escape(title)}</h1>"]
    parts += [f'<p class="warning">{escape(note)}</p>' if note.startswith("Warning") else f"<p>{escape(note)}</p>"
              for note in notes]
    parts += ["<h2>Configurations</h2>", _table("configurations", *summary)]
    if figures:
        parts.append("<h2>Figures</h2>")
        parts += [_figure(path) for path in figures]
    if problems:
        parts.append(f"<h2>Runs that did not complete ({len(problems)})</h2><ul>")
        parts += [f"<li><a href=\"{_href(run)}/\">{escape(run)}</a>: <b>{escape(status)}</b>: {escape(reason or '')}</li>"
                  for run, status, reason in problems]
        parts.append("</ul>")
    parts += ["<h2>Runs</h2>", _table("runs", *runs)]
    parts += ["<h2>Provenance</h2>", _environments(environments)]
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(parts) + f"\n<script>{SCRIPT}</script></body></html>\n")


def _table(name: str, columns: list[str], rows: list[list[Cell]]) -> str:
    header = "".join(f"<th>{escape(column)}</th>" for column in columns)
    body = "\n".join("<tr>" + "".join(_td(cell) for cell in row) + "</tr>" for row in rows)
    return f'<table class="sortable" id="{name}"><thead><tr>{header}</tr></thead><tbody>\n{body}\n</tbody></table>'


def _td(cell: Cell) -> str:
    text, value = cell
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    sort = "" if value is None else repr(float(value)) if number else str(value)
    shown = text if text.startswith("<a ") else escape(text)  # links are built here, from escaped parts
    numeric = number or (isinstance(value, (int, float)) and text[:1] in "+-0123456789")
    return f'<td data-sort="{escape(sort)}"{" class=number" if numeric else ""}>{shown}</td>'


def links(run: str) -> str:
    """A run's folder, record, log and TensorBoard events, relative to the report."""
    href = _href(run)
    return " ".join(f'<a href="{href}/{target}">{escape(label)}</a>' for label, target in
                    (("folder", ""), ("results.json", "results.json"), ("log", "finetune.log"),
                     ("tensorboard", "tensorboard/")))


def _href(run: str) -> str:
    return escape(Path(run).as_posix(), quote=True)


def _figure(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img alt="{escape(path.stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(path.name)}</figcaption></figure>")


def _environments(environments: dict[str, dict[str, int]]) -> str:
    rows = "".join(f"<tr><td>{escape(key)}</td><td>{escape(value)}</td><td class=number>{count}</td></tr>"
                   for key, counted in environments.items() for value, count in counted.items())
    return ("<table><thead><tr><th>what</th><th>value</th><th>runs</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")
