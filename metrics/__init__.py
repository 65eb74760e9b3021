"""Metrics: pure functions on arrays plus thin `metrics.base.Metric` wrappers the runner calls.

BUILTIN_METRICS maps a metric family name to its "module:Class"; modules must be cheap to import.
"""

BUILTIN_METRICS: dict[str, str] = {
    "fps": "metrics.fps:FPS",
}
