"""Loaders for the user's own speech data and audio decoding for training (soundfile + soxr, no torchcodec).

Every loader returns a `datasets.Dataset` (or `DatasetDict`) with the columns `audio` (`Audio(decode=False)`: a path or
embedded bytes), `text` and, when the source has them, `words`, `word_starts`, `word_ends` (seconds). Accepted sources:

- a folder of audio files with same-stem `.txt` transcripts (`load_audio_folder`),
- a CSV or JSONL manifest with an audio path and a text column, optionally word timings (`load_manifest_file`),
- a folder written by `save_to_disk` (`datasets.load_from_disk`), or
- any `datasets` dataset with an audio and a text column (`prepare_dataset`).

Bad rows (missing or unreadable or empty audio, missing or empty transcript) are skipped and counted in a
`SkipCounter`, whose `report()` says what was dropped and why; they never stop a run.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .audio_utils import load_audio
from .feature_extraction_vatt import resampled_length

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".flac", ".wav", ".mp3", ".ogg", ".oga", ".opus", ".aiff", ".aif")
TIMING_COLUMNS = ("words", "word_starts", "word_ends")
DEFAULT_SAMPLING_RATE = 48_000


class AudioDecodeError(ValueError):
    """Audio that cannot be used; `reason` is `"unreadable audio"` or `"empty audio"`."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass
class SkipCounter:
    """Counts skipped rows by reason and keeps a few examples of each, for an end-of-run report."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    max_examples: int = 3

    def add(self, reason: str, item: str) -> None:
        self.counts[reason] += 1
        if len(self.examples.setdefault(reason, [])) < self.max_examples:
            self.examples[reason].append(item)
        logger.warning("Skipping %s: %s", item, reason)

    def merge(self, other: SkipCounter) -> None:
        """Adds the counts of another counter (e.g. from another process)."""
        for reason, count in other.counts.items():
            self.counts[reason] += count
            room = self.max_examples - len(self.examples.setdefault(reason, []))
            self.examples[reason].extend(other.examples.get(reason, [])[:room])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def report(self) -> str:
        if not self.total:
            return "No rows skipped."
        lines = [f"Skipped {self.total} row(s):"]
        for reason, count in sorted(self.counts.items()):
            lines.append(f"  {count} x {reason} (e.g. {', '.join(self.examples[reason])})")
        return "\n".join(lines)


def _require_columns(column_names: list[str], required: dict[str, str]) -> None:
    missing = {role: name for role, name in required.items() if name not in column_names}
    if missing:
        wanted = ", ".join(f"{role} column {name!r}" for role, name in missing.items())
        raise ValueError(f"Missing {wanted}; the data has the columns {list(column_names)}.")


def _from_rows(rows: list[dict[str, Any]], source: Path, skips: SkipCounter):
    from datasets import Audio, Dataset

    if not rows:
        raise ValueError(f"No usable rows in {source}. {skips.report()}")
    columns = {name: [row.get(name) for row in rows] for name in ("audio", "text", *TIMING_COLUMNS)}
    columns = {name: values for name, values in columns.items() if any(value is not None for value in values)}
    return Dataset.from_dict(columns).cast_column("audio", Audio(decode=False))


def load_audio_folder(folder: str | os.PathLike, transcript_suffix: str = ".txt", skips: SkipCounter | None = None):
    """Loads every audio file under `folder` (recursively) whose same-stem `transcript_suffix` file holds its
    transcript. Files without a transcript or with an empty one are skipped and counted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder.")
    skips = skips if skips is not None else SkipCounter()
    rows = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS):
        transcript_path = path.with_suffix(transcript_suffix)
        if not transcript_path.exists():
            skips.add("missing transcript", str(path))
            continue
        text = " ".join(transcript_path.read_text(encoding="utf-8").split())
        if not text:
            skips.add("empty transcript", str(path))
            continue
        rows.append({"audio": str(path), "text": text})
    return _from_rows(rows, folder, skips)


def _parse_list(value: Any, cast: type) -> list | None:
    """Reads a word or time list stored as a list, a JSON string or a whitespace-separated string."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        value = json.loads(value) if value.lstrip().startswith("[") else value.split()
    return [cast(item) for item in value]


def read_records(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Reads a CSV/TSV, JSON-lines or JSON-array file into records and its column names."""
    suffix = path.suffix.lower()
    with open(path, encoding="utf-8", newline="") as file:
        if suffix in (".csv", ".tsv"):
            reader = csv.DictReader(file, delimiter="\t" if suffix == ".tsv" else ",")
            return list(reader), list(reader.fieldnames or [])
        if suffix not in (".jsonl", ".json"):
            raise ValueError(f"Unsupported manifest type {suffix!r}; use .csv, .tsv, .jsonl or .json.")
        content = file.read()
    if content.lstrip().startswith("["):
        records = _parse_json(content, path, line_offset=0)
        bad = next((number for number, record in enumerate(records, start=1) if not isinstance(record, dict)), None)
        if bad is not None:
            raise ValueError(f"{path}: item {bad} of the JSON array is not an object with the row's columns.")
    else:
        records = []
        for number, line in enumerate(content.splitlines(), start=1):
            if not line.strip():
                continue
            record = _parse_json(line, path, line_offset=number - 1)
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object with the row's columns, got {line[:60]!r}.")
            records.append(record)
    return records, sorted({name for record in records for name in record})


def _parse_json(text: str, path: Path, line_offset: int) -> Any:
    """`json.loads`, with a one-line error naming the file and line of malformed JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno + line_offset}: not valid JSON ({error.msg}).") from None


@dataclass(frozen=True)
class SpeechColumns:
    """Names of a source's audio, transcript and optional word-timing columns (the keyword arguments of the loaders)."""

    audio_column: str = "audio"
    text_column: str = "text"
    words_column: str = "words"
    word_starts_column: str = "word_starts"
    word_ends_column: str = "word_ends"

    @property
    def timings(self) -> dict[str, str]:
        """Standard timing column -> the source's column."""
        return dict(zip(TIMING_COLUMNS, (self.words_column, self.word_starts_column, self.word_ends_column)))


def load_manifest_file(path: str | os.PathLike, skips: SkipCounter | None = None, **column_names: str):
    """Loads a CSV/TSV, JSON-lines or JSON-array manifest. Relative audio paths are resolved against the manifest's
    folder. Rows with all three timing columns keep them (in CSV as JSON lists or space-separated values).
    `column_names` are [`SpeechColumns`] fields."""
    path = Path(path)
    columns = SpeechColumns(**column_names)
    audio_column, text_column = columns.audio_column, columns.text_column
    skips = skips if skips is not None else SkipCounter()
    records, source_columns = read_records(path)
    _require_columns(source_columns, {"audio": audio_column, "text": text_column})
    timing_names = columns.timings
    rows = []
    first_row = 2 if path.suffix.lower() in (".csv", ".tsv") else 1  # CSV line numbers count the header
    for row_number, record in enumerate(records, start=first_row):
        item = f"{path.name}:{row_number}"
        audio_path = Path(str(record.get(audio_column) or ""))
        audio_path = audio_path if audio_path.is_absolute() else path.parent / audio_path
        text = " ".join(str(record.get(text_column) or "").split())
        if not audio_path.is_file():
            skips.add("missing audio file", f"{item} ({audio_path})")
            continue
        if not text:
            skips.add("empty transcript", item)
            continue
        row = {"audio": str(audio_path), "text": text}
        try:
            timings = {
                name: _parse_list(record.get(column), str if name == "words" else float)
                for name, column in timing_names.items()
            }
        except ValueError as error:
            raise ValueError(f"{item}: unreadable word timings ({error}).") from error
        if all(value is not None for value in timings.values()):
            row.update(_checked_timings(timings, item))
        rows.append(row)
    return _from_rows(rows, path, skips)


def _checked_timings(timings: dict[str, list], item: str) -> dict[str, list]:
    lengths = {name: len(values) for name, values in timings.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{item}: words, word_starts and word_ends differ in length ({lengths}).")
    return timings


def prepare_dataset(dataset, skips: SkipCounter | None = None, **column_names: str):
    """Brings any `datasets` `Dataset`/`DatasetDict` with an audio and a text column to the standard columns
    (`column_names` are [`SpeechColumns`] fields).

    The audio column may be an `Audio` feature (decoded or not) or a column of file paths; it becomes
    `Audio(decode=False)`. Rows with an empty transcript are dropped and counted; other columns are kept.
    """
    from datasets import Audio, DatasetDict

    if isinstance(dataset, DatasetDict):
        return DatasetDict(
            {name: prepare_dataset(split, skips=skips, **column_names) for name, split in dataset.items()}
        )
    columns = SpeechColumns(**column_names)
    audio_column, text_column = columns.audio_column, columns.text_column
    skips = skips if skips is not None else SkipCounter()
    _require_columns(dataset.column_names, {"audio": audio_column, "text": text_column})
    renames = {audio_column: "audio", text_column: "text"}
    for standard, column in columns.timings.items():
        if column in dataset.column_names:
            renames[column] = standard
    clashes = [
        standard for column, standard in renames.items() if column != standard and standard in dataset.column_names
    ]
    if clashes:
        raise ValueError(f"Cannot rename to {clashes}: the dataset already has columns with those names.")
    dataset = dataset.rename_columns({column: standard for column, standard in renames.items() if column != standard})
    feature = dataset.features["audio"]
    if not (isinstance(feature, Audio) and not feature.decode):
        if not isinstance(feature, Audio) and getattr(feature, "dtype", None) != "string":
            raise TypeError(f"Column {audio_column!r} must be an Audio feature or file paths, got {feature}.")
        dataset = dataset.cast_column("audio", Audio(decode=False))
    keep = []
    for index, text in enumerate(dataset["text"]):
        if text is None or not str(text).strip():
            skips.add("empty transcript", f"row {index}")
        else:
            keep.append(index)
    return dataset if len(keep) == dataset.num_rows else dataset.select(keep)


def load_speech_dataset(source, skips: SkipCounter | None = None, **column_names: str):
    """Loads any supported source: a `datasets` object, a `save_to_disk` folder, an audio folder or a manifest file.

    `column_names` (`audio_column`, `text_column`, `words_column`, ...) name the source's columns.
    """
    from datasets import Dataset, DatasetDict, load_from_disk

    if isinstance(source, (Dataset, DatasetDict)):
        return prepare_dataset(source, skips=skips, **column_names)
    path = Path(source)
    if path.is_dir() and any((path / name).exists() for name in ("dataset_dict.json", "dataset_info.json")):
        return prepare_dataset(load_from_disk(str(path)), skips=skips, **column_names)
    if path.is_dir():
        if column_names:
            raise ValueError(f"An audio folder has no columns to name; got {sorted(column_names)}.")
        return load_audio_folder(path, skips=skips)
    if path.is_file():
        return load_manifest_file(path, skips=skips, **column_names)
    raise ValueError(f"{source} is neither a dataset, a folder nor a manifest file.")


def ensure_splits(data, eval_fraction: float = 0.1, seed: int = 0):
    """Returns a `DatasetDict` with `train` and `validation` splits, carving a seeded `eval_fraction` out of the data
    when it has no evaluation split (an existing `test` split serves as `validation`)."""
    from datasets import DatasetDict

    if isinstance(data, DatasetDict):
        if "train" not in data:
            raise ValueError(f"Expected a 'train' split, got {list(data)}.")
        if "validation" in data or "test" in data:
            return DatasetDict(train=data["train"], validation=data["validation" if "validation" in data else "test"])
        data = data["train"]
    if data.num_rows < 2:
        raise ValueError(f"Need at least 2 rows to split off an evaluation set, got {data.num_rows}.")
    parts = data.train_test_split(test_size=max(1, round(eval_fraction * data.num_rows)), seed=seed)
    return DatasetDict(train=parts["train"], validation=parts["test"])


def _audio_source(audio: str | os.PathLike | dict):
    """What soundfile opens for an `Audio(decode=False)` value (`{"bytes", "path"}`) or a path."""
    if isinstance(audio, dict):
        source = io.BytesIO(audio["bytes"]) if audio.get("bytes") is not None else audio.get("path")
    else:
        source = os.fspath(audio)
    if source is None:
        raise AudioDecodeError("unreadable audio", "the value has neither bytes nor a path")
    return source


def audio_frames(audio: str | os.PathLike | dict) -> tuple[int, int]:
    """`(frames, sampling_rate)` from the file header; raises `AudioDecodeError` for unreadable or empty audio."""
    import soundfile as sf

    source = _audio_source(audio)
    try:
        info = sf.info(source)
    except Exception as error:  # soundfile raises several types (LibsndfileError, RuntimeError, TypeError)
        raise AudioDecodeError("unreadable audio", str(error)) from error
    if info.frames <= 0:
        raise AudioDecodeError("empty audio")
    return info.frames, info.samplerate


def decode_audio(audio: str | os.PathLike | dict, sampling_rate: int = DEFAULT_SAMPLING_RATE) -> np.ndarray:
    """Decodes an `Audio(decode=False)` value (`{"bytes", "path"}`) or a path to mono float32 at `sampling_rate`
    (soundfile + soxr, via `audio_utils.load_audio`). Raises `AudioDecodeError` for unreadable or empty audio."""
    source = _audio_source(audio)
    try:
        samples = load_audio(source, sampling_rate)
    except Exception as error:  # soundfile raises several types (LibsndfileError, RuntimeError, TypeError)
        raise AudioDecodeError("unreadable audio", str(error)) from error
    if samples.size == 0:
        raise AudioDecodeError("empty audio")
    return samples


def read_audio_span(
    audio: str | os.PathLike | dict, start_sample: int, num_samples: int, sampling_rate: int = DEFAULT_SAMPLING_RATE
) -> np.ndarray:
    """Decodes only samples `[start_sample, start_sample + num_samples)` (counted at `sampling_rate`) of a recording:
    a seek into the file, mono mixdown and soxr over the span plus a 50 ms margin on each side, starting on the output
    sample grid, so the span matches the same samples of a full decode up to soxr edge effects. Shorter at the end."""
    import soundfile as sf
    import soxr

    source = _audio_source(audio)
    try:
        with sf.SoundFile(source) as file:
            rate, total_frames = file.samplerate, file.frames
            margin = int(0.05 * rate)
            step = rate // math.gcd(rate, sampling_rate)  # start on a frame that lies on the output sample grid
            first = min(max(int(start_sample * rate / sampling_rate) - margin, 0) // step * step, total_frames)
            last = min(int((start_sample + num_samples) * rate / sampling_rate) + margin + 1, total_frames)
            file.seek(first)
            block = file.read(frames=max(last - first, 0), dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises several types (LibsndfileError, RuntimeError, TypeError)
        raise AudioDecodeError("unreadable audio", str(error)) from error
    mono = block.mean(axis=1, dtype=np.float32)
    if rate != sampling_rate:
        mono = soxr.resample(mono, rate, sampling_rate, quality="HQ")
    offset = start_sample - first * sampling_rate // rate
    available = max(resampled_length(total_frames, rate, sampling_rate) - start_sample, 0)
    return np.ascontiguousarray(mono[offset : offset + min(num_samples, available)], dtype=np.float32)


def example_name(example: dict[str, Any], index: int | None = None) -> str:
    """How a skipped row is named in reports: `row <index> (<audio path>)`."""
    audio = example["audio"]
    path = audio.get("path") if isinstance(audio, dict) else str(audio)
    return " ".join(part for part in (f"row {index}" if index is not None else "", path and f"({path})") if part)


def decode_example(
    example: dict[str, Any], skips: SkipCounter, sampling_rate: int = DEFAULT_SAMPLING_RATE, index: int | None = None
) -> dict[str, Any] | None:
    """Decodes one standard row into `{"input_values", "text", "words", "word_starts", "word_ends"}`, or returns None
    after counting the reason when its audio is unreadable or empty or its transcript is empty."""
    audio = example["audio"]
    item = example_name(example, index)
    text = " ".join(str(example.get("text") or "").split())
    if not text:
        skips.add("empty transcript", item)
        return None
    try:
        input_values = decode_audio(audio, sampling_rate)
    except AudioDecodeError as error:
        skips.add(error.reason, item)
        return None
    decoded = {"input_values": input_values, "text": text}
    decoded.update({name: example.get(name) for name in TIMING_COLUMNS})
    return decoded


def drop_unreadable_audio(dataset, audio_column: str = "audio", skips: SkipCounter | None = None):
    """`dataset` without the rows whose audio (an `Audio(decode=False)` value or a path) cannot be decoded or is empty,
    each counted in `skips` with its row and file. Every file is decoded once, at its own rate, so files with a
    readable header but a damaged body are found too."""
    skips = skips if skips is not None else SkipCounter()
    keep = []
    for index, row in enumerate(dataset.select_columns([audio_column])):
        audio = row[audio_column]
        try:
            decode_audio(audio, audio_frames(audio)[1])
        except AudioDecodeError as error:
            skips.add(error.reason, example_name({"audio": audio}, index))
            continue
        keep.append(index)
    return dataset if len(keep) == dataset.num_rows else dataset.select(keep)


def iter_decoded(dataset, skips: SkipCounter, sampling_rate: int = DEFAULT_SAMPLING_RATE):
    """Yields the decoded rows of a standard dataset, skipping (and counting) the bad ones."""
    for index, example in enumerate(dataset):
        decoded = decode_example(example, skips, sampling_rate, index=index)
        if decoded is not None:
            yield decoded
