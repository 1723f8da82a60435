"""APC: autoregressive predictive coding, a GRU stack predicting the log-mel frame n steps ahead.

* :mod:`.model`: config, presets, the model and its L1 objective (numerically S3PRL's APC);
* :mod:`.s3prl`: S3PRL checkpoints loaded and ours exported for S3PRL.
"""
from .model import PRESETS, APCConfig, APCUpstream, build_apc

__all__ = ["PRESETS", "APCConfig", "APCUpstream", "build_apc"]
