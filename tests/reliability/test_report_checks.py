"""The report's "Input checks" section: failed and warned clips with one badge per gate, the count
of clips that passed, escaping of clip ids and reasons; no section for runs without checks."""

from __future__ import annotations

import re

from data_recipes.quality import ClipChecks, Gate
from reports.build import build_report
from tests.reports.rows import row
from tests.reports.test_build import HOSTILE, manifest, write_run


def _checks() -> dict:
    ok = ClipChecks("good/test", (Gate("media", "ok", "fine"), Gate("audio", "ok", "RMS -20.0 dBFS", -20.0)))
    noface = ClipChecks(HOSTILE, (Gate("media", "ok", "fine"), Gate("faces", "failed",
                                                                     f"no face in any of 25 frames {HOSTILE}", 0.0,
                                                                     scope="faces")))
    quiet = ClipChecks("quiet/test", (Gate("audio", "warning", "near-silent: RMS -61.0 dBFS < -50 dBFS", -61.0),
                                      Gate("face_size", "ok", "median box side 180 px", 180.0)))
    return {c.clip_id: c.to_json() for c in (ok, noface, quiet)}


def test_input_checks_section_shows_failed_and_warned_clips(tmp_path):
    run = write_run(tmp_path / "run", [row("frozen", "PSNR", 30.0)],
                    manifest("r1", "hw", "cpu", input_checks=_checks()))
    html = build_report([run]).read_text()
    section = html[html.index('<section id="inputs">'):]
    section = section[:section.index("</section>")]
    assert "1 of 3 clips passed all of them" in section
    assert '<span class="badge gate-failed" title="no face in any of 25 frames &lt;img' in section
    assert "failed &middot; 0%" in section and "warning &middot; -61 dBFS" in section
    assert "<img src=x" not in html and "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in section
    # the failed clip first, then the warned one; the clip that passed everything is not listed
    clips = re.findall(r"<td><code>(.*?)</code></td>", section)
    assert clips == ["&lt;img src=x onerror=&#34;alert(1)&#34;&gt;", "quiet/test"]
    assert '<a href="#inputs">Input checks</a>' in html


def test_no_section_without_checks(tmp_path):
    run = write_run(tmp_path / "run", [row("frozen", "PSNR", 30.0)], manifest("r1", "hw", "cpu"))
    html = build_report([run]).read_text()
    assert 'id="inputs"' not in html and "#inputs" not in html
