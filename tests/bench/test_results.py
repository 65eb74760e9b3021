"""Results schema: round trip through parquet and CSV, version check, row invariants."""

from __future__ import annotations

import math

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.results import (COLUMNS, SCHEMA_VERSION, ResultRow, SchemaError, read_parquet, to_frame,
                           write_csv, write_parquet)


def _row(**kw):
    base = dict(run_id="r", dataset="demo", split="test", request_id="a <- b", kind="cross", clip_id="a",
                audio_clip="b", subject="s", method="frozen", metric="LSE-D", family="lse", value=7.25,
                status="ok", reason="", unit="", better="lower", published=True, n_frames=100,
                hardware="hw", extra='{"curve": [1.0, 2.0]}')
    base.update(kw)
    return ResultRow(**base)


def test_round_trip_preserves_every_column(tmp_path):
    rows = [_row(), _row(metric="PSNR", family="psnr", value=math.inf, better="higher", kind="self",
                         request_id="a", audio_clip="a"),
            _row(metric="LPIPS-Alex", value=math.nan, status="unavailable", reason="no <backbone> file")]
    df = to_frame(rows)
    write_parquet(tmp_path / "r.parquet", df)
    back = read_parquet(tmp_path / "r.parquet")
    assert list(back.columns) == list(COLUMNS)
    pd.testing.assert_frame_equal(back, df)
    assert math.isinf(back.loc[1, "value"]) and math.isnan(back.loc[2, "value"])
    write_csv(tmp_path / "r.csv", df)
    csv = pd.read_csv(tmp_path / "r.csv", keep_default_na=False)
    assert csv.loc[2, "reason"] == "no <backbone> file"
    assert float(csv.loc[1, "value"]) == math.inf


def test_schema_version_is_checked(tmp_path):
    df = to_frame([_row()])
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({b"talkbench_schema_version": str(SCHEMA_VERSION + 1).encode()})
    pq.write_table(table, tmp_path / "future.parquet")
    with pytest.raises(SchemaError, match="schema version"):
        read_parquet(tmp_path / "future.parquet")


def test_unavailable_rows_cannot_carry_numbers_or_lack_reasons():
    with pytest.raises(SchemaError):
        _row(status="unavailable", reason="x", value=1.0)
    with pytest.raises(SchemaError):
        _row(status="failed", reason="", value=math.nan)
    with pytest.raises(SchemaError):
        _row(status="bogus")


def test_write_is_atomic_no_partial_file_on_failure(tmp_path, monkeypatch):
    import bench.results as results

    target = tmp_path / "r.parquet"
    write_parquet(target, to_frame([_row()]))
    before = target.read_bytes()

    def boom(df, stamp=None):
        raise RuntimeError("disk full")

    monkeypatch.setattr(results, "_parquet_bytes", boom)
    with pytest.raises(RuntimeError):
        write_parquet(target, to_frame([_row(value=1.0)]))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.parquet"]


def test_rows_carry_commit_and_versions_and_parts_keep_them_in_the_footer(tmp_path):
    from bench.results import part_versions

    versions = '{"method":"m@2#ab","metrics":{},"stages":{}}'
    df = to_frame([_row(commit="c" * 40, versions=versions), _row(metric="PSNR", commit="c" * 40, versions=versions)])
    write_parquet(tmp_path / "p.parquet", df)
    assert part_versions(tmp_path / "p.parquet") == ("c" * 40, versions)
    back = read_parquet(tmp_path / "p.parquet")
    assert list(back.commit) == ["c" * 40] * 2 and list(back.versions) == [versions] * 2
    write_parquet(tmp_path / "empty.parquet", to_frame([]))
    assert part_versions(tmp_path / "empty.parquet") == ("", "")   # unstamped, no rows: nothing stale
    write_parquet(tmp_path / "stamped.parquet", to_frame([]), {"commit": "c", "versions": versions})
    assert part_versions(tmp_path / "stamped.parquet") == ("c", versions)
    assert part_versions(tmp_path / "missing.parquet") is None
    with pytest.raises(SchemaError):
        _row(versions="not json")


def test_schema_1_files_are_read_with_empty_versions(tmp_path):
    df = to_frame([_row()]).drop(columns=["commit", "versions"])
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({b"talkbench_schema_version": b"1"})
    pq.write_table(table, tmp_path / "old.parquet")
    back = read_parquet(tmp_path / "old.parquet")
    assert list(back.columns) == list(COLUMNS) and back.commit.iloc[0] == "" and back.versions.iloc[0] == "{}"
