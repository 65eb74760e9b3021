"""Paper exports (CSV / Markdown / LaTeX) and the Wav2Lip LRS2 paper table."""

from __future__ import annotations

import csv
import io
import math

from reports.exports import PlainTable, latex_escape, markdown_escape, to_csv, to_latex, to_markdown
from reports.load import Bundle, Run
from reports.paper import load_published, paper_plain, paper_table
from reports.tables import per_request
from tests.reports.rows import frame, row

NASTY = "a_b & 50% $x$ #1 {y} ~z ^w \\v <script>|"


def test_latex_escape_leaves_no_active_character():
    out = latex_escape(NASTY)
    stripped = out
    for seq in ("\\textbackslash{}", "\\textless{}", "\\textgreater{}", "\\textbar{}", "\\textasciitilde{}",
                "\\textasciicircum{}", "\\&", "\\%", "\\$", "\\#", "\\_", "\\{", "\\}"):
        stripped = stripped.replace(seq, "")
    assert not any(ch in stripped for ch in "&%$#_{}~^\\<>|"), stripped
    assert latex_escape("\u00b1 \u2193") == "$\\pm$ $\\downarrow$"


def test_markdown_cells_cannot_break_the_table_or_inject_html():
    t = PlainTable("t", "caption", ("a", "b"), ((NASTY, "x\ny"),))
    md = to_markdown(t)
    body = md.strip().splitlines()[-1]
    assert body.count(" | ") == 1  # the cell's own pipe is escaped
    assert "<script>" not in md and "&lt;script&gt;" in md
    assert markdown_escape("a|b") == "a\\|b"


def test_csv_round_trips_any_text():
    rows = [(NASTY, "1,2", 'quote "q"')]
    back = list(csv.reader(io.StringIO(to_csv(("x", "y", "z"), rows))))
    assert back == [["x", "y", "z"], list(rows[0])]


def test_latex_table_shape():
    tex = to_latex(PlainTable("t", "cap", ("m", "v"), (("a", "1"), ("b", "2"))))
    assert tex.count("\\\\") == 3 and "\\begin{tabular}{lr}" in tex and "\\bottomrule" in tex


def test_published_rows_are_the_documented_numbers_with_sources():
    rows = {r.key: r for r in load_published()}
    # REFERENCE.md / the brief: paper Table 1 (LRS2), issue 445, LipVoicer issue 5.
    assert (rows["paper_wav2lip"].lse_d, rows["paper_wav2lip"].lse_c) == (6.386, 7.789)
    assert (rows["paper_wav2lip_gan"].lse_d, rows["paper_wav2lip_gan"].lse_c) == (6.469, 7.781)
    assert (rows["paper_real"].lse_d, rows["paper_real"].lse_c) == (6.736, 7.838)
    assert (rows["issue445_wav2lip"].lse_d, rows["issue445_wav2lip"].lse_c) == (7.15, 6.77)
    assert (rows["lrs2_real_lrs_protocol"].lse_d, rows["lrs2_real_lrs_protocol"].lse_c) == (6.258, 8.248)
    for key in ("paper_wav2lip", "paper_wav2lip_gan", "paper_real"):
        assert "Prajwal et al., ACM MM 2020), Table 1 (LRS2)" in rows[key].source
        assert not rows[key].verified
    assert rows["issue445_wav2lip"].lse_d_text == "7.15"  # printed as the source printed it


def _bundle(df, dataset: str) -> Bundle:
    from pathlib import Path

    run = Run(Path("/nonexistent"), {"run_id": "r1", "dataset": {"name": dataset, "sync_protocol": "lrs",
                                                                   "pairs": 2}}, df)
    return Bundle((run,), df, {}, ())


def test_paper_table_is_empty_with_a_reason_off_lrs2():
    df = frame([row("wav2lip", "LSE-D", 6.5, kind="cross")])
    pt = paper_table(per_request(df), _bundle(df, "demo"))
    assert not pt.comparable and "not LRS2" in pt.note
    assert all(c.text == "\u2014" for s in pt.suite for c in s.cells)


def test_paper_table_takes_cross_pairs_for_methods_and_own_audio_for_real_videos():
    df = frame([
        row("reference", "LSE-D", 6.2, clip="v1", dataset="lrs2"), row("reference", "LSE-C", 8.3, clip="v1", dataset="lrs2"),
        row("wav2lip", "LSE-D", 9.9, clip="v1", dataset="lrs2"),  # self-driven: not the paper's protocol
        row("wav2lip", "LSE-D", 6.0, kind="cross", clip="v1", dataset="lrs2"),
        row("wav2lip", "LSE-D", 7.0, kind="cross", clip="v2", dataset="lrs2"),
        row("wav2lip", "LSE-C", 7.5, kind="cross", clip="v1", dataset="lrs2"),
        row("wav2lip", "LSE-C", status="too_short", reason="4 frames", kind="cross", clip="v2", dataset="lrs2"),
    ])
    pt = paper_table(per_request(df), _bundle(df, "lrs2"))
    assert pt.comparable
    suite = {s.method: s for s in pt.suite}
    assert [c.text for c in suite["reference"].cells] == ["6.200", "8.300"]
    assert [c.text for c in suite["wav2lip"].cells] == ["6.500", "7.500"]
    assert suite["wav2lip"].cells[1].note == "+1 too short"
    assert suite["wav2lip"].protocol == "cross-driven pairs"
    plain = paper_plain(pt)
    assert plain.rows[0][:3] == ("Wav2Lip", "6.386", "7.789")
    # the citation names the row's own source and the data file shipped with the package
    assert "Table 1 (LRS2)" in plain.rows[0][3] and "arxiv.org/abs/2008.10010" in plain.rows[0][3]
    assert plain.rows[0][3].endswith("(not checked against the source yet; as transcribed in "
                                     "reports/published/wav2lip_lrs2.csv)")
    assert "REFERENCE.md" not in " ".join(" ".join(r) for r in plain.rows)
    assert any(r[0] == "wav2lip (this suite)" and r[1].startswith("6.500") for r in plain.rows)
    assert not math.isnan(pt.suite[0].cells[0].summary.mean)
