"""Write a report: one self-contained HTML page, a Markdown summary, PNGs and CSV tables."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from topθ_hw.outputs import write_bytes_atomic, write_text_atomic  # noqa: F401 (compare imports them here)
from topθ_hw.report.figure import Figure

CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
figure{margin:2em 0;border-top:1px solid #ddd;padding-top:1em}img{max-width:100%}
.prov{font-size:.85em;background:#f4f4f4;border-left:4px solid #888;padding:.4em .7em}
.prov b{text-transform:uppercase}table{border-collapse:collapse;font-size:.8em}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}caption{text-align:left}"""


def _figure_html(f: Figure) -> str:
    data = base64.b64encode(f.png).decode()
    return (f'<figure id="{f.name}"><h2>{html.escape(f.title)}</h2>'
            f'<img alt="{html.escape(f.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption><p>{html.escape(f.caption)}</p>"
            f'<p class="prov"><b>{html.escape(f.provenance)}</b> — {html.escape(f.source)}</p>'
            f'<p>Table: <code>{f.name}.csv</code> ({len(f.table)} rows)</p></figcaption></figure>')


def _table_html(name: str, df: pd.DataFrame) -> str:
    return (f'<section id="table-{name}"><h2>{html.escape(name)}</h2>'
            + df.to_html(index=False, float_format=lambda x: f"{x:.4g}", border=0) + "</section>")


def render_html(title: str, summary: list[str], figures: list[Figure], tables: dict[str, pd.DataFrame],
                inputs: list[str]) -> str:
    items = "".join(f"<li>{html.escape(line)}</li>" for line in summary)
    files = "".join(f"<li><code>{html.escape(p)}</code></li>" for p in inputs)
    body = "".join(_figure_html(f) for f in figures) + "".join(_table_html(n, t) for n, t in tables.items())
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1><h2>Summary</h2><ul>{items}</ul>"
            f"<h3>Inputs</h3><ul>{files}</ul>{body}</body></html>")


def render_markdown(title: str, summary: list[str], figures: list[Figure], tables: dict[str, pd.DataFrame],
                    inputs: list[str]) -> str:
    lines = [f"# {title}", "", "## Summary", ""] + [f"- {s}" for s in summary]
    lines += ["", "Inputs: " + ", ".join(f"`{p}`" for p in inputs), ""]
    for f in figures:
        lines += [f"## {f.title}", "", f"![{f.title}]({f.name}.png)", "", f.caption, "",
                  f"*{f.provenance}* — {f.source}", "", f"Table: [`{f.name}.csv`]({f.name}.csv)", ""]
    for name, t in tables.items():
        lines += [f"## {name}", "", markdown_table(t), "", f"Table: [`{name}.csv`]({name}.csv)", ""]
    return "\n".join(lines)


def markdown_table(df: pd.DataFrame, max_rows: int = 40) -> str:
    """A GitHub-flavoured Markdown table (first ``max_rows`` rows; the CSV has all of them)."""
    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "---|" * len(df.columns)
    rows = ["| " + " | ".join(cell(v) for v in r) + " |" for r in df.head(max_rows).itertuples(index=False)]
    more = [f"\n({len(df) - max_rows} more rows in the CSV)"] if len(df) > max_rows else []
    return "\n".join([head, rule, *rows, *more])


def write_report(out_dir: Path, title: str, summary: list[str], figures: list[Figure],
                 tables: dict[str, pd.DataFrame], inputs: list[str]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in figures:
        write_bytes_atomic(out_dir / f"{f.name}.png", f.png)
        write_text_atomic(out_dir / f"{f.name}.csv", f.table.to_csv(index=False))
    for name, t in tables.items():
        write_text_atomic(out_dir / f"{name}.csv", t.to_csv(index=False))
    write_text_atomic(out_dir / "report.md", render_markdown(title, summary, figures, tables, inputs))
    index = out_dir / "index.html"
    write_text_atomic(index, render_html(title, summary, figures, tables, inputs))
    return index
