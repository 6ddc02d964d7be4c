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
`make demo`: pretrain a small VATT on the embedded long-form corpus on CPU (about 10 minutes on 2 cores), print the
retrieval table against chance, then reload the checkpoint with `AutoModel`/`AutoProcessor` and find spoken held-out
passages by their text.

    python examples/demo.py [--output_dir outputs/vatt-demo] [--max_train_steps N]
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_pretraining  # noqa: E402

from modeling_vatt.voice_evaluation import EVALUATION_SETS, format_voice_table  # noqa: E402

# Tuned for two CPU cores; see docs/training.md for the measured results.
DEMO_TRAINING_ARGS = [
    "--model_preset",
    "cpu",
    "--per_device_train_batch_size",
    "64",
    "--learning_rate",
    "5e-4",
    "--logging_steps",
    "25",
]
NUM_QUERIES = 8
TARGET_TIMES_CHANCE = 5  # the quality target: held-out audio->text R@1 at least 5x chance
# Voices never heard in training (held-out passages): audio->text R@1 targets per level, in multiples of chance.
HELDOUT_VOICE_TARGETS = {"window": 5, "recording": 3}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--output_dir", default="outputs/vatt-demo")
    parser.add_argument("--corpus_dir", default=None, help="Where the corpus is rendered (default: ~/.cache/vatt).")
    parser.add_argument("--max_train_steps", type=int, default=700)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def spoken_passages(corpus_dir: Path, sampling_rate: int, window_seconds: float, count: int):
    """One window from the middle of each of the first `count` test recordings, with the words spoken in it."""
    from datasets import load_from_disk

    from modeling_vatt.pretraining_pairs import LongFormPairSampler
    from modeling_vatt.speech_data import decode_audio

    test = load_from_disk(str(corpus_dir / "dataset"))["test"]
    sampler = LongFormPairSampler(window_samples=int(window_seconds * sampling_rate), sampling_rate=sampling_rate)
    passages = []
    for example in test.select(range(min(count, test.num_rows))):
        audio = decode_audio(example["audio"], sampling_rate)
        start = max(0, len(audio) // 2 - sampler.window_samples // 2)
        pair = sampler.pair_at(
            audio, start, example["text"], example["words"], example["word_starts"], example["word_ends"]
        )
        passages.append((example["id"], pair.input_values, pair.texts[0]))
    return passages


def zero_shot_retrieval(output_dir: Path, corpus_dir: Path) -> None:
    """Reload the saved checkpoint with the Auto classes and rank spoken held-out passages for each text query."""
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(output_dir).eval()
    processor = AutoProcessor.from_pretrained(output_dir)
    rate = processor.feature_extractor.sampling_rate
    window_seconds = model.config.audio_config.window_length * model.config.audio_config.patch_size / rate
    passages = spoken_passages(corpus_dir, rate, window_seconds, NUM_QUERIES)
    ids, audio, texts = zip(*passages)
    inputs = processor(text=list(texts), audio=list(audio), sampling_rate=rate, return_tensors="pt")
    with torch.no_grad():
        scores = model(**inputs).logits_per_text.softmax(-1).numpy()  # text query -> spoken passages
    print(
        f"\nZero-shot retrieval of {len(ids)} spoken held-out passages by text (reloaded with AutoModel/AutoProcessor)"
    )
    print(f"{'query (words spoken in the clip)':<62}{'best match':>14}{'p':>7}{'rank of true':>14}")
    hits = 0
    for row, text in enumerate(texts):
        best = int(scores[row].argmax())
        rank = 1 + int((scores[row] > scores[row, row]).sum())
        hits += best == row
        query = text if len(text) <= 58 else text[:55] + "..."
        print(f"{query:<62}{ids[best]:>14}{scores[row, best]:>7.2f}{rank:>14}")
    print(f"top-1 accuracy {hits}/{len(ids)} = {hits / len(ids):.2f} (chance {1 / len(ids):.2f})")


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    corpus_dir = Path(args.corpus_dir) if args.corpus_dir else run_pretraining.default_corpus_dir("default")
    from modeling_vatt.corpus import build_corpus

    print(f"Embedded long-form corpus in {corpus_dir} (rendered with espeak-ng on first use)")
    build_corpus(corpus_dir, size="default")
    training_args = [
        *DEMO_TRAINING_ARGS,
        "--corpus_dir",
        str(corpus_dir),
        "--output_dir",
        args.output_dir,
        "--max_train_steps",
        str(args.max_train_steps),
        "--seed",
        str(args.seed),
        "--checkpointing_steps",
        str(max(args.max_train_steps // 2, 1)),
        "--checkpoints_total_limit",
        "1",
        "--overwrite_output_dir",  # a rerun replaces the previous demo run
    ]
    final = run_pretraining.main(training_args)
    output_dir = Path(args.output_dir)
    for split in ("validation", "test"):
        results = {key.split("/", 1)[1]: value for key, value in final.items() if key.startswith(f"{split}/")}
        print("\n" + run_pretraining.format_retrieval_table(results, f"Held-out {split} split, audio-text retrieval"))
    print()
    targets = [
        (split, level, TARGET_TIMES_CHANCE) for split in ("test", "validation") for level in ("recording", "window")
    ]
    targets += [("heldout_voices", level, target) for level, target in HELDOUT_VOICE_TARGETS.items()]
    for split, level, target in targets:
        key = f"{split}/{level}/audio_to_text_R@1"
        if key not in final:
            continue
        r1, chance = final[key], final[f"{split}/{level}/audio_to_text_chance_R@1"]
        verdict = "meets" if r1 >= target * chance else "misses"
        interval = f" [95% CI {final[f'{key}_low']:.3f}-{final[f'{key}_high']:.3f}]" if f"{key}_low" in final else ""
        print(
            f"{split} {level}-level audio->text R@1 = {r1:.3f}{interval}: {r1 / chance:.1f}x chance ({chance:.4f}), "
            f"{verdict} the {target}x target."
        )
    voice_sets = [name for name in EVALUATION_SETS if f"{name}/window/audio_to_text_R@1" in final]
    if voice_sets:
        print("\nHeld-out passages across voices (Wilson 95% intervals)\n" + format_voice_table(final, voice_sets))
    print(f"Checkpoint, model card and plots: {output_dir} (loss_curve.png, similarity_matrix.png)")
    zero_shot_retrieval(output_dir, corpus_dir)
    print(f"\nDemo wall time: {(time.monotonic() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
