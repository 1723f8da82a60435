"""Mockingjay: a BERT-style Transformer pre-trained by masked acoustic modelling (MAM).

Numerically compatible with S3PRL's Mockingjay (v0.4.18: ``s3prl/upstream/mockingjay/{model,builder,
expert}.py``, ``s3prl/upstream/baseline/preprocessor.py``, ``s3prl/pretrain/mockingjay/task.py``):
same features, same network, same parameter names (``transformer.*`` here is S3PRL's
``Transformer`` state dict, ``spec_head.*`` its ``SpecHead``), same hidden states on valid frames.
:mod:`.s3prl` converts checkpoints both ways.

Modules:

* :mod:`.config`: :class:`MockingjayConfig` (field names as S3PRL's config) and the size presets;
* :mod:`.features`: :class:`MockingjayFeatures`, S3PRL's ``OnlinePreprocessor`` per utterance;
* :mod:`.transformer`: the network, :class:`TransformerModel` and :class:`SpecPredictionHead`;
* :mod:`.model`: :class:`MockingjayUpstream` (chunked encoding, the MAM loss) and :func:`build_mockingjay`;
* :mod:`.s3prl`: S3PRL checkpoints loaded and ours exported for S3PRL.

Differences from S3PRL, all on purpose: features and chunking are computed per utterance, so a
batch gives the same hidden states as each utterance alone (S3PRL computes the STFT, CMVN lengths
and chunking on the padded batch, so its outputs for the shorter utterances of a batch depend on the
longest one); padded frames are zero; masked spans never cover padding.
"""
from .config import FEATURE_TYPES, PRESETS, MockingjayConfig
from .features import MockingjayFeatures
from .model import MockingjayUpstream, build_mockingjay, chunk_bounds
from .transformer import SpecPredictionHead, TransformerModel

__all__ = [
    "FEATURE_TYPES",
    "PRESETS",
    "MockingjayConfig",
    "MockingjayFeatures",
    "MockingjayUpstream",
    "SpecPredictionHead",
    "TransformerModel",
    "build_mockingjay",
    "chunk_bounds",
]
