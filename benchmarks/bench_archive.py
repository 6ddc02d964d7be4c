"""
Archive search (`modeling_vatt/archive.py`): query latency, recall and memory of the FAISS index at archive scale,
indexing throughput with one and two processes, and an incremental re-run.

- **Search**: `--windows` synthetic unit vectors of the model's embedding size (1,125,000 = 1,000 hours of 3.2-s
  windows), drawn around `--clusters` random directions (cosine about 0.7 to their centre, as embeddings of similar
  moments cluster), and as many fresh queries from the same distribution. Exact search (`Flat`, float32) is the
  reference, timed as `ArchiveIndex` runs it (a BLAS matrix product over the stored vectors) and as FAISS's own flat
  scan; the others (`SQfp16`: every window scanned in float16) report recall@10 against it. Latency is per query, one query per call (median) and
  in batches of 64; memory is the serialised index size.
- **Indexing**: espeak-rendered corpus passages (real decoding, resampling to 48 kHz and encoding) indexed by
  `examples/index_archive.py` with a random-weight model of `--preset`, by one process and by two `accelerate`
  processes (1 thread each); the time is what the script reports (embedding and merging, not start-up). Then the
  one-process run again on the unchanged archive: only hashing, nothing embedded.

    python benchmarks/bench_archive.py [--quick] [--output FILE.md] [--threads N]
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import markdown_table, median, set_threads  # noqa: E402

from modeling_vatt import VattConfig, VattForContrastivePretraining  # noqa: E402
from modeling_vatt.archive import search_windows  # noqa: E402
from modeling_vatt.feature_extraction_vatt import VattFeatureExtractor  # noqa: E402

APPROXIMATE = ("SQfp16/", "IVF2048,SQfp16/nprobe=16", "IVF2048,SQfp16/nprobe=64", "IVF2048,PQ32/nprobe=64")
REPORT = re.compile(
    r"Indexed (\d+) recordings \((\d+) embedded, (\d+) reused\), (\d+) windows, (\d+):(\d\d):([\d.]+) of"
)
ELAPSED = re.compile(r"in ([\d.]+) s\.")


def synthetic_embeddings(count: int, dim: int, centres: np.ndarray, seed: int) -> np.ndarray:
    """`count` unit vectors, each a random centre plus Gaussian noise (cosine about 0.7 to it), in float32."""
    rng = np.random.default_rng(seed)
    vectors = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, 65536):
        rows = min(65536, count - start)
        chunk = centres[rng.integers(len(centres), size=rows)] + rng.standard_normal((rows, dim), dtype=np.float32)
        vectors[start : start + rows] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return vectors


def latency_ms(search: Callable[[np.ndarray], object], queries: np.ndarray, batch: int) -> float:
    """Median milliseconds per query, `batch` queries per call of `search`."""
    search(queries[:batch])  # warm-up
    times = []
    for start in range(0, len(queries) - batch + 1, batch):
        began = time.perf_counter()
        search(queries[start : start + batch])
        times.append((time.perf_counter() - began) / batch)
    return 1000 * median(times)


def search_section(args: argparse.Namespace, dim: int) -> str:
    import faiss

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((args.clusters, dim), dtype=np.float32)
    centres *= np.float32(np.sqrt(dim)) / np.linalg.norm(centres, axis=1, keepdims=True)  # |centre| = E|noise|
    vectors = synthetic_embeddings(args.windows, dim, centres, seed=1)
    queries = synthetic_embeddings(args.queries, dim, centres, seed=2)
    exact = faiss.IndexFlatIP(dim)
    exact.add(vectors)
    truth = search_windows(exact, queries, 10)[1]
    rows = []
    for label, search in (
        ("Flat, BLAS scan (ArchiveIndex)", lambda batch: search_windows(exact, batch, 10)),
        ("Flat, FAISS scan", lambda batch: exact.search(batch, 10)),
    ):
        rows.append([label, "", 4 * dim, exact.ntotal * dim * 4 / 2**20, "", 1.0])
        rows[-1] += [latency_ms(search, queries, 1), latency_ms(search, queries, 64)]
        print(" | ".join(str(cell) for cell in rows[-1]), flush=True)
    built: dict[str, tuple] = {}  # factory -> (index, build seconds): each is built once
    for factory, parameters in (option.split("/") for option in args.approximate):
        if factory not in built:
            began = time.perf_counter()
            index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
            if not index.is_trained:
                index.train(vectors[rng.permutation(len(vectors))[: min(len(vectors), 100_000)]])
            index.add(vectors)
            built[factory] = index, time.perf_counter() - began
        index, build = built[factory]
        if parameters:
            faiss.ParameterSpace().set_index_parameters(index, parameters)
        found = index.search(queries, 10)[1]
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)])
        size = faiss.serialize_index(index).nbytes
        rows.append([factory, parameters, size / index.ntotal, size / 2**20, build, recall])
        search = functools.partial(index.search, k=10)
        rows[-1] += [latency_ms(search, queries, 1), latency_ms(search, queries, 64)]
        print(" | ".join(str(cell) for cell in rows[-1]), flush=True)
    headers = ["index", "search parameters", "bytes/window", "memory MiB", "build s", "recall@10"]
    headers += ["ms/query (1 per call)", "ms/query (64 per call)"]
    return (
        f"### Search: {args.windows:,} windows of dimension {dim}, {args.queries} queries, {args.threads} threads\n\n"
        + markdown_table(headers, rows)
        + "\n"
    )


def run_index(command: list[str], threads: int) -> tuple[float, list[str]]:
    environment = dict(os.environ, OMP_NUM_THREADS=str(threads), ACCELERATE_USE_CPU="true")
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), environment.get("PYTHONPATH")]))
    result = subprocess.run(command, env=environment, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return float(ELAPSED.search(result.stdout).group(1)), list(REPORT.search(result.stdout).groups())


def indexing_section(args: argparse.Namespace, folder: Path) -> str:
    from modeling_vatt.corpus import build_corpus, load_manifest, write_manifest

    manifest = folder / "passages.jsonl"
    passages = sorted(load_manifest(), key=lambda passage: passage.id)[: args.passages]
    write_manifest(passages, manifest)
    build_corpus(folder / "corpus", size="default", manifest_path=manifest, show_progress=False)
    model_dir = folder / "model"
    torch.manual_seed(0)
    VattForContrastivePretraining(VattConfig.from_preset(args.preset)).save_pretrained(model_dir)
    VattFeatureExtractor().save_pretrained(model_dir)

    script = [str(REPO_ROOT / "examples" / "index_archive.py"), "--model", str(model_dir), "--no_progress"]
    script += ["--audio_dir", str(folder / "corpus" / "audio")]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    runs = [
        ("1 process", [sys.executable, *script, "--index_dir", str(folder / "one")]),
        ("2 processes", [*launch, *script, "--index_dir", str(folder / "two")]),
        ("1 process, unchanged archive", [sys.executable, *script, "--index_dir", str(folder / "one")]),
    ]
    rows, first = [], None
    for label, command in runs:
        seconds, (recordings, embedded, reused, windows, hours, minutes, rest) = run_index(command, 1)
        first = first or seconds
        audio_seconds = int(hours) * 3600 + int(minutes) * 60 + float(rest)
        rows.append([label, recordings, embedded, reused, windows, audio_seconds, seconds])
        rows[-1] += [audio_seconds / seconds, first / seconds]
        print(" | ".join(str(cell) for cell in rows[-1]), flush=True)
    headers = ["run", "recordings", "embedded", "reused", "windows", "audio s", "index s", "real-time factor"]
    return (
        f"### Indexing: {args.passages} espeak corpus passages, `{args.preset}` preset, 1 thread per process\n\n"
        + markdown_table([*headers, "speed-up"], rows)
        + "\n"
    )


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, tiny model (smoke run)")
    parser.add_argument("--output", type=Path, help="also write the markdown here")
    parser.add_argument("--threads", type=int, default=None, help="torch and FAISS threads (default: all cores)")
    parser.add_argument("--windows", type=int, default=1_125_000, help="synthetic windows in the search benchmark")
    parser.add_argument("--queries", type=int, default=256)
    parser.add_argument("--clusters", type=int, default=4096)
    parser.add_argument(
        "--approximate",
        nargs="*",
        default=list(APPROXIMATE),
        help='approximate indexes as "FACTORY/SEARCH_PARAMETERS", e.g. "HNSW32/efSearch=128"',
    )
    parser.add_argument("--preset", default="small", help="model preset of the indexing benchmark")
    parser.add_argument("--passages", type=int, default=8, help="corpus passages of the indexing benchmark")
    parser.add_argument("--skip", nargs="*", default=[], choices=["search", "indexing"])
    args = parser.parse_args(argv)
    args.threads = set_threads(args.threads)
    if args.quick:
        args.windows, args.queries, args.clusters, args.preset, args.passages = 20_000, 128, 64, "tiny", 3
        args.approximate = ["IVF64,SQfp16/nprobe=8"]
    import faiss

    faiss.omp_set_num_threads(args.threads)
    sections = ["## Archive search\n"]
    if "search" not in args.skip:
        sections.append(search_section(args, VattConfig.from_preset(args.preset).projection_dim))
    if "indexing" not in args.skip:
        with tempfile.TemporaryDirectory(prefix="vatt-archive-") as folder:
            sections.append(indexing_section(args, Path(folder)))
    text = "\n".join(sections)
    print(text)
    if args.output:
        args.output.write_text(text)
    return text


if __name__ == "__main__":
    main()
