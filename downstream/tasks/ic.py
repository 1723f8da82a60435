"""Intent classification (SUPERB IC): each utterance's slots (FSC's action, object, location), scored by
the share of utterances with every slot right.

Corpus: Fluent Speech Commands as released, or a corpus in its layout (:mod:`corpora.fluent_commands`:
``data/{train,valid,test}_data.csv``; the slots are the columns after ``transcription``, or
``task.slots``), or a ``manifest`` / ``hf`` corpus whose ``label`` is ``slot=value|slot=value|…``
(:func:`corpora.fluent_commands.encode_slots`). The slots and each slot's values are fixed by the
training split and kept in the checkpoint; a dev or test utterance whose slots differ, or whose value
of a slot training never saw, is an error naming it (FSC's and SUPERB's slot sets are closed: an unseen
value cannot be predicted, and counting it silently as wrong would hide a broken split).

Head as SUPERB's (``proj_mean_linear``: Linear(D -> 256), mean pooling over the valid frames,
Linear(256 -> the sum of the slots' value counts)); the scores are cut into one block per slot, and the
loss is the sum of one cross-entropy per slot (S3PRL's ``fluent_commands`` expert). Metrics:
``accuracy``, the utterance accuracy (every slot right: SUPERB's IC number, primary), ``accuracy_<slot>``
per slot (scikit-learn's ``accuracy_score``) and ``slot_accuracy``, their mean. The best dev ``accuracy``
picks the checkpoint (SUPERB's), or the best ``slot_accuracy`` (``task.select_metric``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score
from torch import nn

from corpora.fluent_commands import decode_slots, encode_slots, prepare_fluent_commands
from corpora.manifest import Record, read_manifest

from .base import AUTO, GENERIC_CORPORA, Task

SELECT_METRICS = ("accuracy", "slot_accuracy")


@dataclass
class ICConfig:
    """Intent-classification settings.

    ``corpus``: ``auto`` (the default: the layout ``root`` holds), ``fluent_commands`` (``root`` holds
    ``data/{train,valid,test}_data.csv`` and the audio they name), ``manifest`` or ``hf`` (a ``label``
    column ``slot=value|slot=value|…``).
    """

    corpus: str = AUTO
    root: str = "data/fluent_speech_commands"
    hf_splits: list[str] = field(default_factory=lambda: ["train", "validation", "test"])
    """``corpus: hf``: the dataset's splits used as train, dev and test."""
    slots: list[str] = field(default_factory=list)
    """The slots to classify (CSV columns, or names in ``label``); empty: all of them (FSC: every column
    after ``transcription``)."""
    head: str = "proj_mean_linear"
    """An utterance-level head of :data:`downstream.heads.HEADS`; SUPERB's is ``proj_mean_linear``."""
    head_options: dict = field(default_factory=dict)
    """Options of that head that are not settings here."""
    proj_dim: int = 256
    """The ``proj_mean_linear`` head's projection size (SUPERB's)."""
    select_metric: str = "accuracy"
    """The dev metric that picks the best checkpoint: ``accuracy`` (SUPERB's) or ``slot_accuracy`` (the mean of
    the slots' accuracies: it still moves where no dev utterance has every slot right, as on a small corpus
    with a weak upstream, where ``accuracy`` stays 0 and the first checkpoint would be kept)."""


class IntentClassification(Task):
    name = "ic"
    what = "intent classification"
    config_class = ICConfig
    primary_metric = "accuracy"
    higher_is_better = True
    head_levels = ("utterance",)
    corpora = ("fluent_commands", *GENERIC_CORPORA)
    train_defaults: ClassVar[dict] = {"batch_size": 32, "total_steps": 1000, "eval_every": 50, "save_every": 250}
    """SUPERB's Adam 1e-4 (the generic default) and batch of 32; 1,000 updates instead of its 200k, for the
    CPU (recipes/ic/coffee_orders.yaml)."""

    def __init__(self, cfg: ICConfig, workdir: Path):
        super().__init__(cfg, workdir)
        if cfg.select_metric not in SELECT_METRICS:
            raise ValueError(f"task.select_metric {cfg.select_metric!r} unknown for ic; choose from "
                             f"{', '.join(SELECT_METRICS)}")
        self.selection_metric = cfg.select_metric
        self.slots: list[str] = []
        """The slot names, in the order of the head's score blocks."""
        self.values: dict[str, list[str]] = {}
        """Slot -> its values (sorted), each one score of the slot's block."""
        self.index: dict[str, dict[str, int]] = {}

    # ------------------------------------------------------------------ data
    def prepare(self) -> dict[str, list[Record]]:
        splits = self.generic_splits()
        if splits is None:
            paths = prepare_fluent_commands(self.cfg.root, self.workdir / "manifests", self.cfg.slots)
            splits = {s: read_manifest(p) for s, p in paths.items()}
        return self.use_slots(splits)

    def use_slots(self, splits: dict[str, list[Record]]) -> dict[str, list[Record]]:
        """Fix the slots and their values (a checkpoint's, when :meth:`load_state` set them, else the training
        split's) and check that every split is non-empty, has those slots and only values seen in training;
        return ``splits``."""
        for split, records in splits.items():
            if not records:
                raise ValueError(f"{self.what}: split '{split}' of {self.cfg.root} is empty")
        if not self.slots:
            train = [self.slot_values(r, "train") for r in splits["train"]]
            self.slots = list(train[0])
            self.values = {s: sorted({t[s] for t in train if s in t}) for s in self.slots}
        for split, records in splits.items():
            unseen: dict[tuple[str, str], str] = {}
            for r in records:
                values = self.slot_values(r, split)
                if set(values) != set(self.slots):
                    raise ValueError(f"{self.what}: split '{split}' utterance {r.id} has the slots "
                                     f"{', '.join(values)}; the training split's are {', '.join(self.slots)}")
                for slot, value in values.items():
                    if value not in self.values[slot]:
                        unseen.setdefault((slot, value), r.id)
            if unseen:
                shown = "; ".join(f"{slot}={value!r} (utterance {utt})"
                                  for (slot, value), utt in list(unseen.items())[:5])
                raise ValueError(f"{self.what}: split '{split}' has {len(unseen)} slot value(s) never seen in "
                                 f"training: {shown}. The slot sets are closed (as FSC's): every value must be "
                                 "in the training split")
        self.index = {s: {v: i for i, v in enumerate(vs)} for s, vs in self.values.items()}
        return splits

    def slot_values(self, record: Record, split: str = "") -> dict[str, str]:
        """Slot -> value of a record (its ``label`` decoded; only ``task.slots`` where named, in that order)."""
        where = f"{self.what}: {f'split {split!r} ' if split else ''}utterance {record.id}"
        try:
            values = decode_slots(record.label)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        if self.cfg.slots:
            missing = [s for s in self.cfg.slots if s not in values]
            if missing:
                raise ValueError(f"{where}: no slot {', '.join(missing)} (task.slots) in {record.label!r}")
            values = {s: values[s] for s in self.cfg.slots}
        return values

    def truth(self, record: Record) -> tuple[str, ...]:
        """The record's value of each slot, in slot order."""
        values = self.slot_values(record)
        return tuple(values[s] for s in self.slots)

    # ------------------------------------------------------------------ model
    @property
    def sizes(self) -> list[int]:
        """Each slot's number of values: the sizes of the head's score blocks."""
        return [len(self.values[s]) for s in self.slots]

    def build_head(self, input_dim: int) -> nn.Module:
        return self.make_head(input_dim, sum(self.sizes))

    def targets(self, records: list[Record]) -> torch.Tensor:
        """(B, slots): the index of each record's value of each slot."""
        return torch.tensor([[self.index[s][v] for s, v in zip(self.slots, self.truth(r), strict=True)]
                             for r in records])

    def loss(self, output: tuple[torch.Tensor, torch.Tensor], records: list[Record]) -> torch.Tensor:
        """The sum over slots of each slot's cross-entropy (averaged over the utterances)."""
        logits, _ = output
        targets = self.targets(records).to(logits.device)
        blocks = torch.split(logits, self.sizes, dim=-1)
        return sum(F.cross_entropy(block, targets[:, i]) for i, block in enumerate(blocks))

    def predict(self, output: tuple[torch.Tensor, torch.Tensor]) -> list[tuple[str, ...]]:
        """Each utterance's best value of each slot, in slot order."""
        logits, _ = output
        best = [block.argmax(-1).tolist() for block in torch.split(logits, self.sizes, dim=-1)]
        return [tuple(self.values[s][best[i][b]] for i, s in enumerate(self.slots)) for b in range(logits.shape[0])]

    # ------------------------------------------------------------------ scoring
    def score(self, predictions: list[tuple[str, ...]], records: list[Record]) -> dict[str, float]:
        truth = [self.truth(r) for r in records]
        joint = [self.encode(t) for t in truth], [self.encode(p) for p in predictions]
        metrics = {"accuracy": float(accuracy_score(*joint))}  # an utterance is right when all its slots are
        per_slot = {f"accuracy_{slot}": float(accuracy_score([t[i] for t in truth], [p[i] for p in predictions]))
                    for i, slot in enumerate(self.slots)}
        return {**metrics, "slot_accuracy": sum(per_slot.values()) / len(per_slot), **per_slot}

    def write_predictions(self, path: Path, predictions: list[tuple[str, ...]], records: list[Record]) -> None:
        """TSV: id, reference and hypothesis (``slot=value|…``), and the slots predicted wrong (comma-separated)."""
        with open(path, "w", encoding="utf-8") as f:
            f.write("id\treference\thypothesis\twrong_slots\n")
            for r, p in zip(records, predictions, strict=True):
                t = self.truth(r)
                wrong = ",".join(s for s, a, b in zip(self.slots, t, p, strict=True) if a != b)
                f.write(f"{r.id}\t{self.encode(t)}\t{self.encode(p)}\t{wrong}\n")

    def encode(self, values: tuple[str, ...]) -> str:
        """Slot values in slot order -> ``slot=value|…``."""
        return encode_slots(dict(zip(self.slots, values, strict=True)))

    def dataset(self) -> str:
        """``<corpus>:<root folder name>``, plus ``/slots-<a>,<b>`` when ``task.slots`` names a subset."""
        return super().dataset() + (f"/slots-{','.join(self.cfg.slots)}" if self.cfg.slots else "")

    def state(self) -> dict:
        return {"slots": self.slots, "values": self.values}

    def load_state(self, state: dict) -> None:
        self.slots = list(state["slots"])
        self.values = {s: list(state["values"][s]) for s in self.slots}
        self.index = {s: {v: i for i, v in enumerate(vs)} for s, vs in self.values.items()}
