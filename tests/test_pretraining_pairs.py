"""Training pairs from long recordings: word alignment, neighbours, fallbacks, short clips, bad rows, keyed draws and
collation."""

from functools import partial

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from modeling_vatt.feature_extraction_vatt import VattFeatureExtractor
from modeling_vatt.pretraining_pairs import (
    LongFormEpochSampler,
    LongFormPairDataset,
    LongFormPairSampler,
    LongFormRecordings,
    collate_long_form_pairs,
    text_for_span,
    word_timing_problem,
    words_in_span,
)
from modeling_vatt.speech_data import SkipCounter, decode_audio
from modeling_vatt.tokenization_vatt import VattTokenizer
from tests.helpers import ENDS, STARTS, WORDS

RATE = 1000  # 1 kHz keeps the synthetic numbers readable: 2,000-sample windows are 2 s
AUDIO = np.arange(10 * RATE, dtype=np.float32)


def make_sampler(**kwargs) -> LongFormPairSampler:
    return LongFormPairSampler(window_samples=2 * RATE, sampling_rate=RATE, **kwargs)


def test_words_inside_window_by_midpoint():
    assert words_in_span(STARTS, ENDS, 3.0, 5.0).tolist() == [3, 4]
    assert text_for_span(WORDS, STARTS, ENDS, 2.5, 4.4) == "w3"  # w2's midpoint 2.4 is before, w4's 4.4 is the end
    assert text_for_span(WORDS, STARTS, ENDS, 2.3, 4.41) == "w2 w3 w4"


def test_pair_picks_words_and_neighbours():
    sampler = make_sampler(num_neighbor_segments=3)
    pair = sampler.pair_at(AUDIO, 3 * RATE, words=WORDS, word_starts=STARTS, word_ends=ENDS)
    np.testing.assert_array_equal(pair.input_values, AUDIO[3000:5000])
    assert pair.audio_attention_mask.sum() == 2000
    # Own window [3, 5), then next [5, 7), previous [1, 3), next but one [7, 9).
    assert pair.texts == ["w3 w4", "w5 w6", "w1 w2", "w7 w8"]
    assert (pair.start, pair.end) == (3.0, 5.0)


def test_neighbours_beyond_the_recording_are_empty():
    pair = make_sampler(num_neighbor_segments=2).pair_at(AUDIO, 0, words=WORDS, word_starts=STARTS, word_ends=ENDS)
    assert pair.texts == ["w0 w1", "w2 w3", ""]


def test_sampling_is_deterministic_and_aligned():
    sampler = make_sampler(num_neighbor_segments=1)
    draws = [
        sampler.sample(AUDIO, np.random.default_rng(seed), words=WORDS, word_starts=STARTS, word_ends=ENDS)
        for seed in (0, 0, 1)
    ]
    np.testing.assert_array_equal(draws[0].input_values, draws[1].input_values)
    assert draws[0].texts == draws[1].texts
    assert draws[0].start != draws[2].start
    for pair in draws:
        first_sample = int(pair.input_values[0])  # the synthetic audio's value is its sample index
        expected = [
            w for w, s, e in zip(WORDS, STARTS, ENDS) if first_sample <= (s + e) / 2 * RATE < first_sample + 2000
        ]
        assert pair.texts[0] == " ".join(expected)


def test_window_in_a_long_pause_is_recentred_on_a_word():
    words, starts, ends = ["only", "words"], [8.0, 8.5], [8.4, 8.9]
    sampler = make_sampler()
    for seed in range(5):
        pair = sampler.sample(AUDIO, np.random.default_rng(seed), words=words, word_starts=starts, word_ends=ends)
        assert pair.texts[0]


def test_untimed_transcript_uses_proportional_timings():
    text = " ".join(["abcd"] * 10)  # equal word lengths: word i spans [i, i + 1) s of the 10 s recording
    pair = make_sampler(num_neighbor_segments=1).pair_at(AUDIO, 3 * RATE, text=text)
    assert pair.texts == ["abcd abcd", "abcd abcd"]
    labelled = " ".join(f"x{i}yz" for i in range(10))
    assert make_sampler().pair_at(AUDIO, 3 * RATE, text=labelled).texts == ["x3yz x4yz"]


def test_untimed_transcript_whole_pairing():
    text = "the whole transcript"
    pair = make_sampler(num_neighbor_segments=2, untimed="whole").sample(AUDIO, np.random.default_rng(0), text=text)
    assert pair.texts == [text, "", ""]


def test_short_recording_zero_padded_with_mask():
    short = np.full(500, 0.5, dtype=np.float32)
    pair = make_sampler(num_neighbor_segments=1).sample(short, np.random.default_rng(0), text="one two")
    assert pair.input_values.shape == (2000,)
    assert pair.audio_attention_mask[:500].all() and not pair.audio_attention_mask[500:].any()
    assert not pair.input_values[500:].any()
    assert pair.texts == ["one two", ""]
    assert pair.end == 0.5


def test_short_recording_looped():
    short = np.arange(500, dtype=np.float32)
    pair = make_sampler(pad_mode="loop").sample(short, np.random.default_rng(0), text="one two")
    assert pair.audio_attention_mask.all()
    np.testing.assert_array_equal(pair.input_values[500:1000], short)
    assert pair.texts == ["one two"]


def test_windows_cover_the_recording():
    pairs = make_sampler().windows(AUDIO[:9500], words=WORDS, word_starts=STARTS, word_ends=ENDS)
    assert [pair.start for pair in pairs] == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert " ".join(pair.texts[0] for pair in pairs) == " ".join(WORDS)
    assert pairs[-1].audio_attention_mask.sum() == 1500


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="pad_mode"):
        make_sampler(pad_mode="reflect")
    with pytest.raises(ValueError, match="differ in length"):
        make_sampler().pair_at(AUDIO, 0, words=WORDS, word_starts=STARTS[:3], word_ends=ENDS)
    with pytest.raises(ValueError, match="mono"):
        make_sampler().pair_at(np.zeros((2, 100)), 0, text="a")


def test_collate_shapes_and_masks():
    tokenizer = VattTokenizer.from_corpus([" ".join(WORDS)])
    sampler = make_sampler(num_neighbor_segments=2)
    pairs = [
        sampler.pair_at(AUDIO, 0, words=WORDS, word_starts=STARTS, word_ends=ENDS),  # neighbours: [2, 4) and none
        sampler.pair_at(AUDIO[:500], 0, text="w1 w2 w3"),  # short: zero padded, neighbours empty
    ]
    batch = collate_long_form_pairs(pairs, tokenizer)
    assert batch["input_values"].shape == (2, 2000) and batch["input_values"].dtype == torch.float32
    assert batch["audio_attention_mask"].sum(dim=1).tolist() == [2000, 500]
    assert batch["input_ids"].shape == (6, 3) and batch["attention_mask"].shape == (6, 3)
    assert batch["text_candidate_mask"].tolist() == [[1, 1, 0], [1, 0, 0]]
    assert batch["attention_mask"].sum(dim=1).tolist() == [2, 2, 0, 3, 0, 0]
    assert tokenizer.decode(batch["input_ids"][1], skip_special_tokens=True) == "w2 w3"
    truncated = collate_long_form_pairs(pairs, tokenizer, max_text_length=2)
    assert truncated["input_ids"].shape == (6, 2)
    with pytest.raises(ValueError, match="same window length"):
        collate_long_form_pairs([pairs[0], make_sampler().pair_at(AUDIO, 0, text="w1")], tokenizer)


def test_recordings_skip_and_name_bad_rows(recordings):
    skips = SkipCounter()
    split = LongFormRecordings(recordings, 48000, skips)
    assert [recording.row for recording in split] == [0, 2]
    assert skips.counts == {"unreadable audio": 1, "empty transcript": 1, "word timings outside the audio": 1}
    assert f"row 4 ({recordings[4]['audio']['path']})" in skips.report()
    assert word_timing_problem("a b", None, [0.0, 1.0], [0.5, 1.5], duration=2.0) is None
    assert (
        word_timing_problem("a b", None, [0.0], [0.5], duration=2.0)
        == "word timings of a different length than the words"
    )
    assert word_timing_problem("a b", None, None, None, duration=2.0) is None  # untimed: proportional timings
    with pytest.raises(ValueError, match=r"(?s)No usable recordings in the 'validation' data.*outside the audio"):
        LongFormRecordings(recordings.select([4]), 48000, name="validation")


def test_pair_dataset_draws_per_window_and_reads_only_the_window_when_uncached(recordings):
    sampler = LongFormPairSampler(window_samples=96000, num_neighbor_segments=1)  # 2 s at 48 kHz
    cached = LongFormPairDataset(LongFormRecordings(recordings, 48000), sampler, seed=3)
    uncached = LongFormPairDataset(LongFormRecordings(recordings, 48000, cache_bytes=0), sampler, seed=3)
    assert cached.draws == [0, 0, 0, 0, 0, 1]  # one draw per 2 s window of the 10 s recording, one for the short one
    full = decode_audio(recordings[0]["audio"])
    for key in [(0, 0), (0, 3), (1, 3)]:
        pair = cached[key]
        expected = sampler.sample(
            full, np.random.default_rng([3, *key]), words=WORDS, word_starts=STARTS, word_ends=ENDS
        )
        np.testing.assert_array_equal(pair.input_values, expected.input_values)
        assert pair.texts == expected.texts and pair.texts[0]
        read = uncached[key]
        np.testing.assert_allclose(read.input_values, expected.input_values, atol=1e-5)
        assert read.texts == expected.texts
    assert cached[(0, 3)].start != cached[(1, 3)].start
    short = cached[(0, 5)]
    assert short.audio_attention_mask.sum() == 24000 and short.texts == ["w1 w2", ""]


def test_epoch_sampler_orders_keys_by_seed_and_epoch(recordings):
    dataset = LongFormPairDataset(LongFormRecordings(recordings, 48000), LongFormPairSampler(window_samples=96000))
    sampler = LongFormEpochSampler(dataset, seed=1)
    first = list(sampler)
    assert sorted(first) == [(0, draw) for draw in range(6)] and first == list(LongFormEpochSampler(dataset, 1))
    sampler.epoch = 1
    second = list(sampler)
    assert {epoch for epoch, _ in second} == {1} and [draw for _, draw in second] != [draw for _, draw in first]


def test_collate_through_the_feature_extractor(recordings):
    sampler = LongFormPairSampler(window_samples=96000)
    dataset = LongFormPairDataset(LongFormRecordings(recordings, 48000), sampler, seed=3)
    tokenizer = VattTokenizer.from_corpus([" ".join(WORDS)])
    feature_extractor = VattFeatureExtractor(sampling_rate=48000, do_normalize=True)
    collate = partial(collate_long_form_pairs, tokenizer=tokenizer, feature_extractor=feature_extractor)
    loader = DataLoader(dataset, sampler=LongFormEpochSampler(dataset), batch_size=3, collate_fn=collate)
    batch = next(iter(loader))
    assert batch["input_values"].shape == (3, 96000) and batch["input_ids"].shape[0] == 3
    pairs = [dataset[key] for key in list(LongFormEpochSampler(dataset))[:3]]
    for row, pair in enumerate(pairs):
        real = int(pair.audio_attention_mask.sum())
        assert batch["audio_attention_mask"][row].sum() == real
        expected = feature_extractor(pair.input_values[:real], sampling_rate=48000, return_tensors="pt")
        torch.testing.assert_close(batch["input_values"][row, :real], expected["input_values"][0, :real])
        assert batch["input_values"][row, real:].abs().sum() == 0
