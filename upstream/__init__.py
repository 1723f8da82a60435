"""Self-supervised speech encoders behind one contract (see :mod:`upstream.base`).

Built by name through :mod:`upstream.registry`; :mod:`upstream.featurizer` collapses their layers and
:mod:`upstream.frontend` holds the shared log-mel front ends and normaliser. One folder per model family
(``fbank/``, ``apc/``, ``mockingjay/``, ``hubert/``, ``bestrq/``, ``wav2vec2/``, ``hf/``: model, config and
presets, checkpoint interop), ``interop/`` for the fairseq and S3PRL file readers they share, and
``pretrain/`` for pre-training, which sits above the models (none of them imports it).
"""
from .base import Upstream, UpstreamOutput
from .featurizer import Featurizer
from .registry import available_upstreams, build_upstream

__all__ = ["Upstream", "UpstreamOutput", "Featurizer", "build_upstream", "available_upstreams"]
