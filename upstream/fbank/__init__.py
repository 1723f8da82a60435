"""The FBANK baseline (``fbank``, ``fbank_global``, ``fbank_raw``): log-mel filterbanks and deltas as a
one-layer upstream, :mod:`.model`."""
from .model import CMVN_MODES, FbankUpstream

__all__ = ["CMVN_MODES", "FbankUpstream"]
