"""Metrics: pure functions on arrays plus thin `metrics.base.Metric` wrappers the runner calls.

BUILTIN_METRICS maps a metric family name to its "module:Class"; modules must be cheap to import.
Families whose model the suite trains itself never carry a published metric's name.
"""

BUILTIN_METRICS: dict[str, str] = {
    "psnr": "metrics.image:PSNRMetric",
    "ssim": "metrics.image:SSIMMetric",
    "lpips_alex": "metrics.lpips.metric:LPIPSAlex",
    "lpips_vgg": "metrics.lpips.metric:LPIPSVGG",
    "lse": "metrics.sync.metric:LSEMetric",
    "sync_suite": "metrics.sync.suite:SuiteSyncMetric",
    "lmd": "metrics.lmd:LMDMetric",
    "fps": "metrics.fps:FPS",
    "output_check": "metrics.output_check:OutputCheck",
}
