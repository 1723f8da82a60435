"""Downstream tasks by name. The runner knows none of them; it asks this registry."""
from __future__ import annotations

from .asr import SpeechRecognition
from .asv import SpeakerVerification
from .base import Task
from .er import EmotionRecognition
from .ic import IntentClassification
from .ks import KeywordSpotting
from .pr import PhonemeRecognition
from .sid import SpeakerIdentification
from .st import SpeechTranslation

TASKS: dict[str, type[Task]] = {t.name: t for t in (KeywordSpotting, SpeechRecognition, PhonemeRecognition,
                                                     SpeechTranslation, SpeakerIdentification,
                                                     SpeakerVerification, EmotionRecognition,
                                                     IntentClassification)}


def get_task(name: str) -> type[Task]:
    """The task class registered as ``name``."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; available: {', '.join(sorted(TASKS))}")
    return TASKS[name]
