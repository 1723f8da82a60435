"""Acoustic front-ends shared by the upstreams (torchaudio's Kaldi-compatible features) and the one
normaliser of log-mel features, :class:`LogMelNormaliser`."""
from __future__ import annotations

from typing import Iterable

import torch
import torchaudio.compliance.kaldi as kaldi
import torchaudio.transforms as T

from corpora.audio import SAMPLE_RATE

FRAME_LENGTH_MS = 25.0
FRAME_SHIFT_MS = 10.0
WINDOW = int(SAMPLE_RATE * FRAME_LENGTH_MS / 1000)  # 400 samples
HOP = int(SAMPLE_RATE * FRAME_SHIFT_MS / 1000)  # 160 samples


def kaldi_num_frames(num_samples: torch.Tensor) -> torch.Tensor:
    """Frames Kaldi's ``snip_edges`` framing yields: 1 + (S - 400) // 160 for S >= 400, else 0."""
    return torch.where(num_samples >= WINDOW, 1 + (num_samples - WINDOW) // HOP, torch.zeros_like(num_samples))


def log_mel_fbank(wav: torch.Tensor, num_mel_bins: int = 80) -> torch.Tensor:
    """Kaldi-compatible log-mel filterbank of one (S,) waveform in [-1, 1] -> (T, num_mel_bins)."""
    return kaldi.fbank(
        wav.unsqueeze(0),
        num_mel_bins=num_mel_bins,
        frame_length=FRAME_LENGTH_MS,
        frame_shift=FRAME_SHIFT_MS,
        sample_frequency=SAMPLE_RATE,
    )


class Deltas(torch.nn.Module):
    """Append ``order`` orders of regression deltas: (T, D) -> (T, D * (order + 1))."""

    def __init__(self, order: int = 2, win_length: int = 5):
        super().__init__()
        self.order = order
        self.compute = T.ComputeDeltas(win_length=win_length)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        out = [feats]
        for _ in range(self.order):
            out.append(self.compute(out[-1].T).T)
        return torch.cat(out, dim=-1)


def utterance_cmvn(feats: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Per-utterance mean and variance normalisation over time of (T, D) features (S3PRL's: the sample
    standard deviation plus ``eps``; the APC and FBANK parity tests rely on it)."""
    return (feats - feats.mean(dim=0, keepdim=True)) / (eps + feats.std(dim=0, keepdim=True))


def utterance_standardise(feats: torch.Tensor, floor: float = 1e-5) -> torch.Tensor:
    """(T, D) features -> zero mean and unit population standard deviation per dimension over the
    utterance's frames, the deviation floored at ``floor``: the per-utterance option of pre-training
    (BEST-RQ's ``input_norm``, MelHuBERT's ``mel_norm``, k-means ``targets.cmvn``)."""
    return (feats - feats.mean(0)) / feats.std(0, unbiased=False).clamp_min(floor)


class RunningMoments:
    """Accumulates per-dimension mean and standard deviation over many (T, D) feature matrices."""

    def __init__(self, dim: int):
        self.count = 0
        self.sum = torch.zeros(dim, dtype=torch.float64)
        self.sum_sq = torch.zeros(dim, dtype=torch.float64)

    def update(self, feats: torch.Tensor) -> None:
        f = feats.double()
        self.count += f.shape[0]
        self.sum += f.sum(0)
        self.sum_sq += (f * f).sum(0)

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.count < 2:
            raise ValueError("need at least two frames to estimate normalisation statistics")
        mean = self.sum / self.count
        var = (self.sum_sq / self.count - mean * mean).clamp_min(1e-10)
        return mean.float(), var.sqrt().float()


class LogMelNormaliser:
    """The one global normalisation of log-mel (or other per-frame) features, mixed into an ``nn.Module``.

    Buffers ``mean`` and ``std`` ((dim,) each) and ``fitted`` sit on the module itself, under the names
    its checkpoints hold, and are saved with its weights. :meth:`fit_normaliser` estimates them from
    training audio's features (:class:`RunningMoments`: per-dimension mean and population standard
    deviation); :meth:`normalise` applies them, ``(x - mean) / std``, or with ``how="utterance"`` each
    utterance's own statistics (:func:`utterance_standardise`, nothing to fit). The host module says
    when statistics are missing (its ``needs_fit``), which :meth:`check_statistics` turns into an error.
    Used by ``fbank_global``, BEST-RQ's input and the log-mel front end of MelHuBERT.
    """

    mean: torch.Tensor
    std: torch.Tensor
    fitted: torch.Tensor
    needs_fit: bool

    def init_normaliser(self, dim: int, fitted: bool = False) -> None:
        """Register the buffers: zero mean, unit deviation, ``fitted`` as given (True where nothing is to fit)."""
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("fitted", torch.tensor(fitted))

    @torch.no_grad()
    def fit_normaliser(self, features: Iterable[torch.Tensor]) -> None:
        """Estimate ``mean`` and ``std`` from (T, dim) feature matrices (one per utterance) and mark them fitted."""
        moments = RunningMoments(self.mean.numel())
        for feats in features:
            moments.update(feats)
        mean, std = moments.mean_std()
        self.mean.copy_(mean)
        self.std.copy_(std)
        self.fitted.fill_(True)

    def check_statistics(self, what: str) -> None:
        """Raise RuntimeError naming ``what`` when the host still needs its statistics (``needs_fit``)."""
        if self.needs_fit:
            raise RuntimeError(f"{what} has no normalisation statistics: call fit() or load a checkpoint")

    def normalise(self, feats: torch.Tensor, how: str = "global") -> torch.Tensor:
        """(T, dim) features of one utterance -> (T, dim): by the fitted statistics (``global``) or its own
        (``utterance``)."""
        if how == "utterance":
            return utterance_standardise(feats)
        return (feats - self.mean) / self.std


class MelFrontEnd(torch.nn.Module, LogMelNormaliser):
    """Normalised Kaldi log-mel with ``stack`` consecutive 10 ms frames per output frame (MelHuBERT's input).

    A padded batch (B, S) -> (B, T, stack * num_mel_bins), zero after each utterance's T frames:
    each utterance's :func:`log_mel_fbank` frames (m = :func:`kaldi_num_frames` of its length)
    normalised by :class:`LogMelNormaliser`: minus the ``mean`` buffer, divided by the ``std`` buffer
    ((num_mel_bins,) each, estimated by :meth:`fit`) with ``norm="global"``, or by the utterance's own
    per-channel mean and standard deviation with ``norm="utterance"`` (nothing to fit), then groups of
    ``stack`` consecutive frames concatenated. A trailing partial group is completed
    by repeating the utterance's last frame, so T = ceil(m / stack); with ``stack=2`` that is
    ``floor((S - 400) / 320) + 1`` for S >= 400, the frame count of HuBERT's CNN and of its 20 ms
    MFCC targets. Every utterance needs at least one 25 ms window (400 samples).
    """

    def __init__(self, num_mel_bins: int = 80, stack: int = 2, norm: str = "global"):
        super().__init__()
        if norm not in ("global", "utterance"):
            raise ValueError(f"log-mel normalisation must be 'global' or 'utterance', not {norm!r}")
        self.num_mel_bins, self.stack, self.norm = num_mel_bins, stack, norm
        self.init_normaliser(num_mel_bins)

    @property
    def needs_fit(self) -> bool:
        return self.norm == "global" and not bool(self.fitted)

    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        """(B,) samples -> (B,) output frames, ceil(kaldi_num_frames / stack)."""
        return torch.div(kaldi_num_frames(num_samples) + self.stack - 1, self.stack, rounding_mode="floor")

    def fit(self, wavs: Iterable[torch.Tensor]) -> None:
        """Estimate the per-channel log-mel mean and standard deviation from (S,) 16 kHz waveforms."""
        self.fit_normaliser(log_mel_fbank(wav, self.num_mel_bins) for wav in wavs)

    def forward(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S) waveforms zero-padded after the (B,) ``wav_lengths`` -> (B, T, stack * num_mel_bins), (B,) frames."""
        self.check_statistics("the log-mel front end")
        stacked = []
        for wav, n in zip(wavs, wav_lengths.tolist(), strict=True):
            feats = self.normalise(log_mel_fbank(wav[:n], self.num_mel_bins), self.norm)
            feats = torch.cat([feats, feats[-1:].expand(-len(feats) % self.stack, -1)])
            stacked.append(feats.reshape(-1, self.stack * self.num_mel_bins))
        return torch.nn.utils.rnn.pad_sequence(stacked, batch_first=True), self.num_frames(wav_lengths)
