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
Find the moments of a long recording that match text queries.

    python examples/search_long_audio.py --model DIR --audio lecture.flac --query "the speaker thanks the audience" \
        [--query ...] [--top_k 5] [--cache_dir ~/.cache/vatt-index]

The recording is embedded window by window once (streamed from disk, with a progress bar); with `--cache_dir` the
embeddings are stored there and reused by later runs on the same file and model.
"""

import argparse
import time

import torch

from modeling_vatt import VattForContrastivePretraining
from modeling_vatt.feature_extraction_vatt import VattFeatureExtractor
from modeling_vatt.moment_search import LongAudioIndex, format_timestamp
from modeling_vatt.tokenization_vatt import VattTokenizer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", required=True, help="folder (or Hub id) with the model, feature extractor, tokenizer"
    )
    parser.add_argument("--audio", required=True, help="audio file (any format libsndfile reads)")
    parser.add_argument("--query", action="append", required=True, help="text query; repeat for several")
    parser.add_argument("--top_k", type=int, default=5, help="moments per query")
    parser.add_argument("--cache_dir", default=None, help="folder where window embeddings are cached")
    parser.add_argument("--window_seconds", type=float, default=None, help="window length (default: the model's)")
    parser.add_argument("--hop_seconds", type=float, default=None, help="hop between windows (default: the model's)")
    parser.add_argument("--batch_windows", type=int, default=8, help="windows encoded at once (bounds memory)")
    parser.add_argument("--no_merge", action="store_true", help="do not merge adjacent top windows into one moment")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    model = VattForContrastivePretraining.from_pretrained(args.model).to(args.device).eval()
    feature_extractor = VattFeatureExtractor.from_pretrained(args.model)
    tokenizer = VattTokenizer.from_pretrained(args.model)

    began = time.perf_counter()
    index = LongAudioIndex.build(
        model,
        feature_extractor,
        args.audio,
        window_seconds=args.window_seconds,
        hop_seconds=args.hop_seconds,
        batch_windows=args.batch_windows,
        cache_dir=args.cache_dir,
    )
    elapsed = time.perf_counter() - began
    window = index.metadata["window_length"] * index.metadata["patch_size"] / index.metadata["sampling_rate"]
    hop = index.metadata["hop_length"] * index.metadata["patch_size"] / index.metadata["sampling_rate"]
    how = "reused the cached embeddings" if index.from_cache else f"embedded in {elapsed:.1f} s"
    print(
        f"{args.audio}: {format_timestamp(index.duration)}, {len(index)} windows of {window:.3f} s "
        f"(hop {hop:.3f} s); {how}."
    )

    for query, moments in zip(args.query, index.search(model, tokenizer, args.query, args.top_k, not args.no_merge)):
        print(f"\nQuery: {query!r}")
        for rank, moment in enumerate(moments, start=1):
            print(
                f"  {rank}. {format_timestamp(moment.start)} - {format_timestamp(moment.end)}  "
                f"score {moment.score:+.4f}  ({len(moment.window_indices)} window(s))"
            )


if __name__ == "__main__":
    main()
