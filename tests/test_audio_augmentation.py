"""Augmentation of training windows: speed moves a tone by its factor, the equaliser and the noise stay in their ranges,
a perturbed window's text is the words of the span it covers, padding stays padding, and draws are keyed like the
windows."""

import numpy as np
import pytest

from modeling_vatt.audio_augmentation import WaveformAugmentation
from modeling_vatt.pretraining_pairs import LongFormPairDataset, LongFormPairSampler, LongFormRecordings, words_in_span
from tests.helpers import ENDS, STARTS

RATE = 8000


def tone(frequency: float, seconds: float = 2.0) -> np.ndarray:
    return np.sin(2 * np.pi * frequency * np.arange(int(seconds * RATE)) / RATE).astype(np.float32)


def peak_frequency(samples: np.ndarray) -> float:
    return float(np.argmax(np.abs(np.fft.rfft(samples)))) * RATE / len(samples)


@pytest.mark.parametrize("factor", [0.85, 1.1])
def test_speed_moves_a_tone_by_the_factor(factor):
    samples = tone(500.0)
    sped = WaveformAugmentation(speed=0.2).perturb(samples, round(len(samples) / factor), np.random.default_rng(0))
    assert peak_frequency(sped) == pytest.approx(500.0 * factor, abs=1.0)
    assert np.sqrt(np.mean(sped**2)) == pytest.approx(np.sqrt(0.5), rel=0.02)  # loudness kept


def test_disabled_augmentation_changes_nothing():
    augmentation = WaveformAugmentation()
    samples = tone(440.0)
    assert not augmentation.enabled
    np.testing.assert_array_equal(augmentation.perturb(samples, len(samples), np.random.default_rng(0)), samples)
    assert augmentation.draw_speed(np.random.default_rng(0)) == 1.0


def test_equaliser_gains_stay_within_their_range():
    samples = np.random.default_rng(1).standard_normal(4 * RATE).astype(np.float32)
    before = np.abs(np.fft.rfft(samples)) ** 2
    for seed in range(5):
        after = np.abs(
            np.fft.rfft(WaveformAugmentation(eq_db=6).perturb(samples, len(samples), np.random.default_rng(seed)))
        )
        gains_db = 10 * np.log10(after**2 / before)
        assert np.abs(gains_db).max() <= 6 + 1e-6
        assert np.abs(gains_db).max() > 1  # it does reshape the spectrum


def test_noise_is_mixed_at_the_drawn_snr():
    samples = tone(300.0, seconds=4.0)
    noisy = WaveformAugmentation(snr_db=(20, 20)).perturb(samples, len(samples), np.random.default_rng(2))
    noise = noisy - samples
    assert 10 * np.log10(np.mean(samples**2) / np.mean(noise**2)) == pytest.approx(20, abs=0.3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"speed": 1.0},
        {"speed": -0.1},
        {"eq_db": -1},
        {"eq_db": 3, "eq_bands": 1},
        {"snr_db": (30, 10)},
        {"speed": 0.1, "probability": 0.0},
        {"speed": 0.1, "probability": 1.5},
    ],
)
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        WaveformAugmentation(**kwargs)


def test_perturbed_window_has_the_words_of_the_span_it_covers(recordings):
    sampler = LongFormPairSampler(window_samples=96000, sampling_rate=48000)  # 2 s
    split = LongFormRecordings(recordings, 48000)
    augmentation = WaveformAugmentation(speed=0.3, eq_db=6, snr_db=(20, 40))
    dataset = LongFormPairDataset(split, sampler, seed=3, augmentation=augmentation)
    plain = LongFormPairDataset(split, sampler, seed=3, augmentation=WaveformAugmentation())
    spans = set()
    for draw in range(5):  # the 10 s recording
        pair = dataset[(0, draw)]
        speed = augmentation.draw_speed(np.random.default_rng([3, 0, draw, 1]))
        span = round(96000 * speed) / 48000
        assert pair.input_values.shape == (96000,) and pair.audio_attention_mask.sum() == 96000
        assert pair.end - pair.start == pytest.approx(span)
        words = words_in_span(STARTS, ENDS, pair.start, pair.end)
        assert pair.texts == [" ".join(f"w{index}" for index in words)]
        np.testing.assert_array_equal(pair.input_values, dataset[(0, draw)].input_values)  # keyed, deterministic
        spans.add(round(span, 3))
        # Without augmentation the dataset draws exactly the windows it drew before augmentation existed.
        unaugmented = LongFormPairDataset(split, sampler, seed=3)[(0, draw)]
        np.testing.assert_array_equal(plain[(0, draw)].input_values, unaugmented.input_values)
    assert len(spans) > 1


def test_a_share_of_the_windows_stays_clean(recordings):
    sampler = LongFormPairSampler(window_samples=96000, sampling_rate=48000)
    split = LongFormRecordings(recordings, 48000)
    half = WaveformAugmentation(speed=0.3, snr_db=(20, 40), probability=0.5)
    dataset = LongFormPairDataset(split, sampler, seed=3, augmentation=half)
    clean = LongFormPairDataset(split, sampler, seed=3)
    applied = [half.applies(np.random.default_rng([3, epoch, 0, 1])) for epoch in range(40)]
    assert 10 < sum(applied) < 30
    for epoch, perturbed in enumerate(applied[:8]):
        pair, plain = dataset[(epoch, 0)], clean[(epoch, 0)]
        assert np.array_equal(pair.input_values, plain.input_values) is not perturbed
        assert (pair.start, pair.end, pair.texts) == (plain.start, plain.end, plain.texts) or perturbed


def test_padding_of_a_short_recording_is_resampled_with_it(recordings):
    sampler = LongFormPairSampler(window_samples=96000, sampling_rate=48000)
    augmentation = WaveformAugmentation(speed=0.3)
    dataset = LongFormPairDataset(LongFormRecordings(recordings, 48000), sampler, seed=3, augmentation=augmentation)
    short = dataset[(0, 5)]  # 0.5 s = 24,000 samples at 48 kHz
    speed = augmentation.draw_speed(np.random.default_rng([3, 0, 5, 1]))
    real = int(short.audio_attention_mask.sum())
    assert real == round(24000 * 96000 / round(96000 * speed))
    assert short.audio_attention_mask[:real].all() and not short.input_values[real:].any()
    assert short.texts == ["w1 w2"]
