"""The embedded corpus: shipped manifest, deterministic espeak-ng rendering, word timings that match the audio."""

import hashlib
import io
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
from datasets import Audio, load_from_disk

from modeling_vatt.corpus import (
    FESTIVAL_VOICE_NAME,
    HELDOUT_ACCENTS,
    HELDOUT_VARIANTS,
    HELDOUT_VOICES,
    PIPER_VOICE_NAME,
    RATE_RANGE_WPM,
    TRAINING_VOICES,
    build_corpus,
    festival_token_bounds,
    load_manifest,
    main,
    make_manifest,
    piper_word_bounds,
    render_passage_festival,
    revoice_passages,
    select_passages,
)
from modeling_vatt.pretraining_pairs import LongFormPairSampler
from modeling_vatt.speech_data import decode_audio, load_speech_dataset
from tests.helpers import requires_festival


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    main(["build", "--out", str(out), "--size", "tiny"])
    return out


def file_digests(folder):
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.glob("*.flac"))}


def test_shipped_manifest():
    passages = load_manifest()
    assert 150 <= len(passages) <= 300
    assert len({p.id for p in passages}) == len(passages)
    assert all(p.source.startswith("pydoc_data.topics:") for p in passages)  # no reserved evaluation text
    assert {p.voice for p in passages} <= set(TRAINING_VOICES)
    assert len({p.voice for p in passages}) >= 90  # many voices, not a handful
    assert all(RATE_RANGE_WPM[0] <= p.rate_wpm <= RATE_RANGE_WPM[1] for p in passages)
    counts = {split: sum(p.split == split for p in passages) for split in ("train", "validation", "test")}
    assert counts["train"] > 0.75 * len(passages) and min(counts.values()) >= 10
    assert all(45 <= len(p.text.split()) <= 300 and p.text.isascii() for p in passages)
    assert [len(select_passages(passages, size)) for size in ("tiny", "small")] == [4, 39]
    with pytest.raises(ValueError, match="Unknown corpus size"):
        select_passages(passages, "huge")


def test_manifest_generator_keeps_prose_only():
    passages = make_manifest(min_words=45, max_words=120)
    assert all(len(p.text.split()) <= 120 for p in passages)
    assert not any(symbol in p.text for p in passages for symbol in ("::", ">>>", "{", "="))


def test_render_is_deterministic(tiny_corpus, tmp_path):
    rebuilt = tmp_path / "again"
    build_corpus(rebuilt, size="tiny", show_progress=False)
    first, second = file_digests(tiny_corpus / "audio"), file_digests(rebuilt / "audio")
    assert len(first) == 4 and first == second


def test_second_build_is_cached(tiny_corpus):
    before = {path: path.stat().st_mtime_ns for path in tiny_corpus.rglob("*") if path.is_file()}
    corpus = build_corpus(tiny_corpus, size="tiny", show_progress=False)
    assert {path: path.stat().st_mtime_ns for path in tiny_corpus.rglob("*") if path.is_file()} == before
    assert corpus.num_rows == {"train": 2, "validation": 1, "test": 1}


def test_dataset_schema_and_decoding(tiny_corpus):
    corpus = load_from_disk(str(tiny_corpus / "dataset"))
    row = corpus["train"][0]
    assert corpus["train"].features["audio"] == Audio(decode=False)
    assert row["sampling_rate"] == 22050 and row["voice"] in TRAINING_VOICES and 140 <= row["rate_wpm"] <= 200
    info = sf.info(io.BytesIO(row["audio"]["bytes"]))
    assert (info.format, info.subtype, info.samplerate, info.channels) == ("FLAC", "PCM_16", 22050, 1)
    waveform = decode_audio(row["audio"], sampling_rate=48000)
    assert waveform.dtype == np.float32 and abs(len(waveform) / 48000 - row["duration"]) < 1e-3
    assert row["duration"] > 15


def test_word_timings_match_the_audio(tiny_corpus):
    corpus = load_from_disk(str(tiny_corpus / "dataset"))
    word_energy, pause_energy = [], []
    for split in corpus.values():
        for row in split:
            audio, rate = sf.read(io.BytesIO(row["audio"]["bytes"]), dtype="float32")
            starts, ends = np.array(row["word_starts"]), np.array(row["word_ends"])
            assert row["words"] == row["text"].split()
            assert starts[0] >= 0 and ends[-1] <= len(audio) / rate
            assert np.all(ends > starts) and np.all(starts[1:] >= ends[:-1])
            next_starts = np.r_[starts[1:], len(audio) / rate]
            for word, start, end, next_start in zip(row["words"], starts, ends, next_starts):
                word_energy.append(np.sqrt(np.mean(audio[int(start * rate) : int(end * rate)] ** 2)))
                if word.endswith(".") and next_start - end > 0.05:  # the pause after a sentence
                    pause = audio[int(end * rate) : int(next_start * rate)]
                    pause_energy.append(np.sqrt(np.mean(pause**2)))
    assert len(pause_energy) >= 4
    assert np.median(word_energy) > 20 * np.median(pause_energy)
    assert np.percentile(word_energy, 5) > np.percentile(pause_energy, 95)


def test_corpus_feeds_the_long_form_sampler(tiny_corpus):
    corpus = load_speech_dataset(tiny_corpus / "dataset")
    row = corpus["test"][0]
    sampler = LongFormPairSampler(num_neighbor_segments=2)
    pair = sampler.pair_at(
        decode_audio(row["audio"]),
        48000 * 4,
        words=row["words"],
        word_starts=row["word_starts"],
        word_ends=row["word_ends"],
    )
    spoken = [w for w, s, e in zip(row["words"], row["word_starts"], row["word_ends"]) if 4.0 <= (s + e) / 2 < 7.2]
    assert pair.texts[0] == " ".join(spoken) and len(spoken) >= 5
    assert pair.texts[1] and pair.texts[2]
    assert np.sqrt(np.mean(pair.input_values**2)) > 0.02


def _accent_and_variant(voice):
    accent, _, variant = voice.partition("+")
    return accent, variant


def test_heldout_voices_share_no_accent_or_variant_with_training():
    training = [_accent_and_variant(voice) for voice in TRAINING_VOICES]
    heldout = [_accent_and_variant(voice) for voice in HELDOUT_VOICES]
    assert {accent for accent, _ in heldout} == set(HELDOUT_ACCENTS)
    assert {variant for _, variant in heldout} == set(HELDOUT_VARIANTS)
    assert not {accent for accent, _ in training} & set(HELDOUT_ACCENTS)
    assert not {variant for _, variant in training} & set(HELDOUT_VARIANTS)


def test_revoicing_keeps_the_passages_of_a_voice_set_and_changes_only_their_voice():
    passages = load_manifest()
    heldout = [p for p in passages if p.split in ("validation", "test")]
    for voice_set, voices in (("heldout", set(HELDOUT_VOICES)), ("piper", {PIPER_VOICE_NAME})):
        revoiced = revoice_passages(passages, voice_set)
        assert [(p.id, p.text, p.split) for p in revoiced] == [(p.id, p.text, p.split) for p in heldout]
        assert {p.voice for p in revoiced} <= voices
    assert len({p.voice for p in revoice_passages(passages, "heldout")}) == len(HELDOUT_VOICES)
    festival = revoice_passages(passages, "festival")
    training = [p for p in passages if p.split == "train"]
    assert [(p.id, p.text, p.rate_wpm, p.pitch) for p in festival] == [
        (p.id, p.text, p.rate_wpm, p.pitch) for p in training
    ]
    assert {p.voice for p in festival} == {FESTIVAL_VOICE_NAME}
    assert revoice_passages(passages, "training") == passages
    with pytest.raises(ValueError, match="Unknown voice set"):
        revoice_passages(passages, "flite")


def test_heldout_voice_set_renders_deterministically_with_aligned_words(tmp_path):
    first = build_corpus(tmp_path / "a", size="tiny", voice_set="heldout", show_progress=False)
    build_corpus(tmp_path / "b", size="tiny", voice_set="heldout", show_progress=False)
    assert set(first) == {"validation", "test"}
    assert {first[split][0]["voice"] for split in first} <= set(HELDOUT_VOICES)
    assert file_digests(tmp_path / "a" / "audio") == file_digests(tmp_path / "b" / "audio")
    training = build_corpus(tmp_path / "c", size="tiny", show_progress=False)
    assert first["test"][0]["text"] == training["test"][0]["text"]
    assert first["test"][0]["audio"]["bytes"] != training["test"][0]["audio"]["bytes"]


def test_piper_word_bounds_follow_the_phoneme_alignment():
    # "of an apple": espeak joins "of an" and reduces "an" to one sound; a stray sound follows "apple".
    words = [["ʌ", "v"], ["a", "n"], ["a", "p", "ə", "l"]]
    spoken = ["ʌ", "v", "ə", "n", "a", "p", "ə", "l", "s"]
    spans = [(10 * index, 10 * index + 10) for index in range(len(spoken))]
    assert piper_word_bounds(words, spoken, spans) == ([0, 20, 40], [20, 40, 90])
    # A word that keeps no sound gets an empty span where the next word starts.
    assert piper_word_bounds([["ʌ"], ["x"], ["b"]], ["ʌ", "b"], [(0, 5), (5, 9)]) == ([0, 5, 5], [5, 5, 9])


def test_piper_voice_set_has_word_times_inside_the_speech(tmp_path):
    corpus = build_corpus(tmp_path, size="tiny", voice_set="piper", show_progress=False)
    row = corpus["test"][0]
    audio, rate = sf.read(io.BytesIO(row["audio"]["bytes"]), dtype="float32")
    starts, ends = np.array(row["word_starts"]), np.array(row["word_ends"])
    assert row["voice"] == PIPER_VOICE_NAME and rate == 22050 and row["words"] == row["text"].split()
    assert starts[0] >= 0 and ends[-1] <= len(audio) / rate and np.all(ends >= starts)
    assert np.mean(ends > starts) > 0.95 and np.all(starts[1:] >= ends[:-1] - 1e-9)
    word_energy = [np.sqrt(np.mean(audio[int(s * rate) : int(e * rate)] ** 2)) for s, e in zip(starts, ends)]
    assert np.median(word_energy) > 0.02  # the spans cover speech, not the silences around sentences


def test_festival_token_bounds_span_the_spoken_words_of_each_token():
    # "In 1984 - tea." : "1984" is spoken as three words, "-" as none, "." is a silent punctuation word.
    report = "\n".join(
        [
            "TOKEN",
            "WORD\t0.20\t0.35",
            "TOKEN",
            "WORD\t0.35\t0.80",
            "WORD\t0.80\t1.10",
            "WORD\t1.10\t1.40",
            "TOKEN",
            "TOKEN",
            "WORD\t1.60\t1.90",
            "WORD\t0.00\t0.00",
        ]
    )
    assert festival_token_bounds(report) == ([0.20, 0.35, 1.60, 1.60], [0.35, 1.40, 1.60, 1.90])
    # A last token with no spoken word sits at the end of the speech.
    assert festival_token_bounds("TOKEN\nWORD\t0.1\t0.5\nTOKEN") == ([0.1, 0.5], [0.5, 0.5])


def test_festival_voice_set_without_festival_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no festival executable on it
    with pytest.raises(ImportError, match="apt-get install festival festvox-kdlpc16k"):
        build_corpus(tmp_path / "corpus", size="tiny", voice_set="festival", show_progress=False)
    assert not (tmp_path / "corpus" / "audio").exists()


@requires_festival
def test_festival_voice_set_renders_training_passages_deterministically_with_aligned_words(tmp_path):
    first = build_corpus(tmp_path / "a", size="tiny", voice_set="festival", show_progress=False)
    build_corpus(tmp_path / "b", size="tiny", voice_set="festival", show_progress=False)
    assert set(first) == {"train"} and first["train"].num_rows == 2
    assert file_digests(tmp_path / "a" / "audio") == file_digests(tmp_path / "b" / "audio")
    word_energy, pause_energy = [], []
    for row in first["train"]:
        audio, rate = sf.read(io.BytesIO(row["audio"]["bytes"]), dtype="float32")
        starts, ends = np.array(row["word_starts"]), np.array(row["word_ends"])
        assert row["voice"] == FESTIVAL_VOICE_NAME and rate == 16000 and row["words"] == row["text"].split()
        assert starts[0] >= 0 and ends[-1] <= len(audio) / rate
        assert np.all(ends > starts) and np.all(starts[1:] >= ends[:-1] - 1e-9)
        next_starts = np.r_[starts[1:], len(audio) / rate]
        for word, start, end, next_start in zip(row["words"], starts, ends, next_starts):
            word_energy.append(np.sqrt(np.mean(audio[int(start * rate) : int(end * rate)] ** 2)))
            if word.endswith(".") and next_start - end > 0.05:
                pause_energy.append(np.sqrt(np.mean(audio[int(end * rate) : int(next_start * rate)] ** 2)))
    assert len(pause_energy) >= 2
    assert np.median(word_energy) > 20 * np.median(pause_energy)


def _median_f0(audio: np.ndarray, rate: int) -> float:
    """Median pitch (Hz) of the loud 40 ms frames by autocorrelation, searched over 70-400 Hz."""
    frame, estimates = int(0.04 * rate), []
    for begin in range(0, len(audio) - frame, frame):
        piece = audio[begin : begin + frame] - audio[begin : begin + frame].mean()
        if np.sqrt(np.mean(piece**2)) > 0.05:
            correlation = np.correlate(piece, piece, "full")[frame - 1 :]
            shortest, longest = rate // 400, rate // 70
            estimates.append(rate / (shortest + np.argmax(correlation[shortest:longest])))
    return float(np.median(estimates))


@requires_festival
def test_festival_follows_the_passage_rate_and_pitch(tmp_path):
    passage = replace(select_passages(load_manifest(), "tiny")[0], voice=FESTIVAL_VOICE_NAME)
    rows = {}
    for rate, pitch in ((140, 50), (200, 50), (140, 65)):
        (tmp_path / f"{rate}-{pitch}").mkdir()
        rows[rate, pitch] = render_passage_festival(
            replace(passage, rate_wpm=rate, pitch=pitch), tmp_path / f"{rate}-{pitch}"
        )
    speaking_time = {key: row["word_ends"][-1] - row["word_starts"][0] for key, row in rows.items()}
    assert speaking_time[140, 50] / speaking_time[200, 50] == pytest.approx(200 / 140, rel=0.05)
    assert speaking_time[140, 65] == pytest.approx(speaking_time[140, 50], rel=0.01)
    # Pitch 50 keeps ked's mean F0 of 105 Hz; 65 raises it to 127.5 Hz.
    low, high = (_median_f0(*sf.read(rows[140, pitch]["audio"])) for pitch in (50, 65))
    assert low == pytest.approx(105, rel=0.08) and high / low == pytest.approx(127.5 / 105, rel=0.08)
