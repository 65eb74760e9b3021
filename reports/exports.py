"""Plain tables for papers: CSV, Markdown and LaTeX (booktabs) files next to report.html."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
    "\u2191": r"$\uparrow$", "\u2193": r"$\downarrow$", "\u2192": r"$\rightarrow$",
    "\u00b1": r"$\pm$", "\u2014": "---", "\u2013": "--", "\u2026": r"\ldots{}",
}


@dataclass(frozen=True)
class PlainTable:
    """A table of strings: `name` is the file stem, `caption` a one-line description."""

    name: str
    caption: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def markdown_escape(text: str) -> str:
    """Pipes would split cells and HTML in a cell would render on GitHub: escape both."""
    out = str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
    return out.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_markdown(t: PlainTable) -> str:
    lines = [f"<!-- {markdown_escape(t.caption)} -->" if t.caption else ""]
    lines.append("| " + " | ".join(markdown_escape(h) for h in t.headers) + " |")
    lines.append("|" + "|".join("---" for _ in t.headers) + "|")
    for r in t.rows:
        lines.append("| " + " | ".join(markdown_escape(c) for c in r) + " |")
    return "\n".join(line for line in lines if line) + "\n"


def to_latex(t: PlainTable) -> str:
    spec = "l" + "r" * (len(t.headers) - 1)
    out = ["% needs \\usepackage{booktabs}", "\\begin{table}[t]", "\\centering", "\\small",
           f"\\begin{{tabular}}{{{spec}}}", "\\toprule",
           " & ".join(latex_escape(h) for h in t.headers) + " \\\\", "\\midrule"]
    out += [" & ".join(latex_escape(c) for c in r) + " \\\\" for r in t.rows]
    out += ["\\bottomrule", "\\end{tabular}", f"\\caption{{{latex_escape(t.caption)}}}", "\\end{table}"]
    return "\n".join(out) + "\n"


def to_csv(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(list(headers))
    for r in rows:
        w.writerow(list(r))
    return buf.getvalue()


def write_table(folder: Path, t: PlainTable) -> dict[str, str]:
    """Write <name>.csv/.md/.tex into `folder`; returns {format: file name}."""
    from bench.cache import atomic_write_text

    folder.mkdir(parents=True, exist_ok=True)
    files = {"CSV": f"{t.name}.csv", "Markdown": f"{t.name}.md", "LaTeX": f"{t.name}.tex"}
    atomic_write_text(folder / files["CSV"], to_csv(t.headers, t.rows))
    atomic_write_text(folder / files["Markdown"], to_markdown(t))
    atomic_write_text(folder / files["LaTeX"], to_latex(t))
    return files


def write_records(path: Path, records: Sequence[dict[str, Any]]) -> None:
    from bench.cache import atomic_write_text

    headers = list(records[0]) if records else []
    atomic_write_text(path, to_csv(headers, [[r.get(h, "") for h in headers] for r in records]))
