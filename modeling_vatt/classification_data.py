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
"""Audio classification datasets (not used by the model files): label schemas, undecoded audio columns, audio
folders and the collator that turns rows into model batches."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .speech_data import AUDIO_EXTENSIONS, decode_audio


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
