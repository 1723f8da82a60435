"""Speech encoders that ``transformers`` implements, behind the upstream contract (``-u hf``).

One upstream for the published families people compare: Wav2Vec2 (XLS-R, and the encoder of
``*ForCTC`` / ``*ForPreTraining`` checkpoints), HuBERT (DistilHuBERT-style shallow models too),
WavLM, Data2VecAudio, UniSpeech, UniSpeechSat, Wav2Vec2-Conformer and Whisper's encoder. The
network is the ``transformers`` model itself; what this package adds:

* **Hidden states** as the model defines them: ``output_hidden_states`` (the Transformer input,
  then every layer) with the last one the encoder's output, after the final layer norm of pre-LN
  models (Large, XLS-R, Whisper), as S3PRL and transformers 4 give them (transformers 5 lists the
  last layer before that norm); zero past each utterance's frames.
* **Input preprocessing from the checkpoint's feature-extractor config**
  (``preprocessor_config.json``): per-utterance zero-mean unit-variance normalisation over the valid
  samples when ``do_normalize`` is set, exactly as ``Wav2Vec2FeatureExtractor``; Whisper's log-mel
  features from its own ``WhisperFeatureExtractor``. A model that expects another sampling rate
  than 16 kHz is refused.
* **Exact frame counts** from the model's own length formula (``_get_feat_extract_output_lengths``).
* **Batch independence.** Models whose CNN starts with a GroupNorm (``feat_extract_norm: group``:
  wav2vec 2.0 Base, HuBERT Base, WavLM Base, DistilHuBERT ...) normalise each channel over the whole
  padded input, and Hugging Face's own guidance is to give them no attention mask; their outputs then
  depend on how much padding the batch adds. Data2VecAudio's stacked position convolutions and the
  Conformer's convolution module also mix padded frames into valid ones. These models run one
  utterance at a time here. The others (wav2vec 2.0, HuBERT, WavLM, UniSpeech(-SAT) with a per-frame
  LayerNorm CNN: Large models, XLS-R) run as a batch with an attention mask; Hugging Face zeroes
  padded frames before their one position convolution, so the states equal the single utterance's.
  Whisper pads every utterance to its fixed 30-s window alone (its feature extractor's own padding)
  and keeps the input's own frames: ``(ceil(S / 160) - 1) // 2 + 1``; longer inputs are refused.

Modules: :mod:`.model` (:class:`HFUpstream`, the waveform families), :mod:`.whisper`
(:class:`WhisperUpstream`, its subclass for Whisper's encoder), :mod:`.load` (the registry's entries:
:func:`build_hf`, :func:`load_hf`), :mod:`.hub` (model ids: the local Hugging Face cache first, then
the hub), :mod:`.fairseq` (fairseq / S3PRL wav2vec 2.0 and WavLM checkpoint files as Hugging Face
models). The upstream's settings are the model config and the preprocessing, so
:func:`upstream.registry.save_upstream` and ``build_upstream("hf", **settings)`` round-trip it (and give
its random-weights twin).
"""
from .hub import resolve_model
from .load import PRESETS, build_hf, load_hf, upstream_class
from .model import FAMILIES, HFUpstream
from .whisper import WhisperUpstream

__all__ = ["FAMILIES", "PRESETS", "HFUpstream", "WhisperUpstream", "build_hf", "load_hf", "resolve_model",
           "upstream_class"]
