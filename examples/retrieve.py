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
Index a folder of recordings with a VATT audio-text model and search it by text, or find the recordings most similar
to a given one:

    python examples/retrieve.py --model_name_or_path outputs/vatt-cpu --audio_dir my_recordings \
        --text "a passage about exceptions" --top_k 5
    python examples/retrieve.py --model_name_or_path outputs/vatt-cpu --audio_dir my_recordings \
        --similar_to my_recordings/talk_03.flac

The embeddings (projected, L2-normalised) are cached in `--index_dir` (default `<audio_dir>/.vatt_index`) per model;
only new or changed files (by size and modification time) are encoded on later runs; files that do not decode are
skipped and counted. Long recordings are encoded window by window and pooled. To find moments inside recordings
rather than whole recordings, use `examples/index_archive.py` and `examples/search_archive.py`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import AutoFeatureExtractor, AutoModel, AutoTokenizer

from modeling_vatt.classification_data import list_audio_files
from modeling_vatt.embedding_cache import (
    CorruptCacheError,
    ensure_writable,
    load_arrays,
    model_fingerprint,
    save_arrays,
)
from modeling_vatt.moment_search import embed_queries
from modeling_vatt.speech_data import AudioDecodeError, SkipCounter, decode_audio


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", required=True, help="A VATT audio-text model folder or Hub id.")
    parser.add_argument("--audio_dir", required=True, help="Folder of recordings to index (searched recursively).")
    parser.add_argument("--text", nargs="+", default=[], help="Text queries.")
    parser.add_argument("--similar_to", nargs="+", default=[], help="Recordings to find similar recordings for.")
    parser.add_argument("--top_k", type=int, default=5)
    parser.add_argument("--index_dir", help="Embedding cache (default: <audio_dir>/.vatt_index).")
    parser.add_argument("--batch_size", type=int, default=4, help="Recordings encoded at once.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--trust_remote_code", action="store_true", help="Use the model folder's own code.")
    args = parser.parse_args(argv)
    if not args.text and not args.similar_to:
        parser.error("Give --text queries, --similar_to recordings or both.")
    if args.top_k < 1 or args.batch_size < 1:
        parser.error("--top_k and --batch_size must be at least 1.")
    return args


class AudioIndex:
    """
    L2-normalised audio embeddings of the files of a folder, cached per model in one checksummed file (names, change
    stamps and embeddings together, so they can never disagree). Unreadable files are skipped and counted.
    """

    def __init__(self, model, feature_extractor, audio_dir: Path, index_dir: Path, batch_size: int):
        self.model = model
        self.feature_extractor = feature_extractor
        self.audio_dir = audio_dir
        self.batch_size = batch_size
        self.fingerprint = model_fingerprint(model)
        self.path = ensure_writable(index_dir) / f"recordings-{self.fingerprint[:16]}.safetensors"
        self.skips = SkipCounter()

    @staticmethod
    def _stamp(path: Path) -> list[int]:
        stat = path.stat()
        return [stat.st_size, stat.st_mtime_ns]

    @torch.no_grad()
    def embed(self, paths: list[Path], progress: bool = True) -> dict[Path, torch.Tensor]:
        """Embeddings `(projection_dim,)` of the audio files that decode; the others are counted in `skips`."""
        rate = self.feature_extractor.sampling_rate
        embeddings = {}
        for start in tqdm(range(0, len(paths), self.batch_size), desc="indexing", disable=not progress):
            audio = {}
            for path in paths[start : start + self.batch_size]:
                try:
                    audio[path] = decode_audio(path, rate)
                except AudioDecodeError as error:
                    self.skips.add(error.reason, str(path))
            if audio:
                inputs = self.feature_extractor(list(audio.values()), sampling_rate=rate, return_tensors="pt")
                output = self.model.get_audio_features(**inputs.to(self.model.device)).pooler_output
                embeddings.update(zip(audio, F.normalize(output.float().cpu(), dim=-1)))
        return embeddings

    def build(self) -> tuple[list[str], torch.Tensor]:
        """The index of every readable file in the folder, reusing cached embeddings of unchanged files."""
        files = list_audio_files(self.audio_dir)
        names = [str(path.relative_to(self.audio_dir)) for path in files]
        stamps = [self._stamp(path) for path in files]
        cached = {}
        if self.path.is_file():
            try:
                arrays, metadata = load_arrays(self.path, {"model_fingerprint": self.fingerprint})
                cached = dict(zip(map(tuple, metadata["entries"]), torch.from_numpy(arrays["embeddings"])))
            except CorruptCacheError as error:
                print(f"{error} Rebuilding it.")
        keys = [(name, *stamp) for name, stamp in zip(names, stamps)]
        missing = [path for path, key in zip(files, keys) if key not in cached]
        fresh = self.embed(missing) if missing else {}
        kept = [(key, fresh.get(path, cached.get(key))) for path, key in zip(files, keys)]
        kept = [(key, vector) for key, vector in kept if vector is not None]
        if not kept:
            raise ValueError(f"No readable recordings in {self.audio_dir}. {self.skips.report()}")
        embeddings = torch.stack([vector for _, vector in kept])
        if fresh or len(cached) != len(kept):
            metadata = {"model_fingerprint": self.fingerprint, "entries": [key for key, _ in kept]}
            save_arrays(self.path, {"embeddings": embeddings.numpy()}, metadata)
        encoded = len(kept) - sum(key in cached for key, _ in kept)
        print(f"Indexed {len(kept)} recordings ({encoded} encoded, {len(kept) - encoded} from the cache).")
        if self.skips.total:
            print(self.skips.report())
        return [key[0] for key, _ in kept], embeddings


def rank(query: torch.Tensor, names: list[str], embeddings: torch.Tensor, top_k: int, exclude: str | None = None):
    """The `top_k` (name, cosine similarity) pairs closest to `query`, best first."""
    scores = embeddings @ query
    order = [i for i in scores.argsort(descending=True).tolist() if names[i] != exclude]
    return [(names[i], float(scores[i])) for i in order[:top_k]]


def print_results(title: str, results: list[tuple[str, float]]) -> None:
    print(f"\n{title}")
    for position, (name, score) in enumerate(results, start=1):
        print(f"  {position:>3}. {score:+.3f}  {name}")


def main(argv: Sequence[str] | None = None) -> dict[str, list[tuple[str, float]]]:
    args = parse_args(argv)
    audio_dir = Path(args.audio_dir)
    remote = {"trust_remote_code": args.trust_remote_code}
    model = AutoModel.from_pretrained(args.model_name_or_path, **remote).to(args.device).eval()
    if not hasattr(model, "get_audio_features") or not hasattr(model, "get_text_features"):
        raise ValueError(f"{args.model_name_or_path} is not a VATT audio-text model ({type(model).__name__}).")
    feature_extractor = AutoFeatureExtractor.from_pretrained(args.model_name_or_path, **remote)
    index_dir = Path(args.index_dir) if args.index_dir else audio_dir / ".vatt_index"
    index = AudioIndex(model, feature_extractor, audio_dir, index_dir, args.batch_size)
    names, embeddings = index.build()
    top_k = min(args.top_k, len(names))

    results = {}
    if args.text:
        tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path, **remote)
        for text, query in zip(args.text, torch.from_numpy(embed_queries(model, tokenizer, args.text))):
            results[text] = rank(query, names, embeddings, top_k)
            print_results(f"text: {text!r}", results[text])
    for reference in args.similar_to:
        path = Path(reference)
        if not path.is_file():
            raise ValueError(f"--similar_to: {path} is not a file.")
        inside = path.resolve().is_relative_to(audio_dir.resolve())
        name = str(path.resolve().relative_to(audio_dir.resolve())) if inside else None
        query = embeddings[names.index(name)] if name in names else index.embed([path], progress=False).get(path)
        if query is None:
            raise ValueError(f"--similar_to: {path} is not readable audio.")
        results[reference] = rank(query, names, embeddings, top_k, exclude=name)
        print_results(f"similar to: {reference}", results[reference])
    return results


if __name__ == "__main__":
    main()
