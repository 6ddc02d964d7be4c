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
"""A synthetic sound-class dataset (tones, noise, clicks and their captions) for the examples and tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .classification_data import with_undecoded_audio

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
