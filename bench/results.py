"""The results schema: one row per clip x method x metric value, versioned, read by reports/.

Files in a run folder `runs/<run-id>/`:
- `parts/<method>/<request-key>.parquet`: rows of one (method, request), written atomically as soon
  as that video is scored; a rerun skips requests whose part exists (this is how resume works);
- `results.parquet` and `results.csv`: every part concatenated, rewritten at the end of a run;
- `manifest.json`: see `bench.manifest`.

Column meanings (schema version 3):
- run_id, dataset, split: which run and which split the clip belongs to;
- request_id: unique per request; kind: "self" (a clip's own audio, ground truth exists) or "cross";
- clip_id: the target (identity) clip; audio_clip: the clip whose audio drove the video;
- subject: the target's person; method: registry name of the method;
- metric: the value name (e.g. "PSNR", "LSE-D"); family: the metric family ("psnr", "sync");
- value: float; NaN unless status == "ok"; +inf allowed (PSNR of identical frames);
- status: "ok" | "unavailable" | "failed" | "too_short" | "not_applicable"; reason: why not ok;
- unit, better ("higher" | "lower" | "zero" | ""), published (False for the suite's own scorers);
- n_frames: frames scored; hardware: the manifest's hardware id; extra: JSON (curves, offsets, timings);
- commit: the git commit of the code that made the row ("<sha>+dirty" for a modified checkout, ""
  when unknown); versions: the declared versions and settings that made it (`bench.manifest.
  part_versions`: method version and config digest, every metric's version and config digest,
  every recipe stage's version and config digest), as compact JSON. A resume compares a part's
  versions with the current ones and recomputes the part when they differ;
- variant: what of the method's configuration changes what its numbers mean (`Method.variant`, e.g.
  nerf_head's "front end: mel"); "" for most methods. Reports show a method as `method_label(method,
  variant)`, so rows of two variants are never pooled into one table row.

Schema 1 files (before commit / versions) are read with both columns empty; schema 1-2 files
(before variant) with variant "".
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

SCHEMA_VERSION = 3
READABLE_VERSIONS = ("1", "2", "3")     # 1: no commit / versions; 1-2: no variant (filled with "")
STATUSES = ("ok", "unavailable", "failed", "too_short", "not_applicable")


class SchemaError(ValueError):
    pass


@dataclass(frozen=True)
class ResultRow:
    run_id: str
    dataset: str
    split: str
    request_id: str
    kind: str
    clip_id: str
    audio_clip: str
    subject: str
    method: str
    metric: str
    family: str
    value: float
    status: str
    reason: str
    unit: str
    better: str
    published: bool
    n_frames: int
    hardware: str
    extra: str = "{}"
    commit: str = ""
    versions: str = "{}"
    variant: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise SchemaError(f"bad status {self.status!r}; expected one of {STATUSES}")
        if self.status != "ok" and not self.reason:
            raise SchemaError(f"row {self.method}/{self.metric}/{self.request_id}: status "
                              f"{self.status!r} needs a reason")
        if self.status != "ok" and not math.isnan(self.value):
            raise SchemaError(f"row {self.method}/{self.metric}: only 'ok' rows may carry a number")
        for name in ("extra", "versions"):
            try:
                json.loads(getattr(self, name))
            except ValueError as e:
                raise SchemaError(f"row {self.method}/{self.metric}: {name} is not JSON ({e})") from e


COLUMNS = tuple(f.name for f in fields(ResultRow))
_DTYPES = {
    "value": "float64", "published": "bool", "n_frames": "int64",
}


def method_label(method: str, variant: str = "") -> str:
    """How reports name a method: its registry name, with the variant when it has one."""
    return f"{method} [{variant}]" if variant else method


def to_frame(rows: Iterable[ResultRow]):
    import pandas as pd

    df = pd.DataFrame([asdict(r) for r in rows], columns=list(COLUMNS))
    for col in COLUMNS:
        df[col] = df[col].astype(_DTYPES.get(col, "string"))
    return df


def validate(df) -> None:
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise SchemaError(f"results lack columns {missing}")
    bad = set(df["status"].unique()) - set(STATUSES)
    if bad:
        raise SchemaError(f"unknown statuses {sorted(bad)}")
    numbers_where_not_ok = df[(df["status"] != "ok") & df["value"].notna()]
    if len(numbers_where_not_ok):
        raise SchemaError("rows with status other than 'ok' carry numbers")


def _parquet_bytes(df, stamp: Mapping[str, str] | None = None) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"talkbench_schema_version"] = str(SCHEMA_VERSION).encode()
    # A part's rows share one commit and one versions string: kept in the footer too, so a resume
    # checks thousands of parts without reading their rows.
    for col in ("commit", "versions"):
        values = df[col].unique() if len(df) else []
        if stamp is not None and col in stamp:   # a part without rows still says what made it
            meta[f"talkbench_{col}".encode()] = str(stamp[col]).encode()
        elif len(values) == 1:
            meta[f"talkbench_{col}".encode()] = str(values[0]).encode()
    table = table.replace_schema_metadata(meta)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def write_parquet(path: Path, df, stamp: Mapping[str, str] | None = None) -> None:
    """Validate and write atomically; `stamp` ({"commit", "versions"}) goes into the footer (parts)."""
    from bench.cache import atomic_write_bytes

    validate(df)
    atomic_write_bytes(Path(path), _parquet_bytes(df, stamp))


def write_csv(path: Path, df) -> None:
    from bench.cache import atomic_write_text

    atomic_write_text(Path(path), df.to_csv(index=False))


def read_parquet(path: Path):
    """Read a results file, refusing one written under another schema version."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    version = (table.schema.metadata or {}).get(b"talkbench_schema_version", b"?").decode()
    if version not in READABLE_VERSIONS:
        raise SchemaError(f"{path}: results schema version {version}, this talkbench reads "
                          f"{', '.join(READABLE_VERSIONS)}")
    df = table.to_pandas()
    for col, default in (("commit", ""), ("versions", "{}"), ("variant", "")):
        if col not in df.columns:
            df[col] = default
    df = df[list(COLUMNS)]     # columns added by later schemas sit where the current schema has them
    for col in COLUMNS:
        df[col] = df[col].astype(_DTYPES.get(col, "string"))
    validate(df)
    return df


def collect_parts(run_dir: Path):
    """All part files of a run as one frame (ordered by method, then request)."""
    import pandas as pd

    parts = sorted((Path(run_dir) / "parts").glob("*/*.parquet"))
    if not parts:
        return to_frame([])
    return pd.concat([read_parquet(p) for p in parts], ignore_index=True)


def part_versions(path: Path) -> tuple[str, str] | None:
    """(commit, versions) a part file was written with, read from its footer only (fast on resume);
    None for an unreadable part. Schema 1 parts give ("", "{}"); a part without rows and without a
    stamp (written before parts were stamped) gives ("", ""): nothing in it can be stale."""
    import pyarrow.parquet as pq

    try:
        footer = pq.read_metadata(path)
    except Exception:
        return None
    meta = footer.metadata or {}
    if footer.num_rows == 0 and b"talkbench_versions" not in meta:
        return ("", "")
    return (meta.get(b"talkbench_commit", b"").decode(), meta.get(b"talkbench_versions", b"{}").decode())


def load_run(run_dir: Path):
    """The results table of a finished (or partial) run: results.parquet, else the parts so far."""
    final = Path(run_dir) / "results.parquet"
    return read_parquet(final) if final.exists() else collect_parts(run_dir)


def extra_json(extra: dict[str, Any]) -> str:
    def default(o: Any) -> Any:
        if hasattr(o, "tolist"):
            return o.tolist()
        return str(o)

    return json.dumps(extra, default=default, sort_keys=True, allow_nan=True)
