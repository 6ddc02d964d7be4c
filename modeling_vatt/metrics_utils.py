"""Offline loading of the metric modules shipped in `modeling_vatt/metrics/` (no Hub access needed)."""

from __future__ import annotations

from pathlib import Path

METRICS_DIR = Path(__file__).parent / "metrics"


def load_retrieval_metric(**kwargs):
    """`evaluate.load` of the audio-text retrieval metric by its file path; `kwargs` go to `evaluate.load`."""
    import evaluate

    return evaluate.load(str(METRICS_DIR / "retrieval.py"), **kwargs)


def load_classification_metric(task: str = "multiclass", **kwargs):
    """`evaluate.load` of the classification metric, `task` = `"multiclass"` or `"multilabel"`."""
    import evaluate

    return evaluate.load(str(METRICS_DIR / "classification.py"), task, **kwargs)
