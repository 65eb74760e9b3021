"""Progress falls back to plain, throttled log lines when the output is not a terminal."""

from __future__ import annotations

import io

from bench.progress import Progress


def test_log_mode_when_not_a_terminal():
    out = io.StringIO()
    p = Progress(stream=out)
    assert p.mode == "log"
    with p:
        assert list(p.track(range(5), "clips")) == [0, 1, 2, 3, 4]
        with p.task("train", total=3) as t:
            for step in range(3):
                t.advance(loss=1.0 / (step + 1))
    text = out.getvalue()
    assert "clips: start (5)" in text and "done clips: 5/5 (100%)" in text
    assert "done train: 3/3" in text and "loss=0.3333" in text


def test_log_mode_is_throttled():
    out = io.StringIO()
    with Progress(mode="log", stream=out, log_every_s=3600) as p:
        for _ in p.track(range(1000), "frames"):
            pass
    assert len(out.getvalue().splitlines()) == 2  # start and done only


def test_rich_mode_renders_to_the_given_stream():
    out = io.StringIO()
    with Progress(mode="rich", stream=out) as p:
        for _ in p.track(range(3), "stages"):
            pass
    assert "stages" in out.getvalue()


def test_off_mode_prints_nothing():
    out = io.StringIO()
    with Progress(mode="off", stream=out) as p:
        list(p.track(range(3), "x"))
        p.log("hello")
    assert out.getvalue() == ""
