"""How phonetic a pre-training run's discrete targets are: phone purity, cluster purity and PNMI.

HuBERT's paper (Hsu et al., 2021, section IV-B) measures its k-means targets against frame-level
phone labels. With p(y, z) the joint distribution of phone y and target id z over frames:

* phone purity ``E_z[max_y p(y | z)]``: the frame accuracy of labelling each id with its most
  frequent phone;
* cluster purity ``E_y[max_z p(z | y)]``: the same with the roles swapped;
* PNMI ``I(y; z) / H(y)``: the share of the phone label's uncertainty that the id removes.

These plug-in estimates grow with the number of ids a target set uses when frames are few (8192
BEST-RQ codes over 15k frames leave most codes with a handful of frames, each "pure"), so they
compare target sets of similar size only. ``heldout_phone_purity`` does not: the id -> phone map is
read off every other utterance and scored on the rest (an id unseen there counts as the most
frequent phone).

Targets: HuBERT's k-means labels (``targets/labels.pt`` of the run, iteration 1 on MFCCs or
iteration 2 on a teacher's layer) or, for models with :meth:`target_ids` (BEST-RQ's random-projection
codes), the ids computed from the run's checkpoint. Phones: a :mod:`corpora.alignments` file (e.g.
``python -m recipes.pr.align``) whose utterance ids are the stems of the audio files the run
pre-trained on. A target frame takes the phone at its centre (frame ``i`` of a record starting at
``start`` s: ``start + (i * hop + window / 2) / 16000``); frames outside every segment are left out.

    python -m upstream.pretrain.target_quality exp/pretrain/hubert_tiny_iter1 \\
        --alignments exp/align/alignments-train.tsv

writes ``target_quality.json`` into the run's folder and adds it to its ``summary.json``.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from core import runs
from core.cli import run_main
from core.config import merge
from corpora.alignments import phones_at, read_alignments
from corpora.audio import SAMPLE_RATE, load_audio
from corpora.manifest import Record

from ..registry import build_upstream
from .trainer import PretrainConfig, Pretrainer


def purity_and_pnmi(phones: list[str], ids: list[int]) -> dict[str, float]:
    """Phone purity, cluster purity and PNMI of paired frame labels (see the module docstring)."""
    if not phones or len(phones) != len(ids):
        raise ValueError(f"need as many target ids as phone labels, and some: {len(ids)} ids, {len(phones)} phones")
    phone_index = {p: i for i, p in enumerate(sorted(set(phones)))}
    id_index = {z: i for i, z in enumerate(sorted(set(ids)))}
    joint = np.zeros((len(phone_index), len(id_index)))
    np.add.at(joint, ([phone_index[p] for p in phones], [id_index[z] for z in ids]), 1.0)
    joint /= joint.sum()
    p_y, p_z = joint.sum(1), joint.sum(0)
    nonzero = joint > 0
    mutual = float((joint[nonzero] * np.log(joint[nonzero] / np.outer(p_y, p_z)[nonzero])).sum())
    entropy = float(-(p_y * np.log(p_y)).sum())
    return {"phone_purity": float(joint.max(0).sum()), "cluster_purity": float(joint.max(1).sum()),
            "pnmi": mutual / entropy if entropy > 0 else 0.0, "frames": len(ids), "phones": len(phone_index),
            "ids_used": len(id_index)}


def heldout_phone_purity(pairs: list[tuple[list[str], list[int]]]) -> float:
    """Frame accuracy on utterances 1, 3, 5, ... of the id -> most frequent phone map of utterances 0, 2, 4, ...
    ``pairs``: per utterance, (phones, ids) of its frames."""
    counts: dict[int, dict[str, int]] = {}
    overall: dict[str, int] = {}
    for phones, ids in pairs[0::2]:
        for y, z in zip(phones, ids, strict=True):
            counts.setdefault(z, {})[y] = counts.setdefault(z, {}).get(y, 0) + 1
            overall[y] = overall.get(y, 0) + 1
    fallback = max(overall, key=overall.get)
    best = {z: max(c, key=c.get) for z, c in counts.items()}
    scored = [(y, z) for phones, ids in pairs[1::2] for y, z in zip(phones, ids, strict=True)]
    if not scored:
        raise ValueError("need at least two aligned utterances for the held-out phone purity")
    return sum(best.get(z, fallback) == y for y, z in scored) / len(scored)


def frame_centres(record: Record, frames: int, hop: int, window: int) -> list[float]:
    """Seconds from the start of the file at the centre of each of ``frames`` frames of ``record``."""
    return [record.start + (i * hop + window / 2) / SAMPLE_RATE for i in range(frames)]


def run_target_quality(run_dir: str | Path, alignments: str | Path) -> dict:
    """The diagnostics of the pre-training run in ``run_dir`` on the aligned utterances it trained or
    validated on.

    Raises:
        FileNotFoundError: the run or its labels are missing. ValueError: no aligned utterance in its data,
            or a model without discrete targets of its own and no ``labels.pt``.
    """
    run_dir = Path(run_dir)
    snapshot = yaml.safe_load((run_dir / runs.CONFIG_FILE).read_text())
    cfg = merge(PretrainConfig(), snapshot["config"])
    checkpoint = run_dir / runs.UPSTREAM_FILE  # absent after the target stages alone: the model's settings suffice then
    model = build_upstream(snapshot["upstream"], checkpoint) if checkpoint.is_file() \
        else build_upstream(snapshot["upstream"], **cfg.upstream)
    train, valid = Pretrainer(run_dir, snapshot["upstream"], cfg, snapshot["data"]).records()
    segments = read_alignments(alignments)
    records = [r for r in train + valid if Path(r.path).stem in segments]
    if not records:
        raise ValueError(f"none of the {len(train) + len(valid)} pre-training records of {run_dir} is in {alignments}")
    labels_file = run_dir / "targets" / "labels.pt"
    labels = torch.load(labels_file, weights_only=True) if labels_file.is_file() else None
    if labels is None and not (hasattr(model, "target_ids") and checkpoint.is_file()):
        raise ValueError(f"{run_dir}: no {labels_file}, and no {checkpoint} of a model with targets of its own")
    window = getattr(model, "min_samples", model.downsample_rate)
    pairs = []
    for record in records:
        if labels is not None:
            target = labels[record.id].long()
        else:
            wav = load_audio(record.path, record.start, record.duration)
            target = model.target_ids(wav[None], torch.tensor([len(wav)]))[0]
        at = phones_at(segments[Path(record.path).stem],
                       frame_centres(record, len(target), model.downsample_rate, window))
        kept = [(y, z) for y, z in zip(at, target.tolist(), strict=True) if y is not None]
        pairs.append(([y for y, _ in kept], [z for _, z in kept]))
    source = "k-means labels (targets/labels.pt)" if labels is not None else "the model's own target ids"
    return {**purity_and_pnmi([y for p, _ in pairs for y in p], [z for _, i in pairs for z in i]),
            "heldout_phone_purity": heldout_phone_purity(pairs), "utterances": len(records), "targets": source,
            "alignments": str(alignments)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m upstream.pretrain.target_quality", description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a pre-training experiment folder (upstream.pretrain's -p/-n)")
    p.add_argument("--alignments", type=Path, required=True, help="phone alignments (corpora.alignments format)")
    args = p.parse_args(argv)
    return run_main(lambda: _report(args), log_level=logging.WARNING)


def _report(args: argparse.Namespace) -> int:
    """Measure, write ``target_quality.json`` (and into the run's summary), print."""
    quality = run_target_quality(args.run, args.alignments)
    (args.run / "target_quality.json").write_text(json.dumps(quality, indent=1))
    summary_file = args.run / runs.SUMMARY_FILE
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text())
        summary["target_quality"] = quality
        summary_file.write_text(json.dumps(summary, indent=1))
    print(json.dumps(quality, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
