"""The toolkit's synthetic demo corpora, spoken by espeak-ng and flite voices, in real corpora's layouts.

One module per corpus, each read by the toolkit's reader for the real corpus it imitates:
    :mod:`.keywords`  keyword spotting, Speech Commands v0.01 layout (``build_demo_keywords``)
    :mod:`.asr`       read sentences, LibriSpeech / Libri-light layout (``build_demo_asr``)
    :mod:`.st`        English -> German speech translation, CoVoST 2 layout (``build_demo_st``)
:mod:`.tts` holds what they share: the TTS speakers and their speaker-disjoint split, synthesis,
coloured noise and the build helpers. One entry point builds any of them:
``python -m corpora.demo keywords|asr|st OUT_DIR``.

Every builder is idempotent: it writes a ``BUILT.json`` stamp with its parameters, returns at once
when ``OUT_DIR`` already holds a corpus built with the same ones and rebuilds only when they change.
A build happens in a hidden sibling folder renamed into place at the end, so an interrupted build
leaves ``OUT_DIR`` untouched; a non-empty folder that no builder made is refused.
"""
from .asr import build_demo_asr
from .keywords import build_demo_keywords
from .st import build_demo_st

__all__ = ["build_demo_asr", "build_demo_keywords", "build_demo_st"]
