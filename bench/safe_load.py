"""The one way the suite reads a PyTorch file: `torch.load(weights_only=True)`, with errors a user
can act on.

torch's own refusal text advises re-running with `weights_only=False`, which would execute whatever
the file holds; that advice must never reach a user of this suite, so refusals are rewritten into a
message that names the offending Python object and says the file is refused for good.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

# torch has spelled the offending object several ways across releases:
#   "Unsupported global: GLOBAL __main__.Obj was not an allowed global ..."   (>= 2.4)
#   "Trying to load unsupported GLOBAL posix.system whose module posix is blocked."
_GLOBAL = re.compile(r"(?:unsupported\s+global:?\s*)?GLOBAL\s+([\w.]+)", re.IGNORECASE)


class UnsafeCheckpoint(RuntimeError):
    """The file holds Python objects beyond tensors and plain containers; it is never unpickled."""


class UnreadableCheckpoint(RuntimeError):
    """The file is missing, truncated or not a PyTorch file at all."""


def refused_object(message: str) -> str | None:
    """The dotted name of the object torch refused to unpickle, read from its error text."""
    m = _GLOBAL.search(message)
    return m.group(1) if m else None


def load_weights(path: Path | str, *, what: str = "checkpoint", mmap: bool = False) -> Any:
    """torch.load(path, map_location="cpu", weights_only=True) with actionable errors.

    Raises UnsafeCheckpoint when the file holds Python objects (the name of the first refused one is
    in the message), UnreadableCheckpoint for a missing, truncated or foreign file.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise UnreadableCheckpoint(f"{path}: {what} file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        text = str(e)
        name = refused_object(text)
        if name:  # garbage bytes also fail the weights-only unpickler, but name no GLOBAL
            raise UnsafeCheckpoint(
                f"{path}: this {what} holds a Python object ({name}) besides tensors and plain containers. talkbench reads "
                "weights only, so it is refused and never unpickled. Re-save the tensors alone (a "
                "state_dict of tensors) from a trusted copy to use it.") from None
        raise UnreadableCheckpoint(f"{path}: not a readable PyTorch {what} (UnpicklingError)") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:  # zip / pickle corruption takes several forms
        first = str(e).splitlines()[0] if str(e) else ""
        raise UnreadableCheckpoint(
            f"{path}: not a readable PyTorch {what} ({type(e).__name__}: {first[:200]})") from None
