"""`bench list weights` checks digests as the metrics do: a file with the wrong sha256 is not available."""

from __future__ import annotations

import pytest


def _row(name: str) -> dict:
    from bench.cli import list_entries

    rows = {r["name"]: r for r in list_entries("weights")["weights"]}
    return rows[name]


def test_wrong_digest_is_listed_unavailable_with_both_digests(isolated_dirs):
    from metrics.sync.weights import WEIGHTS

    spec = next(s for s in (WEIGHTS.values() if isinstance(WEIGHTS, dict) else WEIGHTS)
                if s.sha256 or s.sha256_prefix)
    assert not _row(spec.filename)["available"]                   # absent
    folder = isolated_dirs / "weights"
    folder.mkdir(exist_ok=True)
    (folder / spec.filename).write_bytes(b"some other model")
    row = _row(spec.filename)
    assert not row["available"], "a file with the wrong sha256 must not be listed as available"
    assert "sha256" in row["reason"] and row["path"].endswith(spec.filename)


def test_bundled_weights_are_available(isolated_dirs):
    from bench.cli import list_entries

    rows = list_entries("weights")["weights"]
    bundled = [r for r in rows if r["available"]]
    if not bundled:
        pytest.skip("no bundled weight file in this checkout")
    assert all(r["reason"] == "" for r in bundled)
