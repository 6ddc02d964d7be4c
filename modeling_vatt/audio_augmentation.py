"""Random perturbations of training windows, so that a model trained on a few synthetic voices hears past them.

`WaveformAugmentation` changes training windows drawn by `LongFormPairDataset` in three ways, each off by default;
with `probability` below 1 only that share of the windows is perturbed and the rest stay clean:

- **speed**: the window covers `factor` times its length of the recording, `factor` drawn uniformly from
  `[1 - speed, 1 + speed]`, and is resampled to the window length. Tempo, pitch and formants move together (speed
  perturbation, as in speech recognition training), and the window's text is the words of the span it covers.
- **equaliser**: a random smooth gain curve, drawn uniformly within `±eq_db` decibels at `eq_bands` evenly spaced
  frequencies from 0 Hz to the Nyquist frequency and interpolated linearly (in decibels) between them.
- **noise**: white noise at a signal-to-noise ratio drawn uniformly from `snr_db = (low, high)` decibels, measured
  against the window's real (unpadded) samples.

Resampling and equalising share one real FFT of the window (band-limited, no dependency beyond NumPy). The draws come
from the generator the caller passes, so a dataset keyed by `(epoch, draw)` stays deterministic and resumable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .pretraining_pairs import LongFormPair


@dataclass(frozen=True)
class WaveformAugmentation:
    """Speed, equaliser and noise perturbations of a training window (see the module docstring)."""

    speed: float = 0.0
    eq_db: float = 0.0
    eq_bands: int = 8
    snr_db: tuple[float, float] | None = None
    probability: float = 1.0

    def __post_init__(self):
        if not 0.0 < self.probability <= 1.0:
            raise ValueError(f"`probability` is the share of perturbed windows, in (0, 1], got {self.probability}.")
        if not 0.0 <= self.speed < 1.0:
            raise ValueError(f"`speed` is the largest relative change of speed, in [0, 1), got {self.speed}.")
        if self.eq_db < 0 or self.eq_bands < 2:
            raise ValueError(f"`eq_db` must be >= 0 and `eq_bands` >= 2, got {self.eq_db} and {self.eq_bands}.")
        if self.snr_db is not None and (len(self.snr_db) != 2 or self.snr_db[0] > self.snr_db[1]):
            raise ValueError(f"`snr_db` must be a (low, high) range in decibels, got {self.snr_db}.")

    @property
    def enabled(self) -> bool:
        return self.speed > 0 or self.eq_db > 0 or self.snr_db is not None

    def applies(self, rng: np.random.Generator) -> bool:
        """Whether the next window is perturbed (draws from `rng` only when `probability` is below 1)."""
        return self.probability >= 1.0 or bool(rng.random() < self.probability)

    def draw_speed(self, rng: np.random.Generator) -> float:
        """The factor by which the next window is sped up (> 1) or slowed down (< 1)."""
        return float(rng.uniform(1 - self.speed, 1 + self.speed)) if self.speed > 0 else 1.0

    def perturb(self, samples: np.ndarray, num_samples: int, rng: np.random.Generator) -> np.ndarray:
        """Resamples the mono float `samples` to `num_samples`, with a random equaliser and noise when enabled."""
        samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim != 1 or len(samples) == 0 or num_samples <= 0:
            raise ValueError(f"Expected non-empty mono samples and a positive length, got {samples.shape}.")
        if num_samples != len(samples) or self.eq_db > 0:
            spectrum = np.fft.rfft(samples.astype(np.float64))
            num_bins = num_samples // 2 + 1
            spectrum = np.pad(spectrum[:num_bins], (0, max(num_bins - len(spectrum), 0)))
            if self.eq_db > 0:
                gains_db = rng.uniform(-self.eq_db, self.eq_db, self.eq_bands)
                curve_db = np.interp(np.linspace(0, 1, num_bins), np.linspace(0, 1, self.eq_bands), gains_db)
                spectrum = spectrum * 10 ** (curve_db / 20)
            samples = (np.fft.irfft(spectrum, n=num_samples) * (num_samples / len(samples))).astype(np.float32)
        if self.snr_db is not None:
            power = float(np.mean(np.square(samples, dtype=np.float64)))
            snr_db = rng.uniform(*self.snr_db)
            noise = rng.standard_normal(num_samples) * np.sqrt(power / 10 ** (snr_db / 10))
            samples = samples + noise.astype(np.float32)
        return samples

    def __call__(self, pair: LongFormPair, window_samples: int, rng: np.random.Generator) -> LongFormPair:
        """Fits `pair`, drawn over `window_samples * speed` samples, back into `window_samples`, perturbed. Its real
        samples are resampled by the same factor as the whole span, so padding stays padding."""
        span = len(pair.input_values)
        real = int(pair.audio_attention_mask.sum())
        real_out = min(max(round(real * window_samples / span), 1), window_samples)
        values = np.zeros(window_samples, dtype=np.float32)
        values[:real_out] = self.perturb(pair.input_values[:real], real_out, rng)
        mask = np.zeros(window_samples, dtype=pair.audio_attention_mask.dtype)
        mask[:real_out] = 1
        return LongFormPair(values, mask, pair.texts, pair.start, pair.end)
