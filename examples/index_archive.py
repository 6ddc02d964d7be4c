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
Index an archive of recordings (a folder or a manifest) for moment search with `examples/search_archive.py`.

    python examples/index_archive.py --model DIR --audio_dir recordings/ --index_dir recordings.index
    accelerate launch --num_processes 4 examples/index_archive.py --model DIR --manifest files.jsonl --index_dir IDX

Each process embeds its share of the recordings window by window; the main process then merges them into one FAISS
index (identical for any number of processes). Re-running embeds only new or changed recordings (by content hash),
drops removed ones, and resumes an interrupted run. Unreadable files are skipped and reported.
"""

import argparse
import time

from accelerate import Accelerator

from modeling_vatt import VattForContrastivePretraining
from modeling_vatt.archive import ArchiveBuilder
from modeling_vatt.feature_extraction_vatt import VattFeatureExtractor


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="folder (or Hub id) with the model and feature extractor")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--audio_dir", help="folder of recordings (searched recursively)")
    source.add_argument("--manifest", help="CSV/TSV/JSON-lines file with a column of audio paths")
    parser.add_argument("--audio_column", default="audio", help="the manifest's audio column")
    parser.add_argument("--index_dir", required=True, help="folder of the index (created)")
    parser.add_argument(
        "--faiss_factory",
        default="Flat",
        help='FAISS index: "Flat" (exact), "SQfp16" (every window in float16), or "IVF2048,SQfp16" past a million windows',
    )
    parser.add_argument("--window_seconds", type=float, default=None, help="window length (default: the model's)")
    parser.add_argument("--hop_seconds", type=float, default=None, help="hop between windows (default: the model's)")
    parser.add_argument("--batch_windows", type=int, default=8, help="windows encoded at once (bounds memory)")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bars")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    accelerator = Accelerator()
    model = VattForContrastivePretraining.from_pretrained(args.model).to(accelerator.device).eval()
    builder = ArchiveBuilder(
        model,
        VattFeatureExtractor.from_pretrained(args.model),
        args.audio_dir or args.manifest,
        args.index_dir,
        process_index=accelerator.process_index,
        num_processes=accelerator.num_processes,
        window_seconds=args.window_seconds,
        hop_seconds=args.hop_seconds,
        batch_windows=args.batch_windows,
        audio_column=args.audio_column,
    )
    began = time.perf_counter()
    builder.embed(progress=not args.no_progress and accelerator.is_main_process)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        summary = builder.merge(args.faiss_factory)
        print(f"{summary.report()}\nIndex written to {args.index_dir} in {time.perf_counter() - began:.1f} s.")
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main()
