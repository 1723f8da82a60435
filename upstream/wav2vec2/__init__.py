"""wav2vec 2.0: contrastive pre-training on torchaudio's wav2vec 2.0 encoder.

* :mod:`.encoder`: the torchaudio encoder behind the upstream contract (every hidden state, batch
  independence, fine-tuning), which HuBERT builds on too;
* :mod:`.model`: config, presets, the Gumbel quantiser and the contrastive objective;
* :mod:`.checkpoints`: Hugging Face folders and fairseq / S3PRL files, and the encoder-weight
  helpers HuBERT's loaders share.
"""
from .encoder import EncoderConfig, TorchaudioEncoderUpstream
from .model import PRESETS, GumbelQuantizer, Wav2Vec2Config, Wav2Vec2Upstream, build_wav2vec2

__all__ = ["PRESETS", "EncoderConfig", "GumbelQuantizer", "TorchaudioEncoderUpstream", "Wav2Vec2Config",
           "Wav2Vec2Upstream", "build_wav2vec2"]
