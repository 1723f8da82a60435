"""BEST-RQ: masked prediction of a frozen random-projection quantizer's ids from log-mel, on torchaudio's
Conformer (:mod:`.model`: config, presets, the quantizer, the model and its objective)."""
from .model import PRESETS, BestRQConfig, BestRQUpstream, RandomProjectionQuantizer, build_bestrq

__all__ = ["PRESETS", "BestRQConfig", "BestRQUpstream", "RandomProjectionQuantizer", "build_bestrq"]
