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
"""Model cards (`README.md`) for saved VATT checkpoints, filled from the repository's `model_card.md` template.

    card = render_model_card(None, model_name="user/vatt-small", dataset="my-speech", training_data="...",
                             hyperparameters={"learning rate": 1e-3}, results={"validation/window/audio_to_text_R@1": 0.2})

Placeholders are `{{name}}`. `hyperparameters` and `results` may be dicts (rendered as Markdown tables; retrieval
results named `[split/][level/]audio_to_text_R@1` etc. become a retrieval table and the YAML `model-index`) or text.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

# The repository's `model_card.md`, reached through a link in the package data so that installed wheels carry a copy.
DEFAULT_TEMPLATE = Path(__file__).parent / "data" / "model_card.md"
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
RETRIEVAL_KEY = re.compile(
    r"^(?:(?P<split>[\w-]+)/)?(?:(?P<level>[\w-]+)/)?(?P<direction>audio_to_text|text_to_audio)_(?P<metric>.+)$"
)

DEFAULT_FIELDS = {
    "license": "apache-2.0",
    "model_description": (
        "A VATT audio-text model (a transformer over waveform patches and a word-level text transformer projected into "
        "one embedding space), for long-form speech: long recordings are encoded window by window."
    ),
    "training_procedure": (
        "Contrastive audio-text pretraining (VATT NCE, or MIL-NCE with several text candidates per window) on windows "
        "of long recordings paired with the words spoken inside them, with negatives gathered from every process, "
        "with `examples/run_pretraining.py` of the `vatt` package (🤗 Accelerate)."
    ),
    "hyperparameters": "",
    "results": {},
    "task_type": "zero-shot-audio-classification",
    "task_name": "Audio-text retrieval",
    "intended_use": (
        "Research on audio-text representation learning: retrieving passages of long speech recordings by text and "
        "transcripts by audio, zero-shot audio classification with text prompts, and as an initialisation for "
        "fine-tuning. Check the evaluation numbers on data like yours before relying on it."
    ),
    "limitations": (
        "Trained on the data described above only: models trained on the embedded corpus have heard synthetic "
        "(espeak-ng) English read from technical documentation and will not transfer to natural speech, other "
        "languages or other topics without further training. The word vocabulary is closed (unknown words map to "
        "`<unk>`). Retrieval scores depend strongly on the number of candidates; compare them with the chance levels "
        "given. Not for speaker identification, surveillance or decisions about people."
    ),
}


def markdown_table(rows: dict[str, Any], header: tuple[str, str] = ("setting", "value")) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "| --- | --- |"]
    lines += [f"| {key} | {_format(value)} |" for key, value in rows.items()]
    return "\n".join(lines)


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _retrieval_groups(results: dict[str, float]) -> tuple[dict[tuple[str, str, str], dict[str, float]], dict]:
    """Splits results into retrieval groups keyed by (split, level, direction) and other metrics."""
    groups, others = {}, {}
    for key, value in results.items():
        match = RETRIEVAL_KEY.match(key)
        if match is None:
            others[key] = value
            continue
        group = (match["split"] or "", match["level"] or "", match["direction"])
        groups.setdefault(group, {})[match["metric"]] = value
    return groups, others


def results_table(results: dict[str, float]) -> str:
    """Markdown tables: R@1/5/10 (chance) and median rank per split, level and direction; then any other metric."""
    groups, others = _retrieval_groups(results)
    parts = []
    if groups:
        lines = [
            "| split | level | direction | items | R@1 | R@5 | R@10 | median rank |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for (split, level, direction), scores in groups.items():
            cells = []
            for k in (1, 5, 10):
                value, chance = scores.get(f"R@{k}"), scores.get(f"chance_R@{k}")
                low, high = scores.get(f"R@{k}_low"), scores.get(f"R@{k}_high")
                cell = "-" if value is None else f"{value:.3f}" + ("" if chance is None else f" ({chance:.3f})")
                cells.append(cell + ("" if value is None or low is None else f" [{low:.3f}, {high:.3f}]"))
            median, items = scores.get("median_rank"), scores.get("items")
            row = [split, level, direction.replace("_to_", " → "), "-" if items is None else f"{items:g}", *cells]
            lines.append("| " + " | ".join([*row, "-" if median is None else f"{median:g}"]) + " |")
        parts.append("\n".join(lines))
        if any("R@1_low" in scores for scores in groups.values()):
            parts.append("Chance level in parentheses; 95 % Wilson interval in brackets, over `items` queries.")
    if others:
        parts.append(markdown_table(others, ("metric", "value")))
    return "\n\n".join(parts) if parts else "No evaluation results were recorded."


def model_index_results(results: dict[str, float], dataset: str, task_type: str, task_name: str) -> str:
    """The `results:` list of the YAML `model-index` (one entry per split), indented for the template."""
    groups, others = _retrieval_groups(results)
    by_split: dict[str, list[tuple[str, str, float]]] = {}
    for (split, level, direction), scores in groups.items():
        for metric, value in scores.items():
            if re.fullmatch(r"R@\d+", metric):
                name = " ".join(part for part in (level, direction.replace("_to_", "->"), metric) if part)
                by_split.setdefault(split or "test", []).append((f"recall_at_{metric[2:]}", name, value))
    for key, value in others.items():
        if isinstance(value, (int, float)):
            split, _, name = key.rpartition("/")
            by_split.setdefault(split or "test", []).append((name, key, value))
    if not by_split:
        return "  []"
    lines = []
    for split, metrics in by_split.items():
        lines += [
            "  - task:",
            f"      type: {task_type}",
            f"      name: {task_name}",
            "    dataset:",
            f"      type: {dataset}",
            f"      name: {dataset}",
            f"      split: {split}",
            "    metrics:",
        ]
        for metric_type, name, value in metrics:
            lines += [f"    - type: {metric_type}", f"      name: {name}", f"      value: {float(value):.6g}"]
    return "\n".join(lines)


SETTING_SOURCES = {
    "checkpoint": "Read from the checkpoint (variable shapes)",
    "original config": "From the original config (`--original_config`)",
    "command line": "Given on the command line",
    "assumed": "Assumed: not stored in the checkpoint, the released defaults",
}


def setting_sources(groups: dict[str, dict[str, Any]]) -> str:
    """Markdown list of a converted model's settings by source (`{"checkpoint": {name: value}, "assumed": ...}`)."""
    lines = ["Where each setting of the converted model came from:", ""]
    for source, title in SETTING_SOURCES.items():
        values = ", ".join(f"`{name}` = {value!r}" for name, value in groups.get(source, {}).items())
        lines.append(f"- **{title}:** {values or 'none'}")
    return "\n".join(lines)


def render_model_card(template_path: str | os.PathLike | None = None, **fields: Any) -> str:
    """
    Fills the `{{name}}` placeholders of the template (default: the repository's `model_card.md`).

    Required fields: `model_name`, `dataset`, `training_data`. `model_id` defaults to `model_name`; `hyperparameters`
    and `results` may be dicts or text; `license`, `model_description`, `intended_use`, `limitations`, `task_type` and
    `task_name`, `training_procedure` have defaults. Raises `ValueError` naming any placeholder left without a value.
    """
    path = Path(template_path) if template_path is not None else DEFAULT_TEMPLATE
    if not path.is_file():
        raise ValueError(f"Model card template {path} not found; pass `template_path`.")
    values = {**DEFAULT_FIELDS, **fields}
    values.setdefault("model_id", values.get("model_name"))
    results = values["results"]
    if isinstance(results, dict):
        dataset = values.get("dataset", "")
        index = model_index_results(results, dataset, values["task_type"], values["task_name"])
        values.setdefault("model_index_results", index)
        values["results"] = results_table(results)
    hyperparameters = values.get("hyperparameters")
    if isinstance(hyperparameters, dict):
        values["hyperparameters"] = markdown_table(hyperparameters)
    template = path.read_text(encoding="utf-8")
    missing = sorted({name for name in PLACEHOLDER.findall(template) if values.get(name) is None})
    if missing:
        raise ValueError(f"The model card needs values for {missing}.")
    return PLACEHOLDER.sub(lambda match: str(values[match[1]]), template)


__all__ = ["render_model_card", "results_table", "markdown_table", "setting_sources"]
