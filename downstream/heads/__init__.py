"""Downstream heads by name: small modules with one contract, ``head(x, x_len) -> (y, y_len)``.

``x`` (B, T, D) holds the featurizer's frames, padded past ``x_len`` (B,); whatever the padding
holds, it never changes an utterance's output (tested: an utterance gives what it gives alone; while
training, SpecAugment draws its masks over the padded length, as S3PRL's). What ``y`` is depends on
the head's ``level``:

* ``frame``: scores per frame, (B, T', C), and the frame counts ``y_len`` (T' differs from T when
  the head resamples frames: ``upsample`` / ``downsample``);
* ``utterance``: one score vector per utterance, (B, C), and ``y_len`` all ones;
* ``seq2seq``: the encoder memory (B, S, d_model) and its lengths; the decoder, which needs the
  target prefix, is the head's own ``decode`` / ``decode_step`` (:mod:`.seq2seq`).

Scores are raw (logits): the task normalises them where it needs to (CTC's log-softmax).

A task's config names its head (``task.head``, one of :data:`HEADS`) and may set the head's
options (``task.head_options``, checked against the head's ``options_class``). A head option that is
also a setting of the task's config (ASR's ``proj_dim``, the CTC tasks' ``downsample``) takes
that setting's value and is set there, not in ``head_options``. Each head class has ``level``,
``options_class`` and the constructor ``(input_dim, output_dim, options)``.
"""
from __future__ import annotations

import dataclasses

from torch import nn

from core.config import ConfigError, merge

from .frame import BiLSTMHead, FrameLinear
from .seq2seq import S2TTransformer
from .utterance import MeanLinear, ProjMeanLinear, StatsLinear, XVector

HEADS: dict[str, type[nn.Module]] = {
    "linear": FrameLinear,
    "bilstm": BiLSTMHead,
    "mean_linear": MeanLinear,
    "proj_mean_linear": ProjMeanLinear,
    "stats_linear": StatsLinear,
    "xvector": XVector,
    "s2t_transformer": S2TTransformer,
}
"""Head name -> head class (its builder: ``cls(input_dim, output_dim, options)``)."""

LEVELS = ("frame", "utterance", "seq2seq")


def head_names(levels: tuple[str, ...] = LEVELS) -> list[str]:
    """The names of the heads of these levels, sorted."""
    return sorted(name for name, cls in HEADS.items() if cls.level in levels)


def head_class(name: str, levels: tuple[str, ...] = LEVELS, task: str = "this task") -> type[nn.Module]:
    """The head class registered as ``name``; ConfigError (listing the choices) for an unknown name
    or a head of another level than ``levels``."""
    choices = ", ".join(head_names(levels))
    if name not in HEADS:
        raise ConfigError(f"task.head {name!r} unknown for {task}; choose from {choices}")
    level = HEADS[name].level
    if level not in levels:
        article = "an" if level[0] in "aeiou" else "a"
        raise ConfigError(f"task.head {name!r} is {article} {level}-level head; {task} takes "
                          f"{' or '.join(levels)}-level heads: {choices}")
    return HEADS[name]


def head_options(name: str, options: dict | None = None, settings: dict | None = None,
                 levels: tuple[str, ...] = LEVELS, task: str = "this task"):
    """The head's options: its defaults, then the task ``settings`` it has options for, then ``options``
    (``task.head_options``, checked: an unknown key, a wrong type or a key that is a task setting is
    a ConfigError naming it)."""
    cls = head_class(name, levels, task)
    fields = {f.name for f in dataclasses.fields(cls.options_class)}
    settings, options = settings or {}, options or {}
    clash = sorted(set(options) & set(settings))
    if clash:
        raise ConfigError(f"task.head_options.{clash[0]}: {clash[0]} is a setting of {task}; set task.{clash[0]} "
                          "instead")
    if options and not fields:
        raise ConfigError(f"task.head_options: the {name} head has no options; got {', '.join(sorted(options))}")
    resolved = merge(cls.options_class(), {k: v for k, v in settings.items() if k in fields}, where="task")
    return merge(resolved, options, where="task.head_options")


def build_head(name: str, input_dim: int, output_dim: int, options: dict | None = None,
               settings: dict | None = None, levels: tuple[str, ...] = LEVELS, task: str = "this task") -> nn.Module:
    """The head ``name`` for ``input_dim`` features and ``output_dim`` scores, its options resolved
    by :func:`head_options`."""
    return HEADS[name](input_dim, output_dim, head_options(name, options, settings, levels, task))
