"""Phone alignments of a corpus split by CTC forced alignment with a trained phoneme-recognition probe.

The experiment is a ``-d pr`` run (:mod:`downstream.tasks.pr`): its best checkpoint's per-frame
phone log-probabilities and each utterance's reference phones (the task's CMU-dictionary / espeak-ng
transcription) go to :func:`torchaudio.functional.forced_align`, the Viterbi path of CTC through
exactly that phone sequence. A phone's segment runs from the first frame the path emits it to the
frame before the next phone's first frame (CTC's blank frames after a phone belong to it); before
the first phone and after the last phone's last emitted frame is ``SIL``. Times are frame centres
(``i * hop + window / 2`` samples, the upstream's hop and window) minus half a hop, in seconds from
the start of the file; rows as :mod:`corpora.alignments` writes them.

The probe is SUPERB's linear layer, so the alignment is only as sharp as its posteriors: the
boundaries of a weak probe are rough, and the segments serve comparisons (targets against the same
alignment), not absolute phone-boundary claims. The dev-set PER of the experiment says how good it is.
Command line: ``python -m recipes.pr.align``; a benchmark QbE track with ``align:`` uses it too.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torchaudio.functional as AF
from tqdm import tqdm

from core import runs
from corpora.alignments import SILENCE, Segments, write_alignments
from corpora.audio import SAMPLE_RATE
from upstream import build_upstream

from .runner import Experiment


def align_split(exp: Experiment, split: str) -> tuple[dict[str, Segments], list[str]]:
    """(utterance id -> segments, ids that could not be aligned: too few frames for their phones)."""
    if exp.task.name != "pr":
        raise ValueError(f"experiment '{exp.dir.name}' is a {exp.task.name!r} run; alignment needs a phoneme "
                         "recognition (-d pr) experiment")
    upstream = build_upstream(exp.spec.upstream, exp.spec.upstream_ckpt)
    hop = upstream.downsample_rate * exp.cfg.task.downsample / exp.cfg.task.upsample
    offset = (getattr(upstream, "min_samples", upstream.downsample_rate) - hop) / 2
    alignments, failed = {}, []
    for records, output in tqdm(exp.head_outputs(split), desc=f"align {split}", unit="batch"):
        log_probs, lengths = exp.task.log_probs(output)
        for b, record in enumerate(records):
            phones = exp.task.targets[record.id]
            frames = int(lengths[b])
            try:
                path, scores = AF.forced_align(log_probs[b:b + 1, :frames].float(),
                                               torch.tensor([phones], dtype=torch.int32), blank=0)
            except RuntimeError:  # torchaudio: fewer frames than the phones (plus repeats) need
                failed.append(record.id)
                continue
            spans = AF.merge_tokens(path[0], scores[0].exp(), blank=0)
            times = [round(record.start + max(0.0, i * hop + offset) / SAMPLE_RATE, 3) for i in range(frames + 1)]
            alignments[Path(record.path).stem] = segments(spans, times, exp.task.phones)
    return alignments, failed


def segments(spans: list[AF.TokenSpan], times: list[float], phones: list[str]) -> Segments:
    """The phone segments of one utterance from its CTC token spans (frames) and the time of every
    frame boundary (``len(times)`` = frames + 1): a phone from its first frame to the next phone's
    first frame, ``SIL`` before the first and after the last phone."""
    out: Segments = []
    frames = len(times) - 1
    if spans[0].start > 0:
        out.append((times[0], times[spans[0].start], SILENCE))
    for k, span in enumerate(spans):
        end = spans[k + 1].start if k + 1 < len(spans) else span.end
        out.append((times[span.start], times[end], phones[span.token]))
    if spans[-1].end < frames:
        out.append((times[spans[-1].end], times[frames], SILENCE))
    return out


def align_to_file(exp: Experiment, splits: list[str], out: Path) -> tuple[Path, int, list[str]]:
    """Align ``splits`` of a trained PR experiment into one TSV (written atomically): (the TSV, utterances
    aligned, ids too short for their phones)."""
    alignments, failed = {}, []
    for split in splits:
        aligned, not_aligned = align_split(exp, split)
        alignments.update(aligned)
        failed += not_aligned
    return write_alignments(out, alignments), len(alignments), failed


def aligner_dev_per(exp: Experiment) -> float | None:
    """The dev PER the experiment's results record (how sharp its alignments can be), or None."""
    results_path = exp.dir / runs.RESULTS_FILE
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    return results.get("splits", {}).get("dev", {}).get("per")
