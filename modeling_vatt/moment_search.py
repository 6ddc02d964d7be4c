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
Finding moments in long recordings: embed a recording window by window once (streamed from disk, cacheable), then
answer text queries with the best-matching time spans. Not used by the model files.

```python
index = LongAudioIndex.build(model, processor, "lecture.flac", cache_dir="~/.cache/vatt-index")
for moment in index.search(model, processor, "the speaker thanks the audience", top_k=3):
    print(format_timestamp(moment.start), format_timestamp(moment.end), moment.score)
```
"""

import contextlib
import hashlib
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .embedding_cache import cached_arrays, ensure_writable, file_fingerprint, hash_json, load_arrays, save_arrays
from .embedding_cache import model_fingerprint as weights_fingerprint
from .feature_extraction_vatt import _NORMALIZE_EPS, convert_blocks, resampled_length
from .windowing_vatt import WindowLayout

FORMAT_VERSION = 1
BLOCK_FRAMES = 1 << 16
"""Frames decoded, mixed down and resampled at a time."""


@dataclass(frozen=True)
class Moment:
    """
    A time span (seconds) of a recording, its cosine score and the index windows it covers; `file` names the
    recording in an archive search (None for a one-recording index).
    """

    start: float
    end: float
    score: float
    window_indices: tuple[int, ...]
    file: str | None = None


def format_timestamp(seconds: float) -> str:
    """`HH:MM:SS.mmm`."""
    milliseconds = round(seconds * 1000)
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    return f"{hours:02d}:{minutes:02d}:{milliseconds // 1000:02d}.{milliseconds % 1000:03d}"


class _Source:
    """A recording (file path or array) that streams mono float32 blocks at a target rate."""

    def __init__(self, audio, sampling_rate: float | None):
        if isinstance(audio, (str, os.PathLike)):
            self.path = Path(audio)
            if not self.path.is_file():
                raise FileNotFoundError(f"No audio file at {self.path}.")
            info = soundfile.info(str(self.path))
            self.array, self.sampling_rate, self.num_frames = None, info.samplerate, info.frames
            if sampling_rate is not None and sampling_rate != info.samplerate:
                raise ValueError(
                    f"{self.path} is at {info.samplerate} Hz, but sampling_rate={sampling_rate} was given."
                )
            return
        if sampling_rate is None:
            raise ValueError("Pass the `sampling_rate` of an audio array.")
        array = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
        if array.dtype.kind != "f" or array.ndim not in (1, 2) or array.size == 0:
            raise ValueError(
                f"An audio array must be a non-empty float (samples,) or (channels, samples) array, got {array.dtype} "
                f"of shape {array.shape}."
            )
        if array.ndim == 2 and array.shape[0] > array.shape[1]:
            array = array.T  # (samples, channels) -> (channels, samples): the shorter axis holds the channels
        if not np.isfinite(array).all():
            raise ValueError("The audio array contains NaN or infinite samples.")
        self.path, self.array, self.sampling_rate = None, array, sampling_rate
        self.num_frames = array.shape[-1]

    def fingerprint(self) -> str:
        """BLAKE2b of the file's bytes (or the array's samples and rate)."""
        if self.path is not None:
            return file_fingerprint(self.path)
        digest = hashlib.blake2b(digest_size=16)
        digest.update(f"{self.array.dtype}{self.array.shape}{self.sampling_rate}".encode())
        digest.update(np.ascontiguousarray(self.array).data)
        return digest.hexdigest()

    def blocks(self, target_sampling_rate: int) -> Iterator[np.ndarray]:
        if self.path is not None:
            with soundfile.SoundFile(str(self.path)) as handle:
                raw = handle.blocks(blocksize=BLOCK_FRAMES, dtype="float32", always_2d=True)
                yield from convert_blocks(raw, self.sampling_rate, target_sampling_rate, mono=True)
            return
        raw = (
            np.asarray(self.array[..., start : start + BLOCK_FRAMES].T, dtype=np.float32)
            for start in range(0, self.num_frames, BLOCK_FRAMES)
        )
        yield from convert_blocks(raw, self.sampling_rate, target_sampling_rate, mono=True)


def _normalization(source: _Source, sampling_rate: int) -> tuple[np.float32, np.float32]:
    """Mean and standard deviation of the whole resampled recording, as `VattFeatureExtractor(do_normalize=True)`."""
    total = squares = 0.0
    count = 0
    for block in source.blocks(sampling_rate):
        block = block.astype(np.float64)
        total, squares, count = total + block.sum(), squares + block @ block, count + len(block)
    mean = total / count
    return np.float32(mean), np.float32(math.sqrt(max(squares / count - mean * mean, 0.0) + _NORMALIZE_EPS))


def audio_fingerprint(model: torch.nn.Module) -> str:
    """Fingerprint of what audio embeddings depend on (the audio tower and projection): keys cached embeddings."""
    return weights_fingerprint(model.audio_model, model.audio_projection)


@contextlib.contextmanager
def _inference(model: torch.nn.Module) -> Iterator[None]:
    """Evaluation mode (no dropout, no DropToken) and no autograd, restoring the model's mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


class LongAudioIndex:
    """
    L2-normalised audio embeddings of the windows of one recording, with their times, ready for text search.

    Windows follow the model's own windowing: `window_length` patches (default: the position table) with
    `window_overlap` patches of overlap, the recording zero-padded to whole patches and the last window padded and
    masked; each window is projected like `get_audio_features`. Build with [`LongAudioIndex.build`]; `embeddings`
    `(windows, dim)`, `starts`/`ends` (seconds, ends clipped to the recording's duration) and `window_weights` (each
    window's real-content share, as the model's) are numpy arrays; `metadata` records the model, the file fingerprint
    and the layout.
    """

    def __init__(
        self, embeddings: np.ndarray, starts: np.ndarray, ends: np.ndarray, window_weights: np.ndarray, metadata: dict
    ):
        self.embeddings, self.starts, self.ends, self.window_weights = embeddings, starts, ends, window_weights
        self.metadata = metadata
        self.from_cache = False
        self.cache_path: Path | None = None

    def __len__(self) -> int:
        return len(self.embeddings)

    @property
    def duration(self) -> float:
        return self.metadata["num_samples"] / self.metadata["sampling_rate"]

    @classmethod
    def build(
        cls,
        model: torch.nn.Module,
        processor_or_feature_extractor,
        audio: str | os.PathLike | np.ndarray | torch.Tensor,
        sampling_rate: float | None = None,
        window_seconds: float | None = None,
        hop_seconds: float | None = None,
        batch_windows: int = 8,
        cache_dir: str | os.PathLike | None = None,
        progress: bool = True,
        model_fingerprint: str | None = None,
    ) -> "LongAudioIndex":
        """
        Embed `audio` (a file libsndfile reads, or a float array at `sampling_rate`) window by window.

        The recording is decoded, mixed down to mono and resampled (soxr) in blocks, and `batch_windows` windows are
        encoded at a time, so memory depends on `batch_windows`, not on the recording's length.

        Args:
            model: a [`VattForContrastivePretraining`] (its `get_audio_features` gives the window embeddings).
            processor_or_feature_extractor: a `VattProcessor` or `VattFeatureExtractor` (its `sampling_rate` and
                `do_normalize` are followed), or None for the audio config's rate without normalisation.
            window_seconds, hop_seconds: window length and hop, rounded to whole patches. By default the model's
                window and `window - window_overlap`; a custom window (at most the model's) defaults to no overlap.
            batch_windows: windows encoded at once.
            cache_dir: reuse (or write) the index in this folder, keyed by the file's content, the model weights and
                the layout; `index.from_cache` says whether it was reused and `index.cache_path` names the file. A
                corrupt cache file is reported and rebuilt.
            progress: show a tqdm progress bar.
            model_fingerprint: `audio_fingerprint(model)`, when it is already known (building many indexes).
        """
        if not hasattr(model, "get_audio_features") or not hasattr(model, "audio_projection"):
            raise TypeError(f"Expected a VattForContrastivePretraining model, got {type(model).__name__}.")
        if batch_windows < 1:
            raise ValueError(f"`batch_windows` must be at least 1, got {batch_windows}.")
        config = model.config.audio_config
        feature_extractor = getattr(
            processor_or_feature_extractor, "feature_extractor", processor_or_feature_extractor
        )
        target_rate = config.sampling_rate if feature_extractor is None else feature_extractor.sampling_rate
        do_normalize = bool(getattr(feature_extractor, "do_normalize", False))
        if getattr(feature_extractor, "patch_size", config.patch_size) != config.patch_size:
            raise ValueError("The feature extractor's `patch_size` differs from the model's.")
        window, hop = _layout(config, target_rate, window_seconds, hop_seconds)

        if cache_dir is not None:
            cache_dir = ensure_writable(cache_dir)  # before any embedding
        source = _Source(audio, sampling_rate)
        num_samples = resampled_length(source.num_frames, source.sampling_rate, target_rate)
        if num_samples < config.patch_size:
            raise ValueError(
                f"The recording is shorter than one patch ({config.patch_size} samples at {target_rate} Hz)."
            )
        metadata = {
            "format_version": FORMAT_VERSION,
            "model_name": model.config._name_or_path or model.__class__.__name__,
            "model_revision": getattr(model.config, "_commit_hash", None),
            "model_fingerprint": model_fingerprint or audio_fingerprint(model),
            "audio": str(source.path) if source.path is not None else "<array>",
            "audio_fingerprint": source.fingerprint(),
            "sampling_rate": target_rate,
            "num_samples": num_samples,
            "do_normalize": do_normalize,
            "patch_size": config.patch_size,
            "window_length": window,
            "hop_length": hop,
        }

        def compute() -> dict[str, np.ndarray]:
            normalization = _normalization(source, target_rate) if do_normalize else None
            spans = WindowLayout(-(-num_samples // config.patch_size), window, window - hop).spans().numpy()
            spans = np.minimum(spans * config.patch_size, num_samples)
            embeddings, window_weights = _embed_windows(
                model, source, metadata, spans, batch_windows, normalization, progress
            )
            times = spans.astype(np.float64) / target_rate
            return {
                "embeddings": embeddings,
                "starts": times[:, 0],
                "ends": times[:, 1],
                "window_weights": window_weights,
            }

        if cache_dir is None:
            return cls(metadata=metadata, **compute())
        keyed = cache_key(metadata)
        stem = source.path.stem if source.path is not None else "array"
        path = cache_dir / f"{stem}.{hash_json(keyed)}.safetensors"
        arrays, stored, from_cache = cached_arrays(path, keyed, compute, metadata)
        index = cls(metadata=stored, **arrays)
        index.from_cache, index.cache_path = from_cache, path
        return index

    def save(self, path: str | os.PathLike) -> Path:
        """Write the index to `path` (a `.safetensors` file) atomically, with a checksum of its arrays."""
        arrays = {"embeddings": self.embeddings, "starts": self.starts, "ends": self.ends}
        return save_arrays(path, {**arrays, "window_weights": self.window_weights}, self.metadata)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LongAudioIndex":
        """Read an index written by [`LongAudioIndex.save`]; a damaged file raises `CorruptCacheError`."""
        arrays, metadata = load_arrays(path, {"format_version": FORMAT_VERSION})
        return cls(metadata=metadata, **arrays)

    def scores(self, model: torch.nn.Module, tokenizer: Callable, queries: list[str]) -> np.ndarray:
        """Cosine similarity `(queries, windows)` between the text queries and every window."""
        check_model(model, self.metadata["model_fingerprint"])
        return embed_queries(model, tokenizer, queries) @ self.embeddings.T

    def search(
        self,
        model: torch.nn.Module,
        tokenizer: Callable,
        query: str | list[str],
        top_k: int = 5,
        merge_adjacent: bool = True,
    ) -> list[Moment] | list[list[Moment]]:
        """
        The best moments for a query (or a list of queries), best first.

        The `top_k` best-scoring windows are taken; with `merge_adjacent`, consecutive ones among them (windows that
        touch or overlap in time) become one moment, so fewer than `top_k` moments may come back. A moment's score is
        the best cosine similarity of its windows.
        """
        if top_k < 1:
            raise ValueError(f"`top_k` must be at least 1, got {top_k}.")
        queries = [query] if isinstance(query, str) else list(query)
        results = []
        for scores in self.scores(model, tokenizer, queries):
            best = np.argsort(-scores, kind="stable")[:top_k]
            runs = window_runs(best.tolist(), scores[best].tolist(), merge_adjacent)
            results.append([Moment(float(self.starts[r[0]]), float(self.ends[r[-1]]), score, r) for r, score in runs])
        return results[0] if isinstance(query, str) else results


def cache_key(metadata: dict) -> dict:
    """What a cached index is keyed on: its metadata except the model's name and the audio's path."""
    return {name: value for name, value in metadata.items() if name not in ("model_name", "audio")}


def window_runs(
    windows: list[int], scores: list[float], merge_adjacent: bool, recordings: list | None = None
) -> list[tuple[tuple[int, ...], float]]:
    """
    Group the best `windows` (with their `scores`) into moments, best first: with `merge_adjacent`, consecutive
    window indices (of the same entry of `recordings`, when given) become one run scored by its best window.
    """
    score_of = dict(zip(windows, scores))
    recording_of = dict(zip(windows, recordings or [None] * len(windows)))
    runs: list[list[int]] = []
    for window in sorted(windows) if merge_adjacent else windows:
        previous = runs[-1][-1] if runs else None
        if merge_adjacent and previous == window - 1 and recording_of[previous] == recording_of[window]:
            runs[-1].append(window)
        else:
            runs.append([window])
    scored = [(tuple(run), float(max(score_of[window] for window in run))) for run in runs]
    return sorted(scored, key=lambda item: -item[1])


def check_model(model: torch.nn.Module, fingerprint: str) -> None:
    """Refuse a model whose audio weights are not the ones the embeddings were computed with."""
    if audio_fingerprint(model) != fingerprint:
        raise ValueError("This index was built with a different model (its audio weights differ).")


def embed_queries(model: torch.nn.Module, tokenizer: Callable, queries: list[str]) -> np.ndarray:
    """L2-normalised text embeddings `(queries, dim)`; a query with no tokens (e.g. `"!!!"`) is an error."""
    if not queries or not all(isinstance(text, str) and text.strip() for text in queries):
        raise ValueError("Queries must be non-empty strings.")
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    tokens = tokenizer(queries, padding=True, return_tensors="pt")
    attention_mask = tokens.get("attention_mask")
    if attention_mask is not None:
        empty = [text for text, row in zip(queries, attention_mask) if not row.any()]
        if empty:
            raise ValueError(f"The query {empty[0]!r} has no tokens the tokenizer keeps; use words.")
    with _inference(model):
        text = model.get_text_features(
            input_ids=tokens["input_ids"].to(model.device),
            attention_mask=None if attention_mask is None else attention_mask.to(model.device),
        ).pooler_output
    return F.normalize(text.float(), dim=-1).cpu().numpy()


def _layout(config, sampling_rate: int, window_seconds: float | None, hop_seconds: float | None) -> tuple[int, int]:
    """Window and hop in patches, following the audio config unless overridden."""
    patch_seconds = config.patch_size / sampling_rate
    window = config.window_length if window_seconds is None else round(window_seconds / patch_seconds)
    if not 1 <= window <= config.window_length:
        raise ValueError(
            f"`window_seconds` must give 1 to {config.window_length} patches (the model's window, "
            f"{config.window_length * patch_seconds:.3f} s); got {window} patches."
        )
    default_hop = window - config.window_overlap if window_seconds is None else window
    hop = default_hop if hop_seconds is None else round(hop_seconds / patch_seconds)
    if not 1 <= hop <= window:
        raise ValueError(f"`hop_seconds` must give 1 to {window} patches (the window); got {hop} patches.")
    return window, hop


def _embed_windows(
    model: torch.nn.Module,
    source: _Source,
    metadata: dict,
    spans: np.ndarray,
    batch_windows: int,
    normalization: tuple[np.float32, np.float32] | None,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """
    Stream the recording and encode its windows (`spans`, `(windows, 2)` sample ranges) `batch_windows` at a time;
    returns the normalised embeddings and the real-content share of each window.
    """
    patch_size, num_samples = metadata["patch_size"], metadata["num_samples"]
    window_samples, num_windows = metadata["window_length"] * patch_size, len(spans)

    embeddings = np.empty((num_windows, model.config.projection_dim), dtype=np.float32)
    window_weights = np.empty(num_windows, dtype=np.float32)
    batch = np.zeros((batch_windows, window_samples), dtype=np.float32)
    real = np.zeros(batch_windows, dtype=np.int64)  # real patches per window of the batch
    buffer, buffer_start, decoded, filled = np.zeros(0, dtype=np.float32), 0, 0, 0
    blocks = source.blocks(metadata["sampling_rate"])
    bar = tqdm(total=num_windows, unit="window", desc="Embedding audio", disable=not progress)

    def encode(count: int, first: int) -> None:
        values = torch.from_numpy(batch[:count]).to(model.device)
        mask = None
        if (real[:count] < metadata["window_length"]).any():
            real_samples = torch.from_numpy(real[:count] * patch_size)
            mask = (torch.arange(window_samples) < real_samples[:, None]).long().to(model.device)
        with _inference(model):
            output = model.get_audio_features(input_values=values, audio_attention_mask=mask).pooler_output
        embeddings[first : first + count] = F.normalize(output.float(), dim=-1).cpu().numpy()
        window_weights[first : first + count] = real[:count] / metadata["window_length"]
        bar.update(count)

    for window_index, (start, end) in enumerate(spans.tolist()):
        while decoded < end:
            block = next(blocks, None)
            if block is None:
                raise RuntimeError(f"{metadata['audio']}: decoding ended after {decoded} of {num_samples} samples.")
            if normalization is not None:
                block = (block - normalization[0]) / normalization[1]
            buffer = np.concatenate([buffer[start - buffer_start :], block])
            buffer_start, decoded = start, decoded + len(block)
        row = batch[filled]
        row[: end - start] = buffer[start - buffer_start : end - buffer_start]
        row[end - start :] = 0.0  # the model's zero padding: of the last partial patch, and of a short last window
        real[filled] = -(-(end - start) // patch_size)
        filled += 1
        if filled == batch_windows or window_index == num_windows - 1:
            encode(filled, window_index + 1 - filled)
            filled = 0
    bar.close()
    decoded += sum(len(block) for block in blocks)  # let the resampler flush and the file close
    if decoded != num_samples:
        raise RuntimeError(f"{metadata['audio']}: decoded {decoded} samples, but expected {num_samples}.")
    return embeddings, window_weights


__all__ = ["LongAudioIndex", "Moment", "format_timestamp"]
