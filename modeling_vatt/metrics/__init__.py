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
"""The `evaluate` metric modules shipped in this folder, loaded by path (offline), and the classification metrics
reported by the downstream examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

METRICS_DIR = Path(__file__).parent


def load_retrieval_metric(**kwargs):
    """`evaluate.load` of the audio-text retrieval metric by its file path; `kwargs` go to `evaluate.load`."""
    import evaluate

    return evaluate.load(str(METRICS_DIR / "retrieval.py"), **kwargs)


def load_classification_metric(task: str = "multiclass", **kwargs):
    """`evaluate.load` of the classification metric, `task` = `"multiclass"` or `"multilabel"`."""
    import evaluate

    return evaluate.load(str(METRICS_DIR / "classification.py"), task, **kwargs)


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
