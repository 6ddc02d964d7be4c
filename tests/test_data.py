"""Loaders for the user's own data: every input format, bad rows skipped and reported, clear column errors."""

import json

import numpy as np
import pytest
import soundfile as sf
from datasets import Audio, Dataset, DatasetDict

from modeling_vatt.speech_data import (
    AudioDecodeError,
    SkipCounter,
    audio_frames,
    decode_audio,
    drop_unreadable_audio,
    ensure_splits,
    iter_decoded,
    load_audio_folder,
    load_manifest_file,
    load_speech_dataset,
    prepare_dataset,
    read_audio_span,
)


def write_tone(path, seconds: float, rate: int = 16000, channels: int = 1) -> None:
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 220 * t)
    sf.write(path, np.stack([tone] * channels, axis=1) if channels > 1 else tone, rate)


@pytest.fixture
def clips(tmp_path):
    """A folder with two good clips (FLAC mono, WAV stereo), a garbage file, an empty WAV and transcripts."""
    folder = tmp_path / "clips"
    folder.mkdir()
    write_tone(folder / "a.flac", 1.0)
    write_tone(folder / "b.wav", 0.5, rate=22050, channels=2)
    (folder / "broken.wav").write_bytes(b"not audio at all")
    sf.write(folder / "silent.wav", np.zeros(0), 16000)
    for stem, text in {
        "a": "first clip",
        "b": "second  clip\n",
        "broken": "broken file",
        "silent": "no audio",
    }.items():
        (folder / f"{stem}.txt").write_text(text)
    return folder


def test_audio_folder_skips_missing_and_empty_transcripts(clips):
    write_tone(clips / "untranscribed.flac", 0.2)
    write_tone(clips / "blank.flac", 0.2)
    (clips / "blank.txt").write_text("  \n")
    skips = SkipCounter()
    dataset = load_audio_folder(clips, skips=skips)
    assert dataset["text"] == ["first clip", "second clip", "broken file", "no audio"]
    assert dataset.features["audio"] == Audio(decode=False)
    assert skips.counts == {"missing transcript": 1, "empty transcript": 1}
    assert "untranscribed.flac" in skips.report() and "blank.flac" in skips.report()


def test_decoding_skips_unreadable_and_empty_audio(clips):
    skips = SkipCounter()
    decoded = list(iter_decoded(load_audio_folder(clips), skips, sampling_rate=48000))
    assert [row["text"] for row in decoded] == ["first clip", "second clip"]
    assert decoded[0]["input_values"].dtype == np.float32
    assert len(decoded[0]["input_values"]) == 48000 and len(decoded[1]["input_values"]) == 24000
    assert skips.counts == {"unreadable audio": 1, "empty audio": 1}
    report = skips.report()
    assert "Skipped 2 row(s)" in report and "broken.wav" in report and "silent.wav" in report


def test_csv_and_jsonl_manifests(clips, tmp_path):
    csv_path = clips / "manifest.csv"
    csv_path.write_text(
        "path,sentence,words,starts,ends\n"
        'a.flac,first clip,"[""first"", ""clip""]","[0.1, 0.5]","[0.4, 0.9]"\n'
        "b.wav,second clip,second clip,0.0 0.2,0.2 0.4\n"
        "missing.flac,ghost,,,\n"
        "a.flac,,,,\n"
    )
    skips = SkipCounter()
    dataset = load_manifest_file(
        csv_path,
        audio_column="path",
        text_column="sentence",
        word_starts_column="starts",
        word_ends_column="ends",
        skips=skips,
    )
    assert dataset["words"] == [["first", "clip"], ["second", "clip"]]
    assert dataset["word_starts"] == [[0.1, 0.5], [0.0, 0.2]]
    assert skips.counts == {"missing audio file": 1, "empty transcript": 1}
    assert "manifest.csv:4" in skips.report() and "manifest.csv:5" in skips.report()

    jsonl_path = tmp_path / "manifest.jsonl"  # audio paths absolute, only the first row timed
    timed = {"words": ["first", "clip"], "word_starts": [0.1, 0.5], "word_ends": [0.4, 0.9]}
    rows = [
        {"audio": str(clips / "a.flac"), "text": "first clip", **timed},
        {"audio": str(clips / "b.wav"), "text": "second clip"},
    ]
    jsonl_path.write_text("\n".join(json.dumps(row) for row in rows))
    dataset = load_speech_dataset(jsonl_path)
    assert dataset["word_ends"] == [[0.4, 0.9], None]
    assert decode_audio(dataset[1]["audio"]).shape == (24000,)


def test_manifest_missing_column_names_existing_ones(clips):
    (clips / "m.csv").write_text("file,transcript\na.flac,first clip\n")
    with pytest.raises(ValueError, match=r"audio column 'audio'.*\['file', 'transcript'\]"):
        load_manifest_file(clips / "m.csv")
    timed = {"audio": "a.flac", "text": "a b", "words": ["a", "b"], "word_starts": [0.0], "word_ends": [1.0, 2.0]}
    (clips / "t.jsonl").write_text(json.dumps(timed))
    with pytest.raises(ValueError, match="words, word_starts and word_ends differ"):
        load_manifest_file(clips / "t.jsonl")


def test_saved_dataset_folder_round_trip(clips, tmp_path):
    DatasetDict(train=load_audio_folder(clips)).save_to_disk(str(tmp_path / "saved"))
    for path in clips.glob("*"):
        path.unlink()  # save_to_disk embedded the audio bytes
    loaded = load_speech_dataset(tmp_path / "saved")
    assert isinstance(loaded, DatasetDict) and loaded["train"].num_rows == 4
    skips = SkipCounter()
    assert len(list(iter_decoded(loaded["train"], skips))) == 2 and skips.total == 2


def test_any_dataset_with_named_columns(clips):
    dataset = Dataset.from_dict(
        {"path": [str(clips / "a.flac"), str(clips / "b.wav"), str(clips / "a.flac")], "sentence": ["x", "y", " "]}
    )
    skips = SkipCounter()
    prepared = load_speech_dataset(dataset, audio_column="path", text_column="sentence", skips=skips)
    assert prepared.column_names == ["audio", "text"]
    assert prepared.features["audio"] == Audio(decode=False)
    assert prepared["text"] == ["x", "y"] and skips.counts == {"empty transcript": 1}
    with pytest.raises(ValueError, match=r"text column 'text'.*\['path', 'sentence'\]"):
        prepare_dataset(dataset, audio_column="path")
    with pytest.raises(TypeError, match="Audio feature or file paths"):
        prepare_dataset(Dataset.from_dict({"audio": [1], "text": ["a"]}))


def test_ensure_splits_and_skip_merge(clips):
    dataset = load_audio_folder(clips)
    splits = ensure_splits(dataset, eval_fraction=0.25, seed=0)
    assert (splits["train"].num_rows, splits["validation"].num_rows) == (3, 1)
    assert ensure_splits(DatasetDict(train=dataset, test=dataset))["validation"].num_rows == 4
    first, second = SkipCounter(), SkipCounter()
    first.add("empty audio", "x")
    second.add("empty audio", "y")
    second.add("unreadable audio", "z")
    first.merge(second)
    assert first.counts == {"empty audio": 2, "unreadable audio": 1} and first.total == 3
    assert SkipCounter().report() == "No rows skipped."


def test_json_array_manifest_and_bad_timings(clips):
    rows = [{"file": "a.flac", "text": "first clip", "words": "first clip", "word_starts": "0 x", "word_ends": "1 2"}]
    (clips / "m.json").write_text(json.dumps(rows))
    with pytest.raises(ValueError, match=r"m.json:1: unreadable word timings"):
        load_manifest_file(clips / "m.json", audio_column="file")
    rows[0]["word_starts"] = "0 0.5"
    (clips / "m.json").write_text(json.dumps(rows))
    assert load_manifest_file(clips / "m.json", audio_column="file")["word_starts"] == [[0.0, 0.5]]
    with pytest.raises(ValueError, match="Unsupported manifest type"):
        load_manifest_file(clips / "a.txt")


def test_drop_unreadable_audio_names_the_dropped_rows(clips):
    skips = SkipCounter()
    usable = drop_unreadable_audio(load_audio_folder(clips), "audio", skips)
    assert usable["text"] == ["first clip", "second clip"]
    assert skips.counts == {"unreadable audio": 1, "empty audio": 1}
    assert "row 2 (" in skips.report() and "broken.wav" in skips.report() and "silent.wav" in skips.report()


GOOD_ROW = json.dumps({"audio": "a.flac", "text": "first clip"})


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("m.jsonl", f"{GOOD_ROW}\n\n{{'audio': 'b.wav'}}\n", r"m\.jsonl:3: not valid JSON \(Expecting property name"),
        ("m.jsonl", f"{GOOD_ROW}\n[1, 2]\n", r"m\.jsonl:2: expected a JSON object"),
        ("m.json", f'[{GOOD_ROW},\n{{"audio": "b.wav" "text": "no comma"}}]', r"m\.json:2: not valid JSON"),
        ("m.json", f'[{GOOD_ROW}, "b.wav"]', r"m\.json: item 2 of the JSON array is not an object"),
    ],
)
def test_malformed_json_manifests_name_file_and_line(clips, name, content, message):
    (clips / name).write_text(content)
    with pytest.raises(ValueError, match=message):
        load_manifest_file(clips / name)


def test_read_audio_span_matches_full_decode(tmp_path):
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "noise.flac", rng.uniform(-0.5, 0.5, size=(22050 * 3, 2)), 22050)
    audio = {"bytes": (tmp_path / "noise.flac").read_bytes(), "path": None}
    assert audio_frames(audio) == (22050 * 3, 22050)
    full = decode_audio(audio, 48000)
    for start in (0, 12345, 48000 * 2 + 7, len(full) - 500):
        span = read_audio_span(audio, start, 9600, 48000)
        np.testing.assert_allclose(span, full[start : start + 9600], atol=1e-5)
    assert len(read_audio_span(audio, len(full), 9600, 48000)) == 0
    with pytest.raises(AudioDecodeError, match="unreadable audio"):
        audio_frames({"bytes": b"garbage", "path": None})
