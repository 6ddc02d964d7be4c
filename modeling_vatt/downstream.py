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
"""Downstream helpers (not used by the model files): label schemas and batches for audio classification datasets,
a disk cache of frozen-backbone features, linear probing of [`VattForAudioClassification`] on those features and
classification metrics through the shipped `evaluate` modules."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import AUDIO_EXTENSIONS, decode_audio
from .embedding_cache import cached_arrays, ensure_writable, hash_json, model_fingerprint
from .metrics_utils import load_classification_metric

# ----------------------------------------------------------------------------------------------------------------------
# Labels and datasets
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class LabelSchema:
    """Class names and whether an example carries one label (`multi_label=False`) or a list of labels."""

    names: list[str]
    multi_label: bool

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: index for index, name in enumerate(self.names)}

    @property
    def problem_type(self) -> str:
        return "multi_label_classification" if self.multi_label else "single_label_classification"

    def _index(self, value) -> int:
        if isinstance(value, str):
            if value not in self.label2id:
                raise ValueError(f"Unknown label {value!r}; known labels: {self.names}.")
            return self.label2id[value]
        index = int(value)
        if not 0 <= index < len(self.names):
            raise ValueError(f"Label id {index} is outside [0, {len(self.names)}).")
        return index

    def encode(self, value) -> int | list[float]:
        """A class index (single-label) or a multi-hot row (multi-label) for one example's label value."""
        if not self.multi_label:
            return self._index(value)
        row = [0.0] * len(self.names)
        for item in value:
            row[self._index(item)] = 1.0
        return row


def label_schema(datasets_: Iterable, label_column: str) -> LabelSchema:
    """
    The label schema of `label_column` over one or more `datasets.Dataset` splits: names from a `ClassLabel` feature
    (or a list of `ClassLabel`), else the sorted distinct values. A list-valued column means multi-label.
    """
    from datasets import ClassLabel

    datasets_ = list(datasets_)
    for dataset in datasets_:
        if label_column not in dataset.column_names:
            raise ValueError(f"No label column {label_column!r}; the data has the columns {dataset.column_names}.")
    feature = datasets_[0].features[label_column]
    inner = getattr(feature, "feature", None)
    multi_label = inner is not None
    class_label = inner if multi_label else feature
    if isinstance(class_label, ClassLabel):
        return LabelSchema(list(class_label.names), multi_label)
    values = set()
    for dataset in datasets_:
        for value in dataset[label_column]:
            if multi_label != isinstance(value, (list, tuple)):
                raise ValueError(f"Column {label_column!r} mixes single labels and label lists.")
            values.update(value if multi_label else [value])
    if not values:
        raise ValueError(f"Column {label_column!r} holds no labels.")
    kinds = {type(value) for value in values}
    if kinds <= {int, np.int64}:
        highest = max(int(value) for value in values)
        if min(int(value) for value in values) < 0:
            raise ValueError(f"Integer labels in {label_column!r} must be non-negative.")
        return LabelSchema([str(index) for index in range(highest + 1)], multi_label)
    if kinds != {str}:
        raise TypeError(
            f"Labels in {label_column!r} must be strings or integers, got {sorted(k.__name__ for k in kinds)}."
        )
    return LabelSchema(sorted(values), multi_label)


def with_undecoded_audio(dataset, audio_column: str):
    """`dataset` with `audio_column` as `Audio(decode=False)` (file bytes or paths; decoded later by soundfile)."""
    from datasets import Audio

    if audio_column not in dataset.column_names:
        raise ValueError(f"No audio column {audio_column!r}; the data has the columns {dataset.column_names}.")
    feature = dataset.features[audio_column]
    if isinstance(feature, Audio) and not feature.decode:
        return dataset
    if not isinstance(feature, Audio) and getattr(feature, "dtype", None) != "string":
        raise TypeError(f"Column {audio_column!r} must be an Audio feature or file paths, got {feature}.")
    return dataset.cast_column(audio_column, Audio(decode=False))


class ClassificationCollator:
    """
    Decodes a list of dataset rows into model inputs: `input_values`, `audio_attention_mask` and `labels`.

    Args:
        feature_extractor: the model's [`VattFeatureExtractor`].
        schema: the [`LabelSchema`] of `label_column`.
        audio_column, label_column: column names.
        max_length: optional clip length in samples; longer clips are cropped (`crop`) to it.
        crop: `"random"` (training), `"center"` or None (keep the whole clip, e.g. for windowed evaluation).
        seed: seed of the random crops.
    """

    def __init__(
        self,
        feature_extractor,
        schema: LabelSchema,
        audio_column: str = "audio",
        label_column: str = "label",
        max_length: int | None = None,
        crop: str | None = None,
        seed: int = 0,
    ):
        self.feature_extractor = feature_extractor
        self.schema = schema
        self.audio_column = audio_column
        self.label_column = label_column
        self.max_length = max_length
        self.crop = crop if max_length is not None else None
        self.generator = np.random.default_rng(seed)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        sampling_rate = self.feature_extractor.sampling_rate
        audio = [decode_audio(row[self.audio_column], sampling_rate) for row in rows]
        batch = self.feature_extractor(
            audio,
            sampling_rate=sampling_rate,
            max_length=self.max_length,
            crop=self.crop,
            generator=self.generator,
            return_tensors="pt",
        )
        labels = [self.schema.encode(row[self.label_column]) for row in rows]
        batch["labels"] = torch.tensor(labels, dtype=torch.float32 if self.schema.multi_label else torch.long)
        return dict(batch)


def list_audio_files(folder: str | os.PathLike) -> list[Path]:
    """Audio files under `folder` (recursively, by extension), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder.")
    files = sorted(path for path in folder.rglob("*") if path.is_file() and path.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise ValueError(f"No audio files ({', '.join(AUDIO_EXTENSIONS)}) under {folder}.")
    return files


# ----------------------------------------------------------------------------------------------------------------------
# Frozen-backbone features and their disk cache
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class WindowFeatures:
    """
    Pooled audio-tower outputs of `N` recordings: `features` `(N, windows, hidden)` and `mask` `(N, windows)`, the
    real-content share of each window (one window of share 1 for recordings encoded at once).
    """

    features: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return self.features.shape[0]

    def __getitem__(self, index) -> WindowFeatures:
        return WindowFeatures(self.features[index], self.mask[index])

    @classmethod
    def concatenate(cls, parts: list[WindowFeatures]) -> WindowFeatures:
        """Stack parts along the recordings, padding the window axis with empty (mask 0) windows."""
        if not parts:
            raise ValueError("No features to concatenate.")
        windows = max(part.features.shape[1] for part in parts)
        features = [F.pad(part.features, (0, 0, 0, windows - part.features.shape[1])) for part in parts]
        masks = [F.pad(part.mask, (0, windows - part.mask.shape[1])) for part in parts]
        return cls(torch.cat(features), torch.cat(masks))

    def arrays(self) -> dict[str, np.ndarray]:
        """The features and mask as float32 arrays (what the embedding cache stores)."""
        return {"features": self.features.float().numpy(), "mask": self.mask.float().numpy()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> WindowFeatures:
        return cls(torch.from_numpy(arrays["features"]), torch.from_numpy(arrays["mask"]))


@torch.no_grad()
def window_features(audio_model: nn.Module, input_values: torch.Tensor, audio_attention_mask=None) -> WindowFeatures:
    """Per-window pooled outputs of one batch, from a [`VattAudioModel`] in eval mode."""
    output = audio_model(input_values=input_values, audio_attention_mask=audio_attention_mask)
    if output.window_pooler_output is None:
        pooled = output.pooler_output
        return WindowFeatures(pooled.unsqueeze(1), pooled.new_ones(pooled.shape[0], 1))
    return WindowFeatures(output.window_pooler_output, output.window_weights)


def extract_window_features(
    audio_model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    device: torch.device | str | None = None,
    gather: Callable[[WindowFeatures], WindowFeatures] | None = None,
) -> WindowFeatures:
    """
    Run the frozen audio tower (eval mode, no gradients) over `batches` (dicts with `input_values` and optionally
    `audio_attention_mask`) and return the features of every recording, on the CPU, in float32. `gather` combines a
    batch's features across processes in distributed runs.
    """
    was_training = audio_model.training
    audio_model.eval()
    device = device or next(audio_model.parameters()).device
    parts = []
    try:
        for batch in batches:
            mask = batch.get("audio_attention_mask")
            part = window_features(
                audio_model, batch["input_values"].to(device), None if mask is None else mask.to(device)
            )
            if gather is not None:
                part = gather(part)
            parts.append(WindowFeatures(part.features.float().cpu(), part.mask.float().cpu()))
    finally:
        audio_model.train(was_training)
    return WindowFeatures.concatenate(parts)


def cached_window_features(
    audio_model: nn.Module,
    compute_batches: Callable[[], Iterable[dict[str, torch.Tensor]]],
    cache_dir: str | os.PathLike,
    data_fingerprint: str,
    settings: dict[str, Any] | None = None,
    gather: Callable[[WindowFeatures], WindowFeatures] | None = None,
    write: bool = True,
) -> tuple[WindowFeatures, Path, bool]:
    """
    Features of a dataset, computed once and cached in `cache_dir` (through `embedding_cache`) under a key made of
    the model's fingerprint, the data fingerprint and the preprocessing `settings`; a corrupt cache file is rebuilt.
    Returns the features, the cache file and whether it was a hit. `write=False` (non-main processes) computes
    without writing.
    """
    if write:
        ensure_writable(cache_dir)  # before any feature is computed
    expected = {
        "model_fingerprint": model_fingerprint(audio_model),
        "data_fingerprint": data_fingerprint,
        "settings": json.loads(json.dumps(settings or {}, sort_keys=True, default=str)),
    }
    path = Path(cache_dir) / f"features-{hash_json(expected)}.safetensors"
    arrays, _, hit = cached_arrays(
        path,
        expected,
        lambda: extract_window_features(audio_model, compute_batches(), gather=gather).arrays(),
        write=write,
    )
    return WindowFeatures.from_arrays(arrays), path, hit


# ----------------------------------------------------------------------------------------------------------------------
# Linear probe
# ----------------------------------------------------------------------------------------------------------------------


def train_linear_probe(
    model,
    features: WindowFeatures,
    labels: torch.Tensor,
    num_epochs: int = 100,
    learning_rate: float = 1e-2,
    batch_size: int = 64,
    weight_decay: float = 0.0,
    seed: int = 0,
    progress: bool = False,
) -> list[float]:
    """
    Train only the head of a [`VattForAudioClassification`] on cached backbone `features` (the audio tower is frozen
    and never run), with the model's own window aggregation and loss. Returns the mean loss of each epoch.
    """
    from tqdm.auto import tqdm

    if len(features) != len(labels):
        raise ValueError(f"Got {len(features)} feature rows but {len(labels)} labels.")
    if len(features) == 0:
        raise ValueError("No training examples for the linear probe.")
    model.freeze_audio_model()
    head = model.classifier
    device = head.weight.device
    optimizer = torch.optim.AdamW(head.parameters(), lr=learning_rate, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.train()
    history = []
    try:
        for _ in tqdm(range(num_epochs), desc="linear probe", disable=not progress):
            order = torch.randperm(len(features), generator=generator)
            total = 0.0
            for batch in order.split(batch_size):
                part = features[batch]
                logits = model.classify_windows(part.features.to(device), part.mask.to(device))
                loss = model.classification_loss(logits, labels[batch].to(device))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item() * len(batch)
            history.append(total / len(features))
    finally:
        model.train(was_training)
    return history


@torch.no_grad()
def predict_from_features(model, features: WindowFeatures, batch_size: int = 256) -> torch.Tensor:
    """Logits `(N, num_labels)` of the head of `model` on cached features (eval mode)."""
    was_training = model.training
    model.eval()
    device = model.classifier.weight.device
    try:
        logits = [
            model.classify_windows(part.features.to(device), part.mask.to(device)).float().cpu()
            for part in (features[i : i + batch_size] for i in range(0, len(features), batch_size))
        ]
    finally:
        model.train(was_training)
    return torch.cat(logits)


# ----------------------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------------------


def classification_metrics(logits: torch.Tensor | np.ndarray, labels, multi_label: bool) -> dict[str, float]:
    """
    The paper's metrics from the shipped `evaluate` module: single-label data gets accuracy, top-5 accuracy (more
    than 5 classes) and macro-F1, plus mAP / AUC / d-prime over one-vs-rest class scores; multi-label data gets
    mAP / AUC / d-prime. Classes without both a positive and a negative example are left out of mAP and AUC.
    """
    scores = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    results = {}
    if not multi_label:
        multiclass = load_classification_metric("multiclass")
        results.update(multiclass.compute(predictions=scores.tolist(), references=labels.tolist()))
        if scores.shape[1] <= 5:
            del results["top5_accuracy"]  # trivially 1
        labels = np.eye(scores.shape[1], dtype=np.int64)[labels]
    positives = labels.sum(axis=0)
    if ((positives > 0) & (positives < len(labels))).any():
        multilabel = load_classification_metric("multilabel")
        results.update(multilabel.compute(predictions=scores.tolist(), references=labels.tolist()))
    return results


# ----------------------------------------------------------------------------------------------------------------------
# A synthetic sound-class dataset (for examples and tests)
# ----------------------------------------------------------------------------------------------------------------------

SOUND_CLASSES = ("low_tone", "high_tone", "noise", "clicks")
SOUND_CAPTIONS = {
    "low_tone": "a low tone",
    "high_tone": "a high tone",
    "noise": "white noise",
    "clicks": "a train of clicks",
}


def synthesize_sound(name: str, num_samples: int, sampling_rate: int, rng: np.random.Generator) -> np.ndarray:
    """One random instance of a sound class: a low (200-400 Hz) or high (2-3 kHz) tone, white noise or a click
    train (20-40 clicks per second), each with random level, frequency/rate and phase."""
    time = np.arange(num_samples) / sampling_rate
    level = rng.uniform(0.2, 0.6)
    if name in ("low_tone", "high_tone"):
        low, high = (200.0, 400.0) if name == "low_tone" else (2000.0, 3000.0)
        return level * np.sin(2 * np.pi * rng.uniform(low, high) * time + rng.uniform(0, 2 * np.pi))
    if name == "noise":
        return level * 0.5 * rng.standard_normal(num_samples)
    if name == "clicks":
        signal = np.zeros(num_samples)
        period = int(sampling_rate / rng.uniform(20, 40))
        click = np.exp(-np.arange(min(period, sampling_rate // 500)) / (sampling_rate / 4000))
        for start in range(int(rng.integers(0, period)), num_samples, period):
            end = min(start + len(click), num_samples)
            signal[start:end] += level * click[: end - start]
        return signal
    raise ValueError(f"Unknown sound class {name!r}; available: {SOUND_CLASSES}.")


def write_sound_classes_dataset(
    output_dir: str | os.PathLike,
    examples_per_class: int = 40,
    sampling_rate: int = 16000,
    duration_range: tuple[float, float] = (0.3, 0.6),
    multi_label: bool = False,
    eval_fraction: float = 0.25,
    seed: int = 0,
):
    """
    Write a labelled dataset of synthetic sounds as FLAC files under `output_dir/audio` (named
    `clip_<index>_<classes>.flac`) and a `save_to_disk` `DatasetDict` (`train`, `validation`; columns `audio`,
    `label` and `text`, a caption such as "a low tone and white noise") under `output_dir/dataset`; return the latter.

    Single-label: `examples_per_class` clips of each of `SOUND_CLASSES` (`label` is a `ClassLabel`). Multi-label:
    as many clips, each mixing a random non-empty subset of the classes (`label` is a list of class names).
    """
    import soundfile
    from datasets import ClassLabel, Dataset, DatasetDict, List

    rng = np.random.default_rng(seed)
    audio_dir = Path(output_dir) / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    num_clips = examples_per_class * len(SOUND_CLASSES)
    paths, labels, captions = [], [], []
    for index in range(num_clips):
        num_samples = int(rng.uniform(*duration_range) * sampling_rate)
        if multi_label:
            chosen = [name for name in SOUND_CLASSES if rng.random() < 0.4] or [SOUND_CLASSES[index % 4]]
        else:
            chosen = [SOUND_CLASSES[index % len(SOUND_CLASSES)]]
        signal = sum(synthesize_sound(name, num_samples, sampling_rate, rng) for name in chosen)
        signal = signal + 0.01 * rng.standard_normal(num_samples)
        path = audio_dir / f"clip_{index:04d}_{'+'.join(chosen)}.flac"
        soundfile.write(path, np.clip(signal, -1, 1).astype(np.float32), sampling_rate, subtype="PCM_16")
        paths.append(str(path))
        labels.append(chosen if multi_label else chosen[0])
        captions.append(" and ".join(SOUND_CAPTIONS[name] for name in chosen))
    label_feature = List(ClassLabel(names=list(SOUND_CLASSES))) if multi_label else ClassLabel(names=SOUND_CLASSES)
    dataset = Dataset.from_dict({"audio": paths, "label": labels, "text": captions})
    dataset = with_undecoded_audio(dataset, "audio").cast_column("label", label_feature)
    parts = dataset.train_test_split(test_size=eval_fraction, seed=seed)
    splits = DatasetDict(train=parts["train"], validation=parts["test"])
    splits.save_to_disk(str(Path(output_dir) / "dataset"))
    return splits
