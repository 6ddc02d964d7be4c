"""Tests for VattFeatureExtractor and modeling_vatt.audio_utils.load_audio."""

import logging
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr
import torch

from modeling_vatt.audio_utils import load_audio
from modeling_vatt.feature_extraction_vatt import BLOCK_FRAMES, VattFeatureExtractor

SPEECH_DIR = Path(__file__).parent / "fixtures" / "speech"
PATCH = 128


@pytest.fixture
def fe():
    return VattFeatureExtractor()


def without_auto_map(config: dict) -> dict:
    """`register_for_auto_class` adds `auto_map` on save; it is not part of the settings under test."""
    return {key: value for key, value in config.items() if key != "auto_map"}


def noise(num_samples: int, seed: int = 0, scale: float = 0.3) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(num_samples)).astype(np.float32)


def test_output_layout_and_mask(fe):
    clips = [noise(1000), noise(300, seed=1)]
    out = fe(clips, sampling_rate=48000, return_tensors="pt")
    assert set(out) == {"input_values", "audio_attention_mask"}
    assert out["input_values"].dtype == torch.float32 and out["input_values"].shape == (2, 1024)
    assert out["audio_attention_mask"].tolist() == [[1] * 1000 + [0] * 24, [1] * 300 + [0] * 724]
    assert torch.equal(out["input_values"][0, :1000], torch.from_numpy(clips[0]))
    assert torch.equal(out["input_values"][1, 300:], torch.zeros(724))
    np_out = fe(clips, sampling_rate=48000, return_tensors="np")
    assert isinstance(np_out["input_values"], np.ndarray) and np_out["audio_attention_mask"].dtype == np.int32
    assert "audio_attention_mask" not in fe(clips, sampling_rate=48000, return_attention_mask=False)


def test_batched_equals_unbatched(fe):
    clips = [noise(5000), noise(2000, seed=1), noise(3333, seed=2)]
    batch = fe(clips, sampling_rate=48000)
    for row, clip in enumerate(clips):
        single = fe(clip, sampling_rate=48000)
        length = single["input_values"].shape[1]
        np.testing.assert_array_equal(batch["input_values"][row, :length], single["input_values"][0])
        np.testing.assert_array_equal(batch["audio_attention_mask"][row, :length], single["audio_attention_mask"][0])
        assert batch["audio_attention_mask"][row, length:].sum() == 0
    # Resampled batches too, and every accepted container gives the same result.
    resampled = fe(clips, sampling_rate=16000)["input_values"]
    np.testing.assert_array_equal(resampled[1, :6000], fe(clips[1], sampling_rate=16000)["input_values"][0, :6000])
    equal_length = np.stack([noise(1280, seed=s) for s in range(3)])
    reference = fe(list(equal_length), sampling_rate=48000)["input_values"]
    for container in (equal_length, torch.from_numpy(equal_length), [list(map(float, row)) for row in equal_length]):
        np.testing.assert_array_equal(fe(container, sampling_rate=48000)["input_values"], reference)
    np.testing.assert_array_equal(
        fe(list(map(float, equal_length[0])), sampling_rate=48000)["input_values"][0], reference[0]
    )


def test_padding_and_truncation(fe, caplog):
    clips = [noise(1000), noise(5000, seed=1)]
    longest = fe(clips, sampling_rate=48000)
    assert longest["input_values"].shape == (2, 5120)
    fixed = fe(clips, sampling_rate=48000, padding="max_length", max_length=8192)
    assert fixed["input_values"].shape == (2, 8192)
    assert fixed["audio_attention_mask"].sum(1).tolist() == [1000, 5000]

    with caplog.at_level(logging.WARNING):
        capped = fe(clips, sampling_rate=48000, max_length=2048)
    assert "truncated" in caplog.text and "crop=" in caplog.text
    assert capped["input_values"].shape == (2, 2048)
    np.testing.assert_array_equal(capped["input_values"][1], clips[1][:2048])
    assert capped["audio_attention_mask"].sum(1).tolist() == [1000, 2048]

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        fe(clips, sampling_rate=48000, max_length=8192)
        fe(clips, sampling_rate=48000, max_length=2048, crop="center")
    assert "truncated" not in caplog.text


def test_center_and_random_crop(fe):
    clip = np.arange(10_000, dtype=np.float32)
    center = fe(clip, sampling_rate=48000, max_length=1024, crop="center")["input_values"][0]
    np.testing.assert_array_equal(center, clip[4488 : 4488 + 1024])

    starts = set()
    for seed in range(20):
        window = fe(clip, sampling_rate=48000, max_length=1024, crop="random", generator=seed)["input_values"][0]
        start = int(window[0])
        np.testing.assert_array_equal(window, clip[start : start + 1024])
        starts.add(start)
    assert len(starts) > 10 and max(starts) <= 10_000 - 1024
    again = fe(clip, sampling_rate=48000, max_length=1024, crop="random", generator=np.random.default_rng(7))
    np.testing.assert_array_equal(
        again["input_values"], fe(clip, 48000, max_length=1024, crop="random", generator=7)["input_values"]
    )

    # Crops of resampled audio are windows of the resampled signal.
    resampled_full = fe(clip / 10_000, sampling_rate=16000)["input_values"][0]
    cropped = fe(clip / 10_000, sampling_rate=16000, max_length=2048, crop="center")["input_values"][0]
    np.testing.assert_array_equal(cropped, resampled_full[(30_000 - 2048) // 2 :][:2048])


@pytest.mark.parametrize(
    "sampling_rate, frequency", [(16000, 440.0), (16000, 5000.0), (44100, 3000.0), (8000, 1000.0)]
)
def test_resampling_matches_analytic_sine(fe, sampling_rate, frequency):
    # A 0.5-amplitude sine resampled with soxr HQ matches the analytic sine at 48 kHz within 1e-6 absolute
    # (-114 dB re the amplitude; measured <= 3.6e-7, while soxr "LQ" gives >= 1.3e-6) everywhere except the first
    # and last 25 ms, where the resampling filter sees the clip's edges.
    seconds = 2
    source = 0.5 * np.sin(2 * np.pi * frequency * np.arange(seconds * sampling_rate) / sampling_rate)
    values = fe(source.astype(np.float32), sampling_rate=sampling_rate)["input_values"][0]
    expected = 0.5 * np.sin(2 * np.pi * frequency * np.arange(seconds * 48000) / 48000)
    edge = 1200
    assert np.abs(values[edge : seconds * 48000 - edge] - expected[edge:-edge]).max() < 1e-6


def test_streamed_resampling_equals_one_shot(fe):
    # Longer than several processing blocks, with an awkward rate ratio.
    clip = noise(3 * BLOCK_FRAMES + 12_345)
    out = fe(clip, sampling_rate=44100)
    expected = soxr.resample(clip, 44100, 48000, quality="HQ")
    assert out["audio_attention_mask"].sum() == len(expected)
    np.testing.assert_array_equal(out["input_values"][0, : len(expected)], expected)


def test_integer_pcm_matches_float(fe):
    rng = np.random.default_rng(0)
    pcm16 = rng.integers(-32768, 32768, 4000).astype(np.int16)
    as_float = fe(pcm16.astype(np.float32) / 32768, sampling_rate=16000)["input_values"]
    np.testing.assert_array_equal(fe(pcm16, sampling_rate=16000)["input_values"], as_float)
    np.testing.assert_array_equal(fe(torch.from_numpy(pcm16), sampling_rate=16000)["input_values"], as_float)
    pcm32 = pcm16.astype(np.int32) << 16
    np.testing.assert_array_equal(fe(pcm32, sampling_rate=16000)["input_values"], as_float)
    pcm8 = np.array([0, 64, 128, 192, 255] * 100, dtype=np.uint8)
    np.testing.assert_array_equal(fe(pcm8, sampling_rate=48000)["input_values"][0, :5], [-1, -0.5, 0, 0.5, 127 / 128])


def test_stereo_mixdown(fe):
    stereo = np.stack([noise(3000), noise(3000, seed=1)])
    mono = stereo.mean(axis=0)
    for layout in (stereo, stereo.T, np.ascontiguousarray(stereo.T), torch.from_numpy(stereo)):
        values = fe([layout], sampling_rate=48000)["input_values"][0, :3000]
        np.testing.assert_allclose(values, mono, atol=1e-7)
    resampled = fe([stereo.T], sampling_rate=16000)["input_values"][0]
    np.testing.assert_allclose(resampled, fe(mono, sampling_rate=16000)["input_values"][0], atol=1e-6)
    int_stereo = (stereo * 32767).astype(np.int16)
    np.testing.assert_allclose(
        fe([int_stereo], sampling_rate=48000)["input_values"][0, :3000], int_stereo.mean(axis=0) / 32768, atol=1e-7
    )


def test_loop_versus_zero_padding(fe):
    short, long = noise(1000), noise(4000, seed=1)
    zeros = fe([short, long], sampling_rate=48000)
    loop = fe([short, long], sampling_rate=48000, pad_mode="loop")
    np.testing.assert_array_equal(zeros["input_values"][0, 1000:], 0)
    assert zeros["audio_attention_mask"][0].sum() == 1000
    # The original tiled short clips over the whole window and treated them as real audio.
    np.testing.assert_array_equal(loop["input_values"][0], np.tile(short, 5)[:4096])
    np.testing.assert_array_equal(loop["input_values"][1], np.tile(long, 2)[:4096])
    assert loop["audio_attention_mask"].all()
    window = fe(short, sampling_rate=48000, padding="max_length", max_length=153_600, pad_mode="loop")
    np.testing.assert_array_equal(window["input_values"][0], np.tile(short, 154)[:153_600])
    looping_extractor = VattFeatureExtractor(pad_mode="loop")
    np.testing.assert_array_equal(
        looping_extractor([short, long], sampling_rate=48000)["input_values"], loop["input_values"]
    )


def test_normalization_is_optional_and_ignores_padding(fe):
    clips = [3 + noise(2000, scale=2.0), noise(500, seed=1)]
    raw = fe(clips, sampling_rate=48000)["input_values"]
    np.testing.assert_array_equal(raw[0, :2000], clips[0])
    normalized = fe(clips, sampling_rate=48000, do_normalize=True)["input_values"]
    for row, length in enumerate((2000, 500)):
        assert abs(normalized[row, :length].mean()) < 1e-5
        assert abs(normalized[row, :length].std() - 1) < 1e-4
    np.testing.assert_array_equal(normalized[1, 500:], 0)
    looped = fe(clips, sampling_rate=48000, do_normalize=True, pad_mode="loop")["input_values"]
    np.testing.assert_array_equal(looped[1], np.tile(normalized[1, :500], 5)[:2048])


def test_memory_stays_at_one_output_copy():
    # 5 minutes of 16 kHz stereo int16 (4.8 M frames) become 14.4 M mono float32 samples at 48 kHz (55 MiB). Bound
    # checked with tracemalloc: peak < output (float32 values + int32 mask, or values alone) + 12 MiB, the per-block
    # temporaries (about 7 MiB, independent of the length). One more float32 copy of the mono input (18 MiB) or of
    # the output would break it. A 1-hour 48 kHz clip (173 M samples) therefore needs about 1.3 GiB with the mask.
    extractor = VattFeatureExtractor()
    frames = 16000 * 300
    stereo = np.random.default_rng(0).integers(-2000, 2000, (frames, 2)).astype(np.int16)
    values_bytes = 48000 * 300 * 4
    for with_mask in (True, False):
        tracemalloc.start()
        out = extractor([stereo], sampling_rate=16000, return_attention_mask=with_mask, return_tensors="pt")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert out["input_values"].shape == (1, 48000 * 300)
        assert peak < values_bytes * (2 if with_mask else 1) + 12 * 2**20, peak / 2**20
        del out


def test_pipeline_calling_convention(fe):
    # What `pipeline("zero-shot-audio-classification")` does with a feature extractor.
    out = fe([noise(48000)], sampling_rate=fe.sampling_rate, return_tensors="pt").to(torch.float16)
    assert out["input_values"].dtype == torch.float16 and out["input_values"].shape == (1, 48000)
    assert out["audio_attention_mask"].dtype == torch.int32


def test_missing_sampling_rate_warns(fe, caplog):
    with caplog.at_level(logging.WARNING):
        out = fe(noise(1000))
    assert "sampling_rate" in caplog.text
    assert out["input_values"].shape == (1, 1024)


@pytest.mark.parametrize(
    "audio, error, message",
    [
        (np.zeros(0, np.float32), ValueError, "empty"),
        ([], ValueError, "empty batch"),
        ([noise(1000), np.zeros(0)], ValueError, "item 1 is empty"),
        (np.array([0.1] * 500 + [np.nan] + [0.1] * 500), ValueError, "NaN or infinite"),
        ([noise(1000), np.array([np.inf] * 1000)], ValueError, "NaN or infinite"),
        (np.zeros((2, 2, 1000), np.float32), ValueError, "3-D"),
        ([np.zeros((2, 2, 1000), np.float32)], ValueError, "3 dimensions"),
        (np.array([noise(1000), noise(900)], dtype=object), TypeError, "dtype object"),
        ([np.array(["a", "b"])], TypeError, "dtype <U1"),
        ("speech.wav", TypeError, "Decode files first"),
        (np.zeros(1000, np.complex64), TypeError, "complex64"),
        (np.zeros(1000, np.int64), TypeError, "not a PCM format"),
        (noise(100), ValueError, "shorter than one patch"),
        (np.zeros((2, 1000), np.float32).T, ValueError, "shorter than one patch"),
        ([np.zeros((300, 300), np.float32)], ValueError, "channel axis"),
        (np.ones(1000, np.bool_), TypeError, "dtype bool"),
        (np.full(1000, 1e300), ValueError, "beyond the float32 range"),
        ([noise(1000), np.array([0.5] * 999 + [-1e39])], ValueError, "item 1 has samples beyond the float32"),
    ],
)
def test_bad_audio(fe, audio, error, message):
    with pytest.raises(error, match=message):
        fe(audio, sampling_rate=48000)


@pytest.mark.parametrize("sampling_rate", [0, -16000, float("nan"), float("inf"), "16k", True])
def test_bad_sampling_rate(fe, sampling_rate):
    with pytest.raises(ValueError, match="positive number"):
        fe(noise(1000), sampling_rate=sampling_rate)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_length": 1000}, "multiple of patch_size"),
        ({"max_length": 0}, "multiple of patch_size"),
        ({"crop": "random"}, "needs `max_length`"),
        ({"crop": "left", "max_length": 1024}, "`crop` must be one of"),
        ({"pad_mode": "reflect"}, "`pad_mode` must be one of"),
        ({"padding": False}, "always padded"),
        ({"padding": "max_length"}, "needs `max_length`"),
    ],
)
def test_bad_options(fe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fe(noise(1000), sampling_rate=48000, **kwargs)


def test_resampling_overflow_is_an_error(fe):
    # Finite float32 samples at the edge of the range overshoot into inf when resampled.
    loud = np.where(np.arange(16000) % 7 < 3, 3.3e38, -3.3e38).astype(np.float32)
    assert np.isfinite(fe(loud, sampling_rate=48000)["input_values"]).all()
    with pytest.raises(ValueError, match="item 0 overflows float32 when resampled"):
        fe(loud, sampling_rate=16000)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"return_attention_mask": "no"}, "`return_attention_mask` must be True or False"),
        ({"do_normalize": 1}, "`do_normalize` must be True or False"),
        ({"truncation": "yes"}, "`truncation` must be True or False"),
        ({"pad_to_multiple_of": 0}, "`pad_to_multiple_of` must be a positive integer"),
        ({"sampling_rate": 0.001}, "times away from"),
        ({"sampling_rate": 48000 * 65}, "times away from"),
        ({"padding": "max_length", "max_length": PATCH * 2**40}, "GiB"),
    ],
)
def test_nonsense_options(fe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fe(noise(100_000), **{"sampling_rate": 48000, **kwargs})


def test_truncation_and_pad_to_multiple_of(fe):
    clips = [noise(1000), noise(5000, seed=1)]
    with pytest.raises(ValueError, match=r"Audio item\(s\) \[1\] are longer than max_length=2048"):
        fe(clips, sampling_rate=48000, max_length=2048, truncation=False)
    kept = fe(clips, sampling_rate=48000, max_length=8192, truncation=False)
    assert kept["input_values"].shape == (2, 5120)
    cut = fe(clips, sampling_rate=48000, max_length=2048, truncation=True, crop="center")
    np.testing.assert_array_equal(cut["input_values"][1], clips[1][1476 : 1476 + 2048])
    assert fe(clips, sampling_rate=48000, pad_to_multiple_of=3)["input_values"].shape == (2, 5376)  # 3 * 128 * 14


def test_pad_follows_call(fe):
    # A collator padding extracted features gets what `__call__` returns: patch-aligned rows, `audio_attention_mask`.
    clips = [noise(1000), noise(300, seed=1)]
    padded = fe.pad({"input_values": clips}, return_tensors="np")
    called = fe(clips, sampling_rate=48000)
    assert set(padded) == {"input_values", "audio_attention_mask"}
    np.testing.assert_array_equal(padded["input_values"], called["input_values"])
    np.testing.assert_array_equal(padded["audio_attention_mask"], called["audio_attention_mask"])
    # Rows of earlier batches (list of dicts) keep their own masks and are padded further.
    rows = [{key: value[row] for key, value in called.items()} for row in range(2)] + [
        {
            "input_values": noise(1500, seed=2),
            "audio_attention_mask": np.ones(1500, np.int32),
        }
    ]
    collated = fe.pad(rows, return_tensors="pt")
    assert collated["input_values"].shape == (3, 1536)
    assert collated["audio_attention_mask"].sum(1).tolist() == [1000, 300, 1500]
    assert fe.pad({"input_values": clips}, pad_to_multiple_of=3, return_tensors="np")["input_values"].shape == (
        2,
        1152,
    )
    with pytest.raises(ValueError, match="multiple of patch_size"):
        fe.pad({"input_values": clips}, padding="max_length", max_length=1000)
    with pytest.raises(ValueError, match="pass the audio mask as `audio_attention_mask`"):
        fe.pad({"input_values": clips, "attention_mask": [np.ones(1000), np.ones(300)]})


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="pad_mode"):
        VattFeatureExtractor(pad_mode="edge")
    with pytest.raises(ValueError, match="patch_size"):
        VattFeatureExtractor(patch_size=0)
    with pytest.raises(ValueError, match="sampling_rate"):
        VattFeatureExtractor(sampling_rate=-1)
    with pytest.raises(ValueError, match="`return_attention_mask` must be True or False"):
        VattFeatureExtractor(return_attention_mask="no")
    with pytest.raises(ValueError, match="`do_normalize` must be True or False"):
        VattFeatureExtractor(do_normalize="yes")


def test_save_and_load(tmp_path):
    extractor = VattFeatureExtractor(sampling_rate=16000, patch_size=64, pad_mode="loop", do_normalize=True)
    extractor.save_pretrained(tmp_path)
    assert (tmp_path / "preprocessor_config.json").is_file()
    reloaded = VattFeatureExtractor.from_pretrained(tmp_path)
    assert without_auto_map(reloaded.to_dict()) == without_auto_map(extractor.to_dict())
    clip = noise(1000)
    np.testing.assert_array_equal(
        reloaded(clip, sampling_rate=16000)["input_values"], extractor(clip, sampling_rate=16000)["input_values"]
    )


def test_load_audio_reads_fixtures_and_resamples():
    path = SPEECH_DIR / "sense_and_sensibility_0880.flac"
    pcm, rate = soundfile.read(path, dtype="int16")
    waveform = load_audio(path)
    assert waveform.dtype == np.float32 and waveform.shape == (len(pcm) * 3,)
    np.testing.assert_allclose(waveform, soxr.resample(pcm / 32768, rate, 48000, quality="HQ"), atol=1e-6)
    np.testing.assert_array_equal(load_audio(path, sampling_rate=rate), pcm / 32768)


def test_load_audio_multichannel(tmp_path):
    stereo = np.stack([noise(22050), noise(22050, seed=1)], axis=1)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, stereo, 22050, subtype="FLOAT")
    channels = load_audio(path, mono=False)
    assert channels.shape == (2, 48000)
    np.testing.assert_allclose(channels[1], soxr.resample(stereo[:, 1], 22050, 48000, quality="HQ"), atol=1e-6)
    np.testing.assert_allclose(load_audio(path), channels.mean(axis=0), atol=1e-6)
