"""The FBANK baseline: 80 log-mel filterbanks + deltas + delta-deltas (240 dims), one layer.

Two variants, by how the features are normalised:
    ``fbank`` (``cmvn="utterance"``): S3PRL's recipe, each utterance to zero mean and unit variance.
        Faithful to SUPERB, and the reason its FBANK keyword-spotting accuracy is at chance:
        mean pooling of per-utterance-normalised features is the same vector for every clip.
    ``fbank_global`` (``cmvn="global"``): one mean and standard deviation per dimension, estimated
        on the task's training audio (:meth:`FbankUpstream.fit`, :class:`upstream.frontend.LogMelNormaliser`)
        and stored in the checkpoint.
    ``fbank_raw`` (``cmvn="none"``): unnormalised, as S3PRL's ``fbank_no_cmvn`` config.
"""
from __future__ import annotations

from typing import Iterable

import torch

from ..base import Upstream, UpstreamOutput
from ..frontend import HOP, Deltas, LogMelNormaliser, kaldi_num_frames, log_mel_fbank, utterance_cmvn

CMVN_MODES = ("utterance", "global", "none")


class FbankUpstream(Upstream, LogMelNormaliser):
    """Filterbank features as a one-layer upstream.

    Args:
        num_mel_bins: log-mel channels.
        delta_order: orders of deltas appended (2: 3 x ``num_mel_bins`` dims).
        cmvn: ``utterance``, ``global`` (statistics from :meth:`fit` or a checkpoint) or ``none``.
    """

    downsample_rate = HOP
    num_layers = 1

    def __init__(self, num_mel_bins: int = 80, delta_order: int = 2, cmvn: str = "utterance"):
        super().__init__()
        if cmvn not in CMVN_MODES:
            raise ValueError(f"unknown cmvn mode {cmvn!r}; choose from {CMVN_MODES}")
        self.num_mel_bins, self.delta_order, self.cmvn = num_mel_bins, delta_order, cmvn
        self.name = {"utterance": "fbank", "global": "fbank_global", "none": "fbank_raw"}[cmvn]
        self.hidden_size = num_mel_bins * (delta_order + 1)
        self.deltas = Deltas(delta_order)
        self.init_normaliser(self.hidden_size, fitted=cmvn != "global")

    def settings(self) -> dict:
        return {"num_mel_bins": self.num_mel_bins, "delta_order": self.delta_order, "cmvn": self.cmvn}

    @property
    def needs_fit(self) -> bool:
        return not bool(self.fitted)

    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        return kaldi_num_frames(num_samples)

    def _features(self, wav: torch.Tensor) -> torch.Tensor:
        """One (S,) waveform -> (T, hidden_size) unnormalised features."""
        return self.deltas(log_mel_fbank(wav, self.num_mel_bins))

    def fit(self, wavs: Iterable[torch.Tensor]) -> None:
        """Estimate the global mean and standard deviation from (S,) waveforms (``cmvn="global"``)."""
        self.fit_normaliser(self._features(wav) for wav in wavs)

    def forward(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> UpstreamOutput:
        self.check_statistics("fbank_global")
        if int(wav_lengths.min()) < 400:
            raise ValueError(f"an utterance is shorter than one 25 ms frame ({int(wav_lengths.min())} samples)")
        feats = []
        for wav, n in zip(wavs, wav_lengths.tolist(), strict=True):
            f = self._features(wav[:n])
            if self.cmvn == "utterance":
                f = utterance_cmvn(f)
            elif self.cmvn == "global":
                f = self.normalise(f)
            feats.append(f)
        padded, lengths = self.pad_frames(feats)
        return UpstreamOutput([padded], lengths)
