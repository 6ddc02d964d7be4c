"""Audio-text retrieval metric (R@K, median and mean rank in both directions), loadable offline with
`evaluate.load("<path>/retrieval.py")`. Self-contained: `evaluate` copies this file alone into its module cache."""

from __future__ import annotations

import math

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Recall at K and median/mean rank for audio->text and text->audio retrieval from an audio-by-text similarity matrix.
Each query's rank is 1 + the number of wrong candidates scoring at least as high as its best correct candidate (ties
count against the query, so a collapsed model with constant scores cannot score well). Chance levels of R@K for a
random ranking are reported alongside.
"""

_INPUTS = """
Args:
    predictions (`list[list[float]]`): one row per audio, the similarity of that audio to every text (N_audio x
        N_text).
    references (`list[int]` or `list[list[int]]`): for each audio, the index (or indices, when several texts are
        correct) of its correct text column(s). For text->audio retrieval, the correct audios of text j are the rows
        that list j; texts no audio lists are left out of the text->audio scores.
    ks (`list[int]`, *optional*, defaults to `[1, 5, 10]`): the K of R@K.
Returns:
    `audio_to_text_R@K`, `audio_to_text_median_rank`, `audio_to_text_mean_rank`, `audio_to_text_chance_R@K`, and the
    same with `text_to_audio_`; ranks are 1-based, R@K are fractions in [0, 1].
Examples:
    >>> metric = evaluate.load("modeling_vatt/metrics/retrieval.py")
    >>> metric.compute(predictions=[[0.9, 0.1], [0.8, 0.3]], references=[0, 1])["audio_to_text_R@1"]
    0.5
"""


def correct_mask(references: list, num_columns: int) -> np.ndarray:
    """Boolean [N_rows, num_columns] matrix of correct columns from per-row indices or index lists."""
    mask = np.zeros((len(references), num_columns), dtype=bool)
    for row, columns in enumerate(references):
        columns = np.atleast_1d(np.asarray(columns, dtype=np.int64))
        if columns.size == 0 or columns.min() < 0 or columns.max() >= num_columns:
            raise ValueError(f"Row {row} needs correct column indices in [0, {num_columns}), got {columns.tolist()}.")
        mask[row, columns] = True
    return mask


def retrieval_ranks(similarity: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """1-based rank of each row's best correct column: 1 + wrong columns scoring >= the best correct score."""
    best_correct = np.where(correct, similarity, -np.inf).max(axis=1, keepdims=True)
    return 1 + ((similarity >= best_correct) & ~correct).sum(axis=1)


def chance_recall(correct: np.ndarray, k: int) -> float:
    """Expected R@K of a random ranking: mean over rows of 1 - C(n - c, k) / C(n, k), c correct among n."""
    num_candidates = correct.shape[1]
    k = min(k, num_candidates)  # with fewer candidates than K, every ranking recalls them all
    counts = correct.sum(axis=1)
    hits = [1 - math.comb(num_candidates - c, k) / math.comb(num_candidates, k) for c in counts]
    return float(np.mean(hits))


def retrieval_scores(similarity: np.ndarray, correct: np.ndarray, ks=(1, 5, 10)) -> dict[str, float]:
    """R@K, median and mean rank and chance R@K in both directions; `correct` is the audio x text truth matrix."""
    scores = {}
    has_audio = correct.any(axis=0)
    directions = {
        "audio_to_text": (similarity, correct),
        "text_to_audio": (similarity.T[has_audio], correct.T[has_audio]),
    }
    for name, (matrix, truth) in directions.items():
        ranks = retrieval_ranks(matrix, truth)
        for k in ks:
            scores[f"{name}_R@{k}"] = float(np.mean(ranks <= k))
        scores[f"{name}_median_rank"] = float(np.median(ranks))
        scores[f"{name}_mean_rank"] = float(np.mean(ranks))
        for k in ks:
            scores[f"{name}_chance_R@{k}"] = chance_recall(truth, k)
    return scores


class Retrieval(evaluate.Metric):
    """Audio-text retrieval metric; see the module strings for the input format."""

    def _info(self) -> evaluate.MetricInfo:
        row = datasets.Sequence(datasets.Value("float64"))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=[
                datasets.Features({"predictions": row, "references": datasets.Value("int64")}),
                datasets.Features({"predictions": row, "references": datasets.Sequence(datasets.Value("int64"))}),
            ],
        )

    def _compute(self, predictions, references, ks=(1, 5, 10)) -> dict[str, float]:
        similarity = np.asarray(predictions, dtype=np.float64)
        if similarity.ndim != 2 or similarity.shape[0] != len(references):
            raise ValueError(
                f"predictions must be one similarity row per audio (a N_audio x N_text matrix), got shape "
                f"{similarity.shape} for {len(references)} references."
            )
        return retrieval_scores(similarity, correct_mask(references, similarity.shape[1]), ks)
