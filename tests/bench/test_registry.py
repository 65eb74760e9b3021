"""Registry: built-ins load lazily, third-party methods arrive through entry points, typos get hints."""

from __future__ import annotations

import textwrap

import pytest

from bench.registry import UnknownName, method_registry, metric_registry


def test_builtin_methods_resolve_to_method_classes():
    from bench.method import Method

    reg = method_registry()
    for name in ("reference", "frozen", "wav2lip", "nerf_head"):
        assert reg.entry(name).origin == "built-in"
    cls = reg.load("frozen")
    assert issubclass(cls, Method) and cls.spec.name == "frozen"


def test_typo_gets_did_you_mean():
    with pytest.raises(UnknownName) as e:
        method_registry().entry("wavlip")
    assert "did you mean 'wav2lip'" in str(e.value)
    with pytest.raises(UnknownName) as e:
        metric_registry().entry("psrn")
    assert "did you mean 'psnr'" in str(e.value)


def test_unknown_name_without_close_match_lists_known_names():
    with pytest.raises(UnknownName) as e:
        method_registry().entry("zzzzzz")
    assert "did you mean" not in str(e.value) and "reference" in str(e.value)


@pytest.fixture()
def third_party_package(tmp_path, monkeypatch):
    """A minimal installed distribution that declares a method through the entry-point group."""
    pkg = tmp_path / "fake_talking_head"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "method.py").write_text(textwrap.dedent('''
        from dataclasses import dataclass
        import numpy as np
        from bench.method import GenerateResult, Method, MethodSpec

        @dataclass(frozen=True)
        class Opts:
            level: int = 7

        class Grey(Method):
            spec = MethodSpec(name="grey", description="uniform grey frames", config=Opts, kind="2d")

            def generate(self, request):
                h, w = request.target.size
                return GenerateResult(np.full((request.num_frames, h, w, 3), self.config.level, np.uint8))
    '''))
    dist = tmp_path / "fake_talking_head-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-talking-head\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[talkbench.methods]\ngrey = fake_talking_head.method:Grey\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "grey"


def test_entry_point_method_is_registered_and_loads(third_party_package):
    reg = method_registry()
    entry = reg.entry(third_party_package)
    assert entry.origin == "fake-talking-head"
    cls = reg.load(third_party_package)
    assert cls.spec.name == "grey" and cls.spec.config().level == 7


def test_builtin_wins_over_entry_point_of_same_name(tmp_path, monkeypatch):
    dist = tmp_path / "shadow-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shadow\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[talkbench.methods]\nfrozen = nowhere:Nothing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert method_registry().entry("frozen").origin == "built-in"


def test_method_that_fails_to_import_is_unavailable_with_reason(tmp_path, monkeypatch):
    from bench.runner import resolve_methods
    import methods

    monkeypatch.setitem(methods.BUILTIN_METHODS, "broken", "no_such_module_xyz:Method")
    resolved = {m.name: m for m in resolve_methods(["all"], {}, "cpu")}
    assert not resolved["broken"].availability.ok
    assert "no_such_module_xyz" in resolved["broken"].availability.reason
    assert resolved["frozen"].availability.ok
