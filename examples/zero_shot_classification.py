#!/usr/bin/env python
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
Label a folder of recordings with text prompts, zero-shot, through the `zero-shot-audio-classification` pipeline of a
VATT audio-text model (`VattForContrastivePretraining` + processor folder or Hub id):

    python examples/zero_shot_classification.py --model_name_or_path outputs/vatt-cpu --audio_dir my_recordings \
        --labels "a lecture about exceptions" "a lecture about strings" --hypothesis_template "{}"

Each file is decoded with soundfile and resampled (soxr) to the model's rate; long recordings are encoded window by
window. Prints one row per file: the best label, its probability and the runner-up. `--output_file` also writes the
full scores as JSON lines.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm
from transformers import pipeline

from modeling_vatt.audio_utils import load_audio
from modeling_vatt.classification_data import list_audio_files


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", required=True, help="A VATT audio-text model folder or Hub id.")
    parser.add_argument("--audio_dir", required=True, help="Folder of recordings (searched recursively).")
    parser.add_argument("--labels", nargs="+", required=True, help="Candidate labels.")
    parser.add_argument(
        "--hypothesis_template", default="{}", help="Prompt for each label, e.g. 'a recording of {}.' (default: '{}')."
    )
    parser.add_argument("--output_file", help="Also write every file's scores as JSON lines here.")
    parser.add_argument("--device", default=None, help="e.g. `cuda:0` (default: CPU).")
    parser.add_argument("--trust_remote_code", action="store_true", help="Use the model folder's own code.")
    args = parser.parse_args(argv)
    if len(set(args.labels)) < 2:
        parser.error("--labels needs at least two distinct labels.")
    if "{}" not in args.hypothesis_template:
        parser.error("--hypothesis_template must contain '{}' where the label goes.")
    return args


def format_table(rows: list[tuple[str, list[dict]]]) -> str:
    """A plain-text table: file, best label, its score, runner-up label and score."""
    header = ("file", "label", "score", "runner-up", "score")
    lines = [header] + [
        (name, scores[0]["label"], f"{scores[0]['score']:.3f}", scores[1]["label"], f"{scores[1]['score']:.3f}")
        for name, scores in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    rendered = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines]
    rendered.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(rendered)


def main(argv: Sequence[str] | None = None) -> list[tuple[str, list[dict]]]:
    args = parse_args(argv)
    audio_dir = Path(args.audio_dir)
    files = list_audio_files(audio_dir)
    classifier = pipeline(
        "zero-shot-audio-classification",
        model=args.model_name_or_path,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
    )
    sampling_rate = classifier.feature_extractor.sampling_rate
    rows = []
    for path in tqdm(files, desc="classifying"):
        scores = classifier(
            load_audio(path, sampling_rate),
            candidate_labels=args.labels,
            hypothesis_template=args.hypothesis_template,
        )
        rows.append((str(path.relative_to(audio_dir)), scores))
    print(format_table(rows))
    if args.output_file:
        with open(args.output_file, "w", encoding="utf-8") as handle:
            for name, scores in rows:
                handle.write(json.dumps({"file": name, "scores": scores}) + "\n")
    return rows


if __name__ == "__main__":
    main()
