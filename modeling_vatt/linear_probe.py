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
"""Linear probing of [`VattForAudioClassification`] (not used by the model files): per-window features of a frozen
audio tower, cached on disk through `embedding_cache`, and a classifier head trained on them."""

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

from .embedding_cache import cached_arrays, ensure_writable, hash_json, model_fingerprint

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
