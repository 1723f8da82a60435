"""Self-supervised speech encoders behind one contract (see :mod:`upstream.base`)."""
from .base import Upstream, UpstreamOutput
from .featurizer import Featurizer
from .registry import available_upstreams, build_upstream

__all__ = ["Upstream", "UpstreamOutput", "Featurizer", "build_upstream", "available_upstreams"]
