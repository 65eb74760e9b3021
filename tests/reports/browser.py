"""Headless Chromium for report tests: Debian's chromium driven by Playwright, offline flags.

`open_report` skips the test (with the reason) when Playwright or a chromium binary is missing.
Every request the page makes and every console message is recorded for the assertions.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

# Without the background-networking family of flags chromium contacts Google hosts on start.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str | None:
    for candidate in (os.environ.get("TALKBENCH_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@dataclass
class Browsed:
    page: object
    requests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)


@contextlib.contextmanager
def open_report(html: Path, width: int = 1400, height: int = 900, color_scheme: str = "light") -> Iterator[Browsed]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; no browser download needed)")
    exe = chromium()
    if exe is None:
        pytest.skip("no chromium found (apt-get install -y chromium, or set TALKBENCH_CHROMIUM)")
    with tempfile.TemporaryDirectory(prefix="talkbench-chromium-") as profile, sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            profile, executable_path=exe, headless=True, args=FLAGS,
            viewport={"width": width, "height": height}, color_scheme=color_scheme)
        try:
            page = ctx.new_page()
            b = Browsed(page)
            page.on("request", lambda r: b.requests.append(r.url))
            page.on("requestfailed", lambda r: b.failed.append(f"{r.url}: {r.failure}"))
            page.on("console", lambda m: b.console.append(f"{m.type}: {m.text}"))

            def on_dialog(d) -> None:
                b.dialogs.append(d.message)
                d.dismiss()

            page.on("dialog", on_dialog)
            page.goto(Path(html).resolve().as_uri())
            page.wait_for_load_state("load")
            yield b
        finally:
            ctx.close()


def full_screenshot(b: Browsed, path: Path):
    """Full-page screenshot as an RGB numpy array (also written to `path`)."""
    import cv2

    b.page.evaluate("() => window.scrollTo(0, 0)")
    b.page.screenshot(path=str(path), full_page=True)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def element_boxes(b: Browsed, selector: str) -> list[tuple[int, int, int, int]]:
    """Document-coordinate boxes (x, y, w, h) of every element matching `selector`."""
    return [tuple(int(round(v)) for v in box) for box in b.page.evaluate(
        """sel => [...document.querySelectorAll(sel)].map(e => {
             const r = e.getBoundingClientRect();
             return [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height];
           })""", selector)]
