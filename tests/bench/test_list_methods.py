"""`bench list` says which audio front end nerf_head uses on this machine (issue 14): the mel front end
where HuBERT's weights are absent, and the same words the result rows carry as the method's variant."""

from __future__ import annotations

from dataclasses import replace


def test_bench_list_names_nerf_heads_front_end(isolated_dirs, capsys):
    from bench.cli import list_entries, main

    rows = {r["name"]: r for r in list_entries("methods")["methods"]}
    assert rows["nerf_head"]["variant"] == "front end: mel"     # no HuBERT weights in an empty folder
    assert rows["wav2lip"]["variant"] == ""
    assert main(["list", "methods"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("nerf_head"))
    assert "[front end: mel]" in line


def test_variant_follows_the_config(isolated_dirs, tmp_path):
    from methods.nerf_head.method import NerfHeadConfig, NerfHeadMethod

    assert NerfHeadMethod.variant(NerfHeadConfig(front_end="mel")) == "front end: mel"
    # an official audio2motion folder reads HuBERT features, whatever front_end says
    assert NerfHeadMethod.variant(replace(NerfHeadConfig(), audio2motion_checkpoint=str(tmp_path))) == \
        "front end: hubert"
    # hubert asked for without weights: the method is unavailable, the label still says what was asked
    assert NerfHeadMethod.variant(NerfHeadConfig(front_end="hubert")) == "front end: hubert"
