"""`bench run --shard i/N` + `bench merge`: the split is a partition, deterministic, keeps a subject's fit
with its requests, and shards 0/2 + 1/2 merged equal the unsharded run (baselines + a tiny trainable
method with a dataset part and a subject part, on the embedded demo)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from bench.progress import Progress
from bench.results import load_run
from bench.runner import RunError, run
from bench.shard import Shard, ShardError, deal, merge, plan
from tests.bench.tiny_methods import comparable, demo_config, register


def test_shard_parse():
    assert Shard.parse("1/4") == Shard(1, 4) and Shard.parse("0/1").label == "0/1"
    for bad in ("4/4", "-1/2", "1", "a/b", "1/0"):
        with pytest.raises(ShardError):
            Shard.parse(bad)


def test_plan_is_a_deterministic_balanced_partition():
    reqs = [(f"r{i:03d}", f"s{i % 5}") for i in range(103)]
    plans = [plan(reqs, Shard(i, 4)) for i in range(4)]
    for by_subject in (False, True):
        owners = [[i for i, p in enumerate(plans) if p.mine(rid, subj, by_subject)] for rid, subj in reqs]
        assert all(len(o) == 1 for o in owners), "every request in exactly one shard"
        if by_subject:   # a subject's requests (and so its fit) stay together
            by_subj: dict[str, set[int]] = {}
            for (rid, subj), o in zip(reqs, owners):
                by_subj.setdefault(subj, set()).add(o[0])
            assert all(len(v) == 1 for v in by_subj.values())
        else:
            sizes = [sum(1 for o in owners if o == [i]) for i in range(4)]
            assert max(sizes) - min(sizes) <= 1
    # order of the input does not matter
    again = plan(list(reversed(reqs)), Shard(2, 4))
    assert again.by_request == plans[2].by_request and again.by_subject == plans[2].by_subject


def test_deal_puts_heavy_subjects_apart():
    got = deal({"a": 10, "b": 9, "c": 2, "d": 1}, 2)
    assert got["a"] != got["b"] and sum(w for k, w in {"a": 10, "b": 9, "c": 2, "d": 1}.items() if got[k] == 0) in (11, 12)




def test_shards_merge_to_the_unsharded_results(tmp_path, monkeypatch):
    register(monkeypatch)
    monkeypatch.setenv("TALKBENCH_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("TALKBENCH_CACHE", str(tmp_path / "cache-a"))
    whole = run(demo_config(tmp_path / "runs-a"), progress=Progress.off())

    # The shards get a cache of their own (recipe stages copied, so no clip is prepared twice, but no
    # fit and no generated video): their results are computed again, not read back.
    shutil.copytree(tmp_path / "cache-a" / "stages", tmp_path / "cache-b" / "stages")
    shutil.copytree(tmp_path / "cache-a" / "file-hashes", tmp_path / "cache-b" / "file-hashes")
    monkeypatch.setenv("TALKBENCH_CACHE", str(tmp_path / "cache-b"))
    runs = tmp_path / "runs-b"
    shards = [run(demo_config(runs, shard=f"{i}/2"), progress=Progress.off()) for i in range(2)]
    assert [s.run_dir.name for s in shards] == [f"{whole.run_dir.name}.shard-{i}-of-2" for i in range(2)]
    parts = [{(r.method, r.request_id) for r in load_run(s.run_dir).itertuples()} for s in shards]
    assert parts[0] and parts[1] and not parts[0] & parts[1], "each shard did a share of the work"
    # tinted has a subject part: the demo's one subject, its fit and all its requests, in one shard
    tinted = [{rid for m, rid in p if m == "tinted"} for p in parts]
    assert sorted(len(t) for t in tinted) == [0, 2]
    manifests = [json.loads((s.run_dir / "manifest.json").read_text()) for s in shards]
    assert [m["shard"]["label"] for m in manifests] == ["0/2", "1/2"]

    with pytest.raises(ShardError, match="missing"):
        merge([shards[0].run_dir])
    merged = merge([s.run_dir for s in shards])
    assert merged.out == runs / whole.run_dir.name
    a, b = comparable(load_run(whole.run_dir)), comparable(load_run(merged.out))
    assert len(a) == len(b) > 0
    pd.testing.assert_frame_equal(a, b)

    m = json.loads((merged.out / "manifest.json").read_text())
    assert m["status"] == "complete" and "shard" not in m and len(m["merged_from"]) == 2
    assert m["invocations"] == 2 and len(m["history"]) == 2
    assert m["phases"]["generate"] == pytest.approx(sum(x["phases"].get("generate", 0) for x in manifests), abs=0.01)
    fits = {(f["scope"], f["part"]) for f in m["methods"]["tinted"]["fits"]}
    assert fits == {("dataset", "shared"), ("subject:obama", "person")}
    assert set(m["machines"]) == {whole.manifest["hardware"]["id"]}
    # the merged folder holds the samples the report shows and builds a report
    assert sorted(p.parent.parent.name for p in merged.out.glob("samples/*/*/sample.json")) == \
        sorted(p.parent.parent.name for p in whole.run_dir.glob("samples/*/*/sample.json"))
    # merging again rebuilds the same result
    again = merge([s.run_dir for s in shards])
    pd.testing.assert_frame_equal(comparable(load_run(again.out)), b)


def test_a_shard_folder_refuses_another_split(tmp_path, monkeypatch):
    monkeypatch.setenv("TALKBENCH_CACHE", str(tmp_path / "cache"))
    runs = tmp_path / "runs"
    kw = dict(methods=("frozen",), metrics=("fps",), run_id="fixed", cross=False)
    run(demo_config(runs, shard="0/2", **kw), progress=Progress.off())
    # the folder name carries i and N, so only a renamed folder can collide
    (runs / "fixed.shard-0-of-2").rename(runs / "fixed.shard-0-of-3")
    with pytest.raises(RunError, match="holds shard 0/2"):
        run(demo_config(runs, shard="0/3", **kw), progress=Progress.off())


def test_a_method_variant_is_carried_by_rows_manifest_samples_and_report(tmp_path, monkeypatch):
    """`Method.variant` (nerf_head's front end; here tinted's non-default rate) reaches every row, the
    manifest and the samples, and the report shows the method under "<name> [<variant>]"."""
    from reports.build import build_report

    register(monkeypatch)
    monkeypatch.setenv("TALKBENCH_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("TALKBENCH_CACHE", str(tmp_path / "cache"))
    res = run(demo_config(tmp_path / "runs", overrides=(("tinted.rate", "0.25"),)), progress=Progress.off())
    df = load_run(res.run_dir)
    assert set(df[df.method == "tinted"].variant) == {"rate 0.25"}
    assert set(df[df.method != "tinted"].variant) == {""}
    assert json.loads((res.run_dir / "manifest.json").read_text())["methods"]["tinted"]["variant"] == "rate 0.25"
    infos = [json.loads(p.read_text()) for p in res.run_dir.glob("samples/tinted/*/sample.json")]
    assert infos and all(i["variant"] == "rate 0.25" for i in infos)
    html = build_report([res.run_dir], tmp_path / "report").read_text()
    assert "tinted [rate 0.25]" in html and ">tinted<" not in html
