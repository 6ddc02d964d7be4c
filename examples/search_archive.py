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
Find moments across an archive indexed by `examples/index_archive.py`, by text or by an audio clip.

    python examples/search_archive.py --model DIR --index_dir recordings.index --query "the speaker thanks the audience"
    python examples/search_archive.py --model DIR --index_dir recordings.index --audio clip.flac --top_k 10 --json

The model must be the one the index was built with.
"""

import argparse
import json
from dataclasses import asdict

import torch

from modeling_vatt import VattForContrastivePretraining
from modeling_vatt.archive import ArchiveIndex
from modeling_vatt.feature_extraction_vatt import VattFeatureExtractor
from modeling_vatt.moment_search import format_timestamp
from modeling_vatt.tokenization_vatt import VattTokenizer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", required=True, help="folder (or Hub id) with the model, feature extractor, tokenizer"
    )
    parser.add_argument("--index_dir", required=True, help="index folder written by index_archive.py")
    parser.add_argument("--query", action="append", default=[], help="text query; repeat for several")
    parser.add_argument("--audio", action="append", default=[], help="audio clip to find similar moments for")
    parser.add_argument("--top_k", type=int, default=5, help="best windows per query (adjacent ones are merged)")
    parser.add_argument("--no_merge", action="store_true", help="do not merge adjacent top windows into one moment")
    parser.add_argument("--search_parameters", default=None, help='approximate indexes: e.g. "nprobe=32"')
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if not args.query and not args.audio:
        parser.error("Give at least one --query or --audio.")
    if args.top_k < 1:
        parser.error("--top_k must be at least 1.")
    return args


def main(argv: list[str] | None = None) -> dict[str, list[dict]]:
    args = parse_args(argv)
    archive = ArchiveIndex.load(args.index_dir, args.search_parameters)
    model = VattForContrastivePretraining.from_pretrained(args.model).to(args.device).eval()
    merge = not args.no_merge
    results = {}
    if args.query:
        tokenizer = VattTokenizer.from_pretrained(args.model)
        for query, moments in zip(args.query, archive.search(model, tokenizer, args.query, args.top_k, merge)):
            results[query] = moments
    feature_extractor = VattFeatureExtractor.from_pretrained(args.model) if args.audio else None
    for clip in args.audio:
        results[clip] = archive.search_audio(model, feature_extractor, clip, top_k=args.top_k, merge_adjacent=merge)

    results = {query: [asdict(moment) for moment in moments] for query, moments in results.items()}
    if args.json:
        print(json.dumps(results, indent=2))
        return results
    for query, moments in results.items():
        print(f"\n{query!r}")
        for rank, moment in enumerate(moments, start=1):
            span = f"{format_timestamp(moment['start'])} - {format_timestamp(moment['end'])}"
            print(f"  {rank}. {moment['file']}  {span}  score {moment['score']:+.4f}")
    return results


if __name__ == "__main__":
    main()
