"""On-the-fly augmentation of pre-training audio: band-reject filtering, reverberation, additive noise.

The transforms that helped most in CPC with WavAugment (Kharitonov et al., 2020, arXiv 2007.00991)
when unlabelled audio is scarce, minus pitch shift, each applied to an utterance with its own
probability, in this order:

- ``bandreject``: torchaudio's ``bandreject_biquad`` at a centre frequency drawn log-uniformly in
  ``bandreject_hz``, with Q drawn in ``bandreject_q``;
- ``reverb``: convolution (torchaudio's ``fftconvolve``) with a synthetic room impulse response, a
  unit direct path followed by Gaussian noise of unit energy decaying by 60 dB over an RT60 drawn in
  ``rt60`` (direct-to-reverberant ratio 0 dB), the result scaled back to the input's energy;
- ``noise``: Gaussian noise with power spectrum 1/f^beta (beta drawn in ``noise_colour``: 0 white,
  1 pink, 2 brown; torchaudio has no coloured-noise generator, so the spectrum is shaped with
  ``torch.fft``) added by torchaudio's ``add_noise`` at an SNR drawn in ``snr_db``.

No transform changes an utterance's length or timing, so targets computed per frame on the clean
audio (HuBERT's k-means ids) stay aligned. Pitch shift is left out: torchaudio's ``pitch_shift``
resamples between ``int(16000 * 2 ** (n / 12))`` Hz and 16 kHz, whose common divisor is usually
small, and took 0.16 to 20 s per 10-s utterance on one CPU thread (measured for n = 1.5, 0.37, -3, 2).

Each utterance's draws come from its own ``torch.Generator`` seeded from (``seed``, update step,
utterance index), never from torch's global generator: the model's masking and dropout see the same
random stream with augmentation on or off, an utterance is augmented the same way whatever batch or
process it lands in, and a resumed run repeats exactly what an uninterrupted run does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np
import torch
import torchaudio.functional as AF

from core.config import ConfigError

TRANSFORMS = ("bandreject", "reverb", "noise")
"""The transforms, in the order they are applied."""


@dataclass
class AugmentConfig:
    """The ``augment`` section of pre-training's config: which transforms, how often, how strong.

    Every range is ``[low, high]``, drawn uniformly (``bandreject_hz`` on a log scale) per utterance.
    """

    enabled: bool = False
    """Off by default: then nothing below is used and the section is left out of ``config.yaml``."""
    seed: int = 0
    """With the update step and the utterance's index, seeds each utterance's draws."""
    bandreject_prob: float = 0.3
    bandreject_hz: list[float] = field(default_factory=lambda: [100.0, 6000.0])
    """Centre frequency of the rejected band (Hz, below 8000)."""
    bandreject_q: list[float] = field(default_factory=lambda: [0.7, 3.0])
    """Quality factor of the band-reject biquad (larger: narrower band)."""
    reverb_prob: float = 0.3
    rt60: list[float] = field(default_factory=lambda: [0.2, 0.8])
    """Reverberation time of the synthetic impulse response (seconds)."""
    noise_prob: float = 0.5
    snr_db: list[float] = field(default_factory=lambda: [5.0, 20.0])
    noise_colour: list[float] = field(default_factory=lambda: [0.0, 2.0])
    """Exponent beta of the noise's power spectrum 1/f^beta."""


def check_augment_config(cfg: AugmentConfig, sample_rate: int = 16000) -> None:
    """Raise :class:`core.config.ConfigError` naming the first ``augment.*`` value out of its bounds."""
    bounds = {"bandreject_hz": (1e-3, sample_rate / 2), "bandreject_q": (1e-3, math.inf), "rt60": (1e-3, 10.0),
              "snr_db": (-math.inf, math.inf), "noise_colour": (-math.inf, math.inf)}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if f.name.endswith("_prob") and not 0.0 <= value <= 1.0:
            raise ConfigError(f"config key 'augment.{f.name}': a probability in [0, 1], not {value}")
        if f.name in bounds:
            lo, hi = bounds[f.name]
            if len(value) != 2 or not lo <= value[0] <= value[1] < hi:
                raise ConfigError(f"config key 'augment.{f.name}': expected [low, high] with "
                                  f"{lo:g} <= low <= high < {hi:g}, got {value}")
    if cfg.seed < 0:
        raise ConfigError(f"config key 'augment.seed': expected a non-negative integer, got {cfg.seed}")


def utterance_generator(seed: int, step: int, utterance: int) -> torch.Generator:
    """A CPU generator seeded from (seed, step, utterance), all non-negative, well mixed by NumPy's SeedSequence."""
    state = np.random.SeedSequence([seed, step, utterance]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def _fast_length(n: int) -> int:
    """The power of two >= n: FFTs of lengths with large prime factors are up to ten times slower."""
    return 1 << (n - 1).bit_length()


class Augmenter:
    """Applies :class:`AugmentConfig`'s transforms to training batches.

    Args:
        cfg: the settings (checked here: a bad value is a :class:`core.config.ConfigError`).
        sample_rate: of the waveforms.
    """

    def __init__(self, cfg: AugmentConfig, sample_rate: int = 16000):
        check_augment_config(cfg, sample_rate)
        self.cfg, self.sample_rate = cfg, sample_rate

    def __call__(self, wavs: torch.Tensor, lengths: torch.Tensor, utterances: torch.Tensor,
                 step: int) -> tuple[torch.Tensor, dict[str, int]]:
        """Augment a batch.

        Args:
            wavs: (B, S) float32 waveforms, zero-padded past ``lengths``.
            lengths: (B,) valid samples per utterance.
            utterances: (B,) the utterances' indices in the training set.
            step: the update this batch is for (0-based).

        Returns:
            A new (B, S) tensor, each utterance's first ``lengths[b]`` samples augmented and its
            padding still zero, and how many of the B utterances each transform changed.
        """
        out = wavs.clone()
        counts = dict.fromkeys(TRANSFORMS, 0)
        for b, (n, utterance) in enumerate(zip(lengths.tolist(), utterances.tolist(), strict=True)):
            out[b, :n], applied = self.utterance(wavs[b, :n], utterance_generator(self.cfg.seed, step, utterance))
            for name in applied:
                counts[name] += 1
        return out, counts

    def utterance(self, wav: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, list[str]]:
        """(N,) waveform -> (N,) augmented waveform and the names of the transforms applied, drawn from ``gen``."""
        cfg, applied = self.cfg, []
        x = wav[None]  # (1, N)
        if self._draw(gen) < cfg.bandreject_prob:
            lo, hi = (math.log(f) for f in cfg.bandreject_hz)
            x = AF.bandreject_biquad(x, self.sample_rate, math.exp(self._draw(gen, lo, hi)),
                                     self._draw(gen, *cfg.bandreject_q))
            applied.append("bandreject")
        if self._draw(gen) < cfg.reverb_prob:
            x = self._reverb(x, self._draw(gen, *cfg.rt60), gen)
            applied.append("reverb")
        if self._draw(gen) < cfg.noise_prob:
            noise = self._coloured_noise(x.shape[-1], self._draw(gen, *cfg.noise_colour), gen)
            x = AF.add_noise(x, noise[None], torch.tensor([self._draw(gen, *cfg.snr_db)]))
            applied.append("noise")
        return x[0], applied

    @staticmethod
    def _draw(gen: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
        """One number drawn uniformly in [lo, hi) from ``gen``."""
        return lo + (hi - lo) * torch.rand((), generator=gen).item()

    def _reverb(self, x: torch.Tensor, rt60: float, gen: torch.Generator) -> torch.Tensor:
        """(1, N) -> (1, N): ``x`` convolved with a synthetic impulse response, at ``x``'s energy."""
        size = max(2, round(rt60 * self.sample_rate))
        t = torch.arange(1, size) / self.sample_rate
        tail = torch.randn(size - 1, generator=gen) * torch.exp(-3 * math.log(10) * t / rt60)  # -60 dB at rt60
        rir = torch.cat([torch.ones(1), tail / tail.norm()])
        n = x.shape[-1]
        padded = torch.nn.functional.pad(x, (0, _fast_length(n + size - 1) - (n + size - 1)))  # full length: 2**k
        y = AF.fftconvolve(padded, rir[None])[..., :n]
        energy = y.norm()
        return y * (x.norm() / energy) if energy > 0 else x

    @staticmethod
    def _coloured_noise(n: int, beta: float, gen: torch.Generator) -> torch.Tensor:
        """(n,) Gaussian noise whose power falls as 1/f^beta (no DC), shaped at a power-of-two length."""
        size = _fast_length(n)
        spectrum = torch.fft.rfft(torch.randn(size, generator=gen))
        f = torch.arange(spectrum.shape[-1], dtype=torch.float32)
        spectrum[1:] *= f[1:] ** (-beta / 2)
        spectrum[0] = 0
        return torch.fft.irfft(spectrum, size)[:n]
