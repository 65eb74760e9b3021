"""bench.safe_load: weights only, and refusals a user can act on (never torch's weights_only=False advice)."""

from __future__ import annotations

import os

import pytest
import torch

from bench.safe_load import UnreadableCheckpoint, UnsafeCheckpoint, load_weights, refused_object


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo talkbench-pwned > pwned.txt",))


class _PlainObject:
    pass


@pytest.mark.parametrize("payload, name", [(_RunsCode(), "system"), (_PlainObject(), "_PlainObject")])
def test_python_objects_are_refused_with_their_name_and_never_run(tmp_path, monkeypatch, payload, name):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": payload}, path)
    with pytest.raises(UnsafeCheckpoint) as info:
        load_weights(path, what="test checkpoint")
    message = str(info.value)
    assert name in message and "never unpickled" in message and "test checkpoint" in message
    assert "weights_only=False" not in message and "will likely succeed" not in message
    assert info.value.__suppress_context__          # torch's own advice is not chained into the traceback
    assert not (tmp_path / "pwned.txt").exists()


def test_refused_object_reads_both_spellings_of_torch():
    assert refused_object("Trying to load unsupported GLOBAL posix.system whose module posix is blocked.") \
        == "posix.system"
    assert refused_object("WeightsUnpickler error: Unsupported global: GLOBAL __main__.Obj was not an allowed") \
        == "__main__.Obj"
    assert refused_object("some other error") is None


def test_tensors_load_and_broken_files_are_unreadable(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"w": torch.arange(3.0)}, good)
    assert torch.equal(load_weights(good)["w"], torch.arange(3.0))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a zip")
    with pytest.raises(UnreadableCheckpoint, match="not a readable PyTorch checkpoint"):
        load_weights(bad)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(UnreadableCheckpoint, match="not a readable PyTorch"):
        load_weights(truncated)
    with pytest.raises(UnreadableCheckpoint, match="not found"):
        load_weights(tmp_path / "missing.pth")
