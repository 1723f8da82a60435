"""Mockingjay's features, as S3PRL's ``OnlinePreprocessor`` (and its builder's level normalisation) compute them.

One utterance at a time: the waveform is scaled to ``target_level`` dB RMS; STFT with a periodic Hann
window of ``win_ms`` (400 samples), hop ``hop_ms`` (160), ``n_fft = 2 (n_freq - 1)``, ``center=True``
with reflection padding, so ``1 + S // 160`` frames; power spectrum (``linear``); ``n_mels`` (80) HTK
mel bands (``mel``: torchaudio ``MelScale``, no filter normalisation) or ``n_mfcc`` orthonormal DCT
coefficients of ``log(x + 1e-6)`` over 128 HTK mel bands (``mfcc``, torchaudio's MFCC defaults).
Then, for the input and the target features each as configured: ``log(x + 1e-10)``, deltas, and
per-utterance mean and (unbiased) standard deviation normalisation over time (``+ 1e-10``).
"""
from __future__ import annotations

import warnings

import torch
import torchaudio.functional as AF
from torch import nn

from corpora.audio import SAMPLE_RATE

from .config import MockingjayConfig


class MockingjayFeatures(nn.Module):
    """S3PRL's ``OnlinePreprocessor`` (and the builder's dB normalisation) for one utterance at a time.

    Holds no parameters; the window and filter banks are non-persistent buffers (they follow
    ``.to(device)`` but are not part of the state dict).
    """

    MFCC_MELS = 128  # torchaudio's MFCC default, which S3PRL does not override
    LOG_EPS = 1e-10

    def __init__(self, config: MockingjayConfig):
        super().__init__()
        self.config = config
        c = config
        self.register_buffer("window", torch.hann_window(c.win_length), persistent=False)
        fb = AF.melscale_fbanks(c.n_freq, 0.0, SAMPLE_RATE / 2, c.n_mels, SAMPLE_RATE, None, "htk")
        self.register_buffer("mel_fb", fb, persistent=False)
        if "mfcc" in (c.input_feat_type, c.target_feat_type):
            with warnings.catch_warnings():  # 128 bands over 201 bins leave some empty: S3PRL's MFCC, on purpose
                warnings.simplefilter("ignore", UserWarning)
                mfcc_fb = AF.melscale_fbanks(
                    c.n_fft // 2 + 1, 0.0, SAMPLE_RATE / 2, self.MFCC_MELS, SAMPLE_RATE, None, "htk"
                )
            self.register_buffer("mfcc_fb", mfcc_fb, persistent=False)
            self.register_buffer("dct", AF.create_dct(c.n_mfcc, self.MFCC_MELS, "ortho"), persistent=False)

    def min_samples(self) -> int:
        """Shortest input: reflection padding of n_fft // 2 needs more samples than that."""
        return self.config.n_fft // 2 + 1

    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        """Frames of a centred STFT: ``1 + S // hop``."""
        return 1 + num_samples // self.config.hop_length

    def normalize_level(self, wav: torch.Tensor) -> torch.Tensor:
        """Scale (S,) to ``target_level`` dB RMS (S3PRL's ``_normalize_wav_decibel``)."""
        rms = wav.pow(2).mean().pow(0.5)
        return wav * ((10 ** (self.config.target_level / 20)) / (rms + 1e-10))

    def _select(self, base: dict[str, torch.Tensor], which: str) -> torch.Tensor:
        c = self.config
        feat = base[getattr(c, f"{which}_feat_type")]  # (D, T)
        if getattr(c, f"{which}_log"):
            feat = (feat + self.LOG_EPS).log()
        feats = [feat]
        for _ in range(getattr(c, f"{which}_delta")):
            feats.append(AF.compute_deltas(feats[-1]))
        feat = torch.cat(feats, dim=0)
        if getattr(c, f"{which}_cmvn"):
            feat = (feat - feat.mean(dim=-1, keepdim=True)) / (feat.std(dim=-1, keepdim=True) + self.LOG_EPS)
        return feat.T.contiguous()  # (T, D)

    def forward(self, wav: torch.Tensor, with_target: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One (S,) waveform -> (T, D_in) input features and, if asked, (T, D_target) target features.

        T = 1 + S // hop. Requires S > n_fft // 2.
        """
        c = self.config
        wav = self.normalize_level(wav.float())
        spec = torch.stft(
            wav,
            n_fft=c.n_fft,
            hop_length=c.hop_length,
            win_length=c.win_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        linear = spec.abs().pow(2)  # (n_freq, T) power spectrum
        wanted = {c.input_feat_type} | ({c.target_feat_type} if with_target else set())
        base: dict[str, torch.Tensor] = {"linear": linear}
        if "mel" in wanted:
            base["mel"] = torch.matmul(linear.T, self.mel_fb).T
        if "mfcc" in wanted:
            mel = torch.matmul(linear.T, self.mfcc_fb).T
            base["mfcc"] = torch.matmul((mel + 1e-6).log().T, self.dct).T
        inp = self._select(base, "input")
        tgt = self._select(base, "target") if with_target else None
        return inp, tgt
