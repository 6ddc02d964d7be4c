"""Classification metrics as the VATT paper reports them, loadable offline with
`evaluate.load("<path>/classification.py", "multiclass" | "multilabel")`. Self-contained (numpy only).

- `multiclass`: top-1 and top-5 accuracy and macro-F1 from class-score rows and integer labels.
- `multilabel`: mAP (mean over classes of average precision), macro ROC AUC and d-prime (AudioSet style) from
  class-score rows and multi-hot label rows. Classes without both a positive and a negative example are left out.
"""

from __future__ import annotations

from statistics import NormalDist

import datasets
import evaluate
import numpy as np

_DESCRIPTION = __doc__

_INPUTS = """
Args:
    predictions (`list[list[float]]`): one row of class scores (logits or probabilities) per example.
    references: `multiclass`: the integer label of each example; `multilabel`: a multi-hot 0/1 row per example.
Returns:
    `multiclass`: `accuracy`, `top5_accuracy`, `macro_f1`. `multilabel`: `mAP`, `AUC`, `d_prime`,
    `num_scored_classes`.
"""


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the precision-recall step curve: sum over score thresholds of (recall gain) x precision; tied
    scores form one threshold."""
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order].astype(np.float64)
    last_of_tie = np.r_[scores[1:] != scores[:-1], True]
    true_positives = np.cumsum(labels)[last_of_tie]
    predicted_positives = (np.arange(len(scores)) + 1)[last_of_tie]
    recall = true_positives / labels.sum()
    precision = true_positives / predicted_positives
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a random positive outscores a random negative (ties count one half), via average ranks."""
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    average_rank = (np.cumsum(counts) - (counts - 1) / 2)[inverse]
    positives = labels.astype(bool)
    num_positive, num_negative = positives.sum(), (~positives).sum()
    return float(
        (average_rank[positives].sum() - num_positive * (num_positive + 1) / 2) / (num_positive * num_negative)
    )


def multiclass_scores(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    predicted = scores.argmax(axis=1)
    top5 = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    f1_per_class = []
    for label in np.union1d(labels, predicted):
        true_positive = np.sum((predicted == label) & (labels == label))
        support_plus_predicted = np.sum(predicted == label) + np.sum(labels == label)
        f1_per_class.append(2 * true_positive / support_plus_predicted)
    return {
        "accuracy": float(np.mean(predicted == labels)),
        "top5_accuracy": float(np.mean((top5 == labels[:, None]).any(axis=1))),
        "macro_f1": float(np.mean(f1_per_class)),
    }


def multilabel_scores(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    positives = labels.sum(axis=0)
    scored = np.flatnonzero((positives > 0) & (positives < labels.shape[0]))
    if scored.size == 0:
        raise ValueError("No class has both positive and negative examples; mAP and AUC are undefined.")
    mean_ap = np.mean([average_precision(scores[:, c], labels[:, c]) for c in scored])
    auc = float(np.mean([roc_auc(scores[:, c], labels[:, c]) for c in scored]))
    d_prime = np.sqrt(2) * NormalDist().inv_cdf(min(max(auc, 1e-12), 1 - 1e-12))
    return {"mAP": float(mean_ap), "AUC": auc, "d_prime": float(d_prime), "num_scored_classes": int(scored.size)}


class Classification(evaluate.Metric):
    """Accuracy / macro-F1 (`multiclass`) or mAP / AUC / d-prime (`multilabel`)."""

    @property
    def task(self) -> str:
        """`multiclass` (also for the default config) or `multilabel`."""
        return "multiclass" if self.config_name == "default" else self.config_name

    def _info(self) -> evaluate.MetricInfo:
        if self.task not in ("multiclass", "multilabel"):
            raise ValueError(f"config_name must be 'multiclass' or 'multilabel', got {self.config_name!r}.")
        row = datasets.Sequence(datasets.Value("float64"))
        label = datasets.Value("int64") if self.task == "multiclass" else datasets.Sequence(datasets.Value("int64"))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features({"predictions": row, "references": label}),
        )

    def _compute(self, predictions, references) -> dict[str, float]:
        scores = np.asarray(predictions, dtype=np.float64)
        labels = np.asarray(references, dtype=np.int64)
        if scores.ndim != 2 or len(scores) != len(labels):
            raise ValueError(f"Expected one score row per reference, got scores {scores.shape}, {len(labels)} labels.")
        if self.task == "multiclass":
            if labels.min() < 0 or labels.max() >= scores.shape[1]:
                raise ValueError(f"Labels must lie in [0, {scores.shape[1]}), got {labels.min()}..{labels.max()}.")
            return multiclass_scores(scores, labels)
        if labels.shape != scores.shape or not np.isin(labels, (0, 1)).all():
            raise ValueError(f"Multi-label references must be 0/1 rows shaped like the scores {scores.shape}.")
        return multilabel_scores(scores, labels)
