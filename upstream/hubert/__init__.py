"""HuBERT: masked prediction of k-means ids (MFCC, then its own layer), on torchaudio's HuBERT.

* :mod:`.model`: config (the CNN or the MelHuBERT log-mel front end), presets, the model and its
  masked-prediction objective, built on :mod:`upstream.wav2vec2.encoder`;
* :mod:`.targets`: the k-means target stages (features, centroids, labels) pre-training runs first;
* :mod:`.checkpoints`: fairseq, S3PRL and Hugging Face checkpoints people have.
"""
from .model import MEL_SETTINGS, PRESETS, HubertConfig, HubertUpstream, build_hubert

__all__ = ["MEL_SETTINGS", "PRESETS", "HubertConfig", "HubertUpstream", "build_hubert"]
