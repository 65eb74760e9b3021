"""Every third-party module the suite's code imports is a declared dependency of `pip install talkbench`
(pyproject's `dependencies`), or one of the optional backends below, imported only behind a guard.

A module that arrives in a development venv through a dev-only or transitive package (Pillow came
with the test extras) passes every test and then breaks `make demo` on a fresh machine: this test
reads the imports, not the environment's luck."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "methods", "metrics", "data_recipes", "reports")
# optional backends: module -> why it may be absent (each import is guarded where it is used)
OPTIONAL = {
    "tinycudann": "nerf_head's optional tiny-cuda-nn grid backend (CUDA only)",
    "ray": "the `ray` executor (extra talkbench[ray])",
    "playwright": "browser tests of the report (extra talkbench[browser])",
}


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imports() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in PACKAGES and top != "__future__":
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def _declared() -> set[str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {_canon(re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0]) for d in deps}


def _owners_by_file(module: str) -> set[str]:
    """Distributions whose RECORD lists the module's file (extension modules such as parselmouth's
    are missing from `packages_distributions`)."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        return set()
    origin = Path(spec.origin).resolve()
    out = set()
    for dist in metadata.distributions():
        for f in dist.files or ():
            if f.name == origin.name and Path(dist.locate_file(f)).resolve() == origin:
                out.add(_canon(dist.metadata["Name"]))
    return out


def test_every_imported_module_is_a_declared_dependency():
    declared = _declared()
    dists = metadata.packages_distributions()
    undeclared = {}
    for module, files in sorted(_imports().items()):
        if module in OPTIONAL:
            continue
        owners = {_canon(d) for d in dists.get(module, [])} or _owners_by_file(module)
        if not owners:
            pytest.fail(f"{module} (imported by {sorted(files)}) is not installed here: declare it or guard it")
        if not owners & declared:
            undeclared[module] = (sorted(owners), sorted(files))
    assert not undeclared, f"imported but not in pyproject's dependencies: {undeclared}"


def test_the_scan_sees_real_imports():
    found = _imports()
    # the scan must find what the suite certainly imports, or the test above proves nothing
    assert {"torch", "numpy", "cv2", "yaml"} <= set(found)
    assert "torch" in _declared() and "pyyaml" in _declared()
