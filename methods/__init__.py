"""Talking-head methods. One folder per method, one line per method here.

Each target is "module:Class" where Class subclasses `bench.method.Method`. Modules must be cheap to
import (heavy imports inside functions), so listing methods never loads models.
"""

BUILTIN_METHODS: dict[str, str] = {
    "reference": "methods.baselines:Reference",
    "frozen": "methods.baselines:Frozen",
    "wav2lip": "methods.wav2lip.method:Wav2LipMethod",
    "nerf_head": "methods.nerf_head.method:NerfHeadMethod",
}
