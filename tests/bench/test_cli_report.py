"""`bench report --pool` reaches the report's merge rules; what may never pool is refused."""

from __future__ import annotations

from bench import cli


def test_pool_reaches_the_report_config(tmp_path, monkeypatch, capsys):
    (tmp_path / "manifest.json").write_text("{}")
    seen = {}

    def fake_build(runs, out_dir=None, progress=None, config=None):
        seen["pool"] = config.pool
        return tmp_path / "report.html"

    monkeypatch.setattr("reports.build.build_report", fake_build)
    assert cli.main(["report", str(tmp_path), "--pool", "datasets,budgets", "--progress", "off"]) == 0
    assert seen["pool"] == ("datasets", "budgets")
    assert cli.main(["report", str(tmp_path), "--progress", "off"]) == 0 and seen["pool"] == ()


def test_machines_and_scorers_never_pool(tmp_path, capsys):
    (tmp_path / "manifest.json").write_text("{}")
    assert cli.main(["report", str(tmp_path), "--pool", "machines"]) == cli.EXIT_USAGE
    assert "only datasets, budgets can be pooled" in capsys.readouterr().err
