# Copyright 2026 The vatt authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""
Searching an archive of recordings (not used by the model files): every recording is embedded window by window as
[`LongAudioIndex`] does, the window embeddings go into a FAISS index and their times into a SQLite table, and text or
audio queries return the best moments across the archive.

```python
summary = build_archive_index(model, processor, "lectures/", "lectures.index")
archive = ArchiveIndex.load("lectures.index")
for moment in archive.search(model, processor, "the speaker thanks the audience", top_k=5):
    print(moment.file, format_timestamp(moment.start), format_timestamp(moment.end), moment.score)
```

Layout of an index folder:
- `store/`: one embedding-cache file per recording content (keyed by the content hash, the model fingerprint and
  the window layout). Indexing only embeds recordings missing here, so an interrupted run resumes where it stopped
  and a re-run on an unchanged archive only hashes files.
- `shards/process-<i>.json`: what process `i` of a run embedded or skipped.
- `<version>/index.faiss` and `<version>/windows.sqlite`: the merged index; FAISS id `i` is row `id = i` of the
  `windows` table (`file`, `content_hash`, `start_seconds`, `end_seconds`, `window_weight`). `current.json` names the
  live version and is replaced atomically, so a reader sees the old index or the new one, never a mix.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch
from tqdm.auto import tqdm

from .embedding_cache import atomic_write, ensure_writable, hash_json, load_arrays
from .moment_search import (
    LongAudioIndex,
    Moment,
    audio_fingerprint,
    cache_key,
    check_model,
    embed_queries,
    format_timestamp,
    window_runs,
)
from .speech_data import AUDIO_EXTENSIONS, SkipCounter, read_records

logger = logging.getLogger(__name__)

INDEX_FORMAT = 1
CURRENT = "current.json"
FAISS_FILE = "index.faiss"
TABLE_FILE = "windows.sqlite"
UNREADABLE_ERRORS = (RuntimeError, ValueError, OSError, EOFError)
"""What decoding a damaged or unsupported file raises (libsndfile errors are `RuntimeError`s)."""


def _faiss():
    try:
        import faiss
    except ImportError as error:
        raise ImportError("Archive search needs FAISS: pip install 'vatt[archive]' (or faiss-cpu).") from error
    return faiss


@dataclass(frozen=True)
class Recording:
    """A recording of the archive: `name` as stored and reported (relative to the archive's root) and its `path`."""

    name: str
    path: Path


def list_recordings(source: Any, audio_column: str = "audio") -> tuple[list[Recording], list[tuple[str, str]]]:
    """
    The recordings of an archive, sorted by name, and the `(entry, reason)` pairs skipped while listing it.

    `source` is a folder (searched recursively; hidden files and folders are ignored, other files without an audio
    extension are skipped as "not an audio file"), a CSV/TSV/JSON-lines manifest with an `audio_column` of paths
    (relative ones are resolved against the manifest's folder) or a `datasets.Dataset` whose `audio_column` holds
    paths or undecoded `Audio` values with a path.
    """
    skipped: list[tuple[str, str]] = []
    named: dict[str, Path] = {}
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        root = Path(source)
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root)
            if any(part.startswith(".") for part in relative.parts) or not path.is_file():
                continue
            if path.suffix.lower() not in AUDIO_EXTENSIONS:
                skipped.append((relative.as_posix(), "not an audio file"))
                continue
            named[relative.as_posix()] = path
    else:
        if isinstance(source, (str, os.PathLike)):
            manifest = Path(source)
            if not manifest.is_file():
                raise FileNotFoundError(f"{manifest} is neither a folder of recordings nor a manifest file.")
            records, columns = read_records(manifest)
            root, values = manifest.parent, [record.get(audio_column) for record in records]
        else:
            columns, root = list(getattr(source, "column_names", [])), Path.cwd()
            values = source[audio_column] if audio_column in columns else []
        if audio_column not in columns:
            raise ValueError(f"No audio column {audio_column!r} in {source}; it has the columns {columns}.")
        for row, value in enumerate(values, start=1):
            value = value.get("path") if isinstance(value, dict) else value
            path = Path(str(value or ""))
            path = path if path.is_absolute() else root / path
            if not value or not path.is_file():
                skipped.append((f"row {row} ({value})", "missing audio file"))
                continue
            named[path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)] = path
    if not named:
        raise ValueError(f"No audio files ({', '.join(AUDIO_EXTENSIONS)}) in {source}; skipped: {skipped[:3]}.")
    return [Recording(name, named[name]) for name in sorted(named)], skipped


def shard_recordings(recordings: list[Recording], num_shards: int) -> list[list[Recording]]:
    """Split recordings into `num_shards` lists of about equal total size (largest files first, each to the lightest)."""
    shards: list[list[Recording]] = [[] for _ in range(num_shards)]
    loads = [0] * num_shards
    for recording in sorted(recordings, key=lambda item: (-item.path.stat().st_size, item.name)):
        lightest = loads.index(min(loads))
        shards[lightest].append(recording)
        loads[lightest] += recording.path.stat().st_size
    return [sorted(shard, key=lambda item: item.name) for shard in shards]


@dataclass
class ArchiveSummary:
    """What an indexing run did: recordings indexed (`embedded` + `reused`), their windows and hours, and skips."""

    recordings: int = 0
    embedded: int = 0
    reused: int = 0
    windows: int = 0
    hours: float = 0.0
    skips: SkipCounter = field(default_factory=SkipCounter)

    def report(self) -> str:
        return (
            f"Indexed {self.recordings} recordings ({self.embedded} embedded, {self.reused} reused), "
            f"{self.windows} windows, {format_timestamp(self.hours * 3600)} of audio. {self.skips.report()}"
        )


class ArchiveBuilder:
    """
    Indexes an archive (see [`list_recordings`]) into `index_dir`, alone or as process `process_index` of
    `num_processes`: each process embeds its shard with [`ArchiveBuilder.embed`], then one process calls
    [`ArchiveBuilder.merge`]. The merged index does not depend on the number of processes.

    Args:
        model: a [`VattForContrastivePretraining`]; processor: its `VattProcessor` or `VattFeatureExtractor`.
        source: a folder, a manifest file or a `datasets.Dataset` of recordings.
        index_dir: the index folder (created; checked to be writable before anything is embedded).
        window_seconds, hop_seconds, batch_windows: as in [`LongAudioIndex.build`].
    """

    def __init__(
        self,
        model: torch.nn.Module,
        processor,
        source: Any,
        index_dir: str | os.PathLike,
        process_index: int = 0,
        num_processes: int = 1,
        window_seconds: float | None = None,
        hop_seconds: float | None = None,
        batch_windows: int = 8,
        audio_column: str = "audio",
    ):
        if not 0 <= process_index < num_processes:
            raise ValueError(f"`process_index` must be in [0, {num_processes}), got {process_index}.")
        self.model, self.processor = model, processor
        self.index_dir = ensure_writable(index_dir)
        self.store = ensure_writable(self.index_dir / "store")
        self.process_index, self.num_processes = process_index, num_processes
        self.layout = {"window_seconds": window_seconds, "hop_seconds": hop_seconds}
        self.batch_windows = batch_windows
        self.recordings, self.listing_skipped = list_recordings(source, audio_column)
        self.fingerprint = audio_fingerprint(model)
        stats = [(item.name, item.path.stat().st_size, item.path.stat().st_mtime_ns) for item in self.recordings]
        self.run = hash_json(stats, num_processes, self.fingerprint, self.layout)

    def _shard_path(self, process_index: int) -> Path:
        return self.index_dir / "shards" / f"process-{process_index}.json"

    def embed(self, progress: bool = True) -> dict:
        """Embed this process's recordings (reusing the store), write its shard report and return it."""
        shard = shard_recordings(self.recordings, self.num_processes)[self.process_index]
        seconds = {item.name: _duration(item.path) for item in shard}
        show = progress and self.process_index == 0
        suffix = f" (process 1 of {self.num_processes})" if self.num_processes > 1 else ""
        files = tqdm(total=len(shard), unit="file", desc=f"Recordings{suffix}", disable=not show)
        hours = tqdm(total=sum(seconds.values()) / 3600, unit="h", desc=f"Hours{suffix}", disable=not show)
        entries, skipped = [], []
        for recording in shard:
            try:
                index = LongAudioIndex.build(
                    self.model,
                    self.processor,
                    recording.path,
                    batch_windows=self.batch_windows,
                    cache_dir=self.store,
                    progress=False,
                    model_fingerprint=self.fingerprint,
                    **self.layout,
                )
            except UNREADABLE_ERRORS as error:
                logger.warning("Skipping %s: unreadable audio (%s)", recording.path, error)
                skipped.append((recording.name, "unreadable audio"))
            else:
                entry = {"name": recording.name, "content_hash": index.metadata["audio_fingerprint"]}
                entry.update(store_file=index.cache_path.name, from_cache=index.from_cache, windows=len(index))
                entries.append({**entry, "seconds": index.duration, "metadata": index.metadata})
            files.update()
            hours.update(seconds[recording.name] / 3600)
        files.close()
        hours.close()
        report = {"run": self.run, "recordings": entries, "skipped": skipped}
        with atomic_write(self._shard_path(self.process_index)) as temporary:
            temporary.write_text(json.dumps(report))
        return report

    def merge(self, faiss_factory: str = "Flat", train_size: int = 100_000) -> ArchiveSummary:
        """
        Merge the shard reports of this run into a new index version, make it the live one, then delete the old
        versions and the store files it no longer uses.

        Args:
            faiss_factory: a `faiss.index_factory` description with inner-product metric: `"Flat"` (exact, the
                default), `"SQfp16"` (every window, in float16) or approximate ones such as `"IVF2048,SQfp16"`,
                `"IVF2048,PQ32"` or `"HNSW32"` (see `docs/archive_search.md`).
            train_size: windows sampled to train an index that needs training (IVF, PQ).
        """
        faiss = _faiss()
        reports = []
        for process_index in range(self.num_processes):
            path = self._shard_path(process_index)
            report = json.loads(path.read_text()) if path.is_file() else {}
            if report.get("run") != self.run:
                raise RuntimeError(f"{path} is missing or from another run: process {process_index} did not finish.")
            reports.append(report)
        entries = sorted((entry for report in reports for entry in report["recordings"]), key=lambda e: e["name"])
        skipped = self.listing_skipped + sorted(tuple(item) for report in reports for item in report["skipped"])
        summary = ArchiveSummary()
        for name, reason in skipped:
            summary.skips.add(reason, name)
        if not entries:
            raise ValueError(f"No recording of the archive could be indexed. {summary.skips.report()}")

        embeddings, rows = [], []
        for entry in entries:
            arrays, _ = load_arrays(self.store / entry["store_file"], cache_key(entry["metadata"]))
            first = sum(len(part) for part in embeddings)
            embeddings.append(arrays["embeddings"])
            rows += [
                (first + offset, entry["name"], entry["content_hash"], start, end, share)
                for offset, (start, end, share) in enumerate(
                    zip(arrays["starts"].tolist(), arrays["ends"].tolist(), arrays["window_weights"].tolist())
                )
            ]
        vectors = np.concatenate(embeddings)
        index = faiss.index_factory(vectors.shape[1], faiss_factory, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            sample = np.random.default_rng(0).permutation(len(vectors))[:train_size]
            index.train(vectors[np.sort(sample)])
        index.add(vectors)

        version = uuid.uuid4().hex
        info = {
            "index_format": INDEX_FORMAT,
            "version": version,
            "model_fingerprint": self.fingerprint,
            "model_name": self.model.config._name_or_path or type(self.model).__name__,
            "faiss_factory": faiss_factory,
            "windows": len(vectors),
            "window_length": entries[0]["metadata"]["window_length"],
            "hop_length": entries[0]["metadata"]["hop_length"],
        }
        building = self.index_dir / f".{version}.tmp"
        building.mkdir()
        faiss.write_index(index, str(building / FAISS_FILE))
        _write_table(building / TABLE_FILE, info, rows, entries, skipped)
        os.replace(building, self.index_dir / version)
        with atomic_write(self.index_dir / CURRENT) as temporary:
            temporary.write_text(json.dumps(info))
        self._collect_garbage(version, {entry["store_file"] for entry in entries})

        summary.recordings, summary.windows = len(entries), len(vectors)
        summary.embedded = sum(not entry["from_cache"] for entry in entries)
        summary.reused = len(entries) - summary.embedded
        summary.hours = sum(entry["seconds"] for entry in entries) / 3600
        return summary

    def _collect_garbage(self, version: str, store_files: set[str]) -> None:
        """Delete old index versions, interrupted writes and store files of removed or changed recordings."""
        for path in self.index_dir.iterdir():
            if path.is_dir() and path.name not in (version, "store", "shards"):
                shutil.rmtree(path)
            elif path.name.endswith(".tmp"):
                path.unlink()
        for path in self.store.iterdir():
            if path.name not in store_files:
                path.unlink()


def _duration(path: Path) -> float:
    try:
        info = soundfile.info(str(path))
    except UNREADABLE_ERRORS:
        return 0.0
    return info.frames / info.samplerate


def _write_table(path: Path, info: dict, rows: list[tuple], entries: list[dict], skipped: list[tuple]) -> None:
    connection = sqlite3.connect(path)
    try:
        with connection:
            connection.execute("CREATE TABLE info (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            connection.executemany("INSERT INTO info VALUES (?, ?)", [(k, json.dumps(v)) for k, v in info.items()])
            connection.execute(
                "CREATE TABLE windows (id INTEGER PRIMARY KEY, file TEXT NOT NULL, content_hash TEXT NOT NULL, "
                "start_seconds REAL NOT NULL, end_seconds REAL NOT NULL, window_weight REAL NOT NULL)"
            )
            connection.executemany("INSERT INTO windows VALUES (?, ?, ?, ?, ?, ?)", rows)
            connection.execute("CREATE INDEX windows_file ON windows (file)")
            connection.execute(
                "CREATE TABLE recordings (file TEXT PRIMARY KEY, content_hash TEXT NOT NULL, "
                "duration_seconds REAL NOT NULL, windows INTEGER NOT NULL)"
            )
            connection.executemany(
                "INSERT INTO recordings VALUES (?, ?, ?, ?)",
                [(e["name"], e["content_hash"], e["seconds"], e["windows"]) for e in entries],
            )
            connection.execute("CREATE TABLE skipped (file TEXT NOT NULL, reason TEXT NOT NULL)")
            connection.executemany("INSERT INTO skipped VALUES (?, ?)", skipped)
    finally:
        connection.close()


def build_archive_index(
    model: torch.nn.Module,
    processor,
    source: Any,
    index_dir: str | os.PathLike,
    faiss_factory: str = "Flat",
    progress: bool = True,
    **kwargs,
) -> ArchiveSummary:
    """Index an archive in this process (see [`ArchiveBuilder`]; `kwargs` go to it) and return what was done."""
    builder = ArchiveBuilder(model, processor, source, index_dir, **kwargs)
    builder.embed(progress=progress)
    return builder.merge(faiss_factory)


class ArchiveIndex:
    """
    A merged archive index, read-only: the FAISS index of window embeddings and the SQLite `windows` table.
    Open with [`ArchiveIndex.load`]; `info` holds the index's settings (model fingerprint, layout, FAISS factory).
    """

    def __init__(self, directory: Path, index, connection: sqlite3.Connection, info: dict):
        self.directory, self.index, self.connection, self.info = directory, index, connection, info

    def __len__(self) -> int:
        return self.index.ntotal

    @classmethod
    def load(cls, index_dir: str | os.PathLike, search_parameters: str | None = None) -> ArchiveIndex:
        """
        Open the live version of an index folder. `search_parameters` tunes approximate indexes through
        `faiss.ParameterSpace` (e.g. `"nprobe=32"` for IVF, `"efSearch=128"` for HNSW).
        """
        faiss = _faiss()
        directory = Path(index_dir)
        current = directory / CURRENT
        if not current.is_file():
            raise FileNotFoundError(f"No archive index in {directory} (no {CURRENT}); build one first.")
        info = json.loads(current.read_text())
        if info.get("index_format") != INDEX_FORMAT:
            raise ValueError(f"{current} holds index format {info.get('index_format')}, not {INDEX_FORMAT}.")
        version = directory / info["version"]
        try:
            index = faiss.read_index(str(version / FAISS_FILE))
            connection = sqlite3.connect(f"file:{version / TABLE_FILE}?mode=ro", uri=True)
            stored = {key: json.loads(value) for key, value in connection.execute("SELECT key, value FROM info")}
        except (RuntimeError, sqlite3.Error) as error:
            raise ValueError(f"{version}: unreadable archive index ({error}).") from error
        if stored != info or index.ntotal != info["windows"]:
            raise ValueError(f"{version}: the FAISS index, the windows table and {CURRENT} disagree.")
        if search_parameters:
            faiss.ParameterSpace().set_index_parameters(index, search_parameters)
        return cls(directory, index, connection, info)

    def recordings(self) -> list[tuple[str, str, float, int]]:
        """`(file, content_hash, duration_seconds, windows)` of every indexed recording."""
        return self.connection.execute("SELECT * FROM recordings ORDER BY file").fetchall()

    def skipped(self) -> list[tuple[str, str]]:
        """`(file, reason)` of every entry skipped when the index was built."""
        return self.connection.execute("SELECT * FROM skipped").fetchall()

    def search(
        self, model: torch.nn.Module, tokenizer: Callable, query: str | list[str], top_k: int = 5, merge_adjacent=True
    ) -> list[Moment] | list[list[Moment]]:
        """
        The best moments across the archive for a text query (or a list of queries), best first: the `top_k`
        best windows, with consecutive windows of a recording merged into one moment (as [`LongAudioIndex.search`]).
        """
        check_model(model, self.info["model_fingerprint"])
        queries = [query] if isinstance(query, str) else list(query)
        results = self.search_embeddings(embed_queries(model, tokenizer, queries), top_k, merge_adjacent)
        return results[0] if isinstance(query, str) else results

    def search_audio(
        self,
        model: torch.nn.Module,
        processor,
        audio: str | os.PathLike | np.ndarray | torch.Tensor,
        sampling_rate: float | None = None,
        top_k: int = 5,
        merge_adjacent: bool = True,
    ) -> list[Moment]:
        """Moments similar to an audio clip: its windows (the index's layout) pooled by real share, then searched."""
        check_model(model, self.info["model_fingerprint"])
        patch_seconds = model.config.audio_config.patch_size / _sampling_rate(model, processor)
        clip = LongAudioIndex.build(
            model,
            processor,
            audio,
            sampling_rate,
            window_seconds=self.info["window_length"] * patch_seconds,
            hop_seconds=self.info["hop_length"] * patch_seconds,
            progress=False,
        )
        pooled = (clip.embeddings * clip.window_weights[:, None]).sum(0)
        return self.search_embeddings(pooled[None] / np.linalg.norm(pooled), top_k, merge_adjacent)[0]

    def search_embeddings(
        self, queries: np.ndarray, top_k: int = 5, merge_adjacent: bool = True
    ) -> list[list[Moment]]:
        """Moments for L2-normalised query embeddings `(queries, dim)`."""
        if top_k < 1:
            raise ValueError(f"`top_k` must be at least 1, got {top_k}.")
        scores, ids = search_windows(self.index, queries, top_k)
        results = []
        for row_scores, row_ids in zip(scores, ids):
            found = [int(i) for i in row_ids if i >= 0]
            windows = {
                row[0]: row[1:]
                for row in self.connection.execute(
                    f"SELECT id, file, start_seconds, end_seconds FROM windows WHERE id IN ({','.join('?' * len(found))})",
                    found,
                )
            }
            runs = window_runs(
                found, row_scores[: len(found)].tolist(), merge_adjacent, [windows[i][0] for i in found]
            )
            results.append(
                [
                    Moment(windows[run[0]][1], windows[run[-1]][2], score, run, windows[run[0]][0])
                    for run, score in runs
                ]
            )
        return results


def search_windows(index, queries: np.ndarray, top_k: int, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """
    Scores and ids `(queries, top_k)` of the best windows, best first (id -1 past the index's size). An exact (flat)
    index is searched by BLAS matrix products over its stored vectors, several times faster on CPU than FAISS's own
    flat scan (see `docs/archive_search.md`); approximate indexes by FAISS.
    """
    faiss = _faiss()
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if not isinstance(index, faiss.IndexFlat) or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        return index.search(queries, top_k)
    vectors = faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)
    found = min(top_k, index.ntotal)
    scores = np.full((len(queries), top_k), -np.inf, dtype=np.float32)
    ids = np.full((len(queries), top_k), -1, dtype=np.int64)
    for start in range(0, len(queries), chunk):
        all_scores = queries[start : start + chunk] @ vectors.T
        best = np.argpartition(-all_scores, found - 1, axis=1)[:, :found]
        best_scores = np.take_along_axis(all_scores, best, axis=1)
        order = np.argsort(-best_scores, axis=1, kind="stable")
        ids[start : start + chunk, :found] = np.take_along_axis(best, order, axis=1)
        scores[start : start + chunk, :found] = np.take_along_axis(best_scores, order, axis=1)
    return scores, ids


def _sampling_rate(model: torch.nn.Module, processor) -> int:
    feature_extractor = getattr(processor, "feature_extractor", processor)
    return model.config.audio_config.sampling_rate if feature_extractor is None else feature_extractor.sampling_rate


__all__ = [
    "ArchiveBuilder",
    "ArchiveIndex",
    "ArchiveSummary",
    "Recording",
    "build_archive_index",
    "list_recordings",
    "search_windows",
    "shard_recordings",
]
