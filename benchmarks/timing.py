"""
Timing helpers shared by the VATT benchmarks.

FLOP count (forward pass, one multiply-add = 2 FLOPs) of a pre-LN transformer encoder over `T` tokens (AGG/CLS
included) with width `d`, attention width `a = heads * head_dim`, feed-forward width `f`, `L` layers and an input
projection of width `p` (128-sample patches, or the word-embedding width):

    F_forward = 2*T*p*d + L * (8*T*d*a + 4*T*d*f + 4*T^2*a)

(Q, K, V, output projections; the two feed-forward matmuls; scores `QK^T` and `weights @ V`). Norms, softmax, GELU and
biases are left out (< 1% at these sizes). Forward + backward counts as `3 * F_forward`. The same count is used for a
model and its transformers peer, so GFLOP/s ratios equal time ratios.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

import torch

PEAK_RSS_PREFIX = "PEAK_RSS_BYTES="


def encoder_flops(
    tokens: int, hidden: int, layers: int, intermediate: int, attention_width: int, input_width: int
) -> float:
    """Forward FLOPs of an encoder by the formula in the module docstring."""
    per_layer = 8 * tokens * hidden * attention_width + 4 * tokens * hidden * intermediate
    per_layer += 4 * tokens**2 * attention_width
    return 2 * tokens * input_width * hidden + layers * per_layer


def alternate(
    functions: dict[str, Callable[[], object]], repetitions: int, warmup: int = 1, time_budget: float | None = None
) -> dict[str, list[float]]:
    """
    Wall-clock seconds of each function over `repetitions` rounds; every round runs all functions in turn, so the
    compared functions see the same machine load. `warmup` untimed rounds come first. With `time_budget` (seconds),
    no new round starts once the timed rounds have taken that long (at least one round always runs).
    """
    if repetitions < 1:
        raise ValueError(f"`repetitions` must be at least 1, got {repetitions}.")
    for _ in range(warmup):
        for function in functions.values():
            function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    started = time.perf_counter()
    for _ in range(repetitions):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
        if time_budget is not None and time.perf_counter() - started > time_budget:
            break
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def matmul_ceiling(rows: int, inner: int, columns: int, min_seconds: float = 0.25) -> Callable[[], float]:
    """
    A function that times fp32 `(rows, inner) @ (inner, columns)` products for at least `min_seconds` and returns
    the achieved GFLOP/s: the matmul ceiling of this machine at that shape, meant to run alongside the models.
    """
    left, right = torch.randn(rows, inner), torch.randn(inner, columns)
    out = torch.empty(rows, columns)
    flops = 2 * rows * inner * columns

    def measure() -> float:
        torch.mm(left, right, out=out)
        count, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < min_seconds or count == 0:
            torch.mm(left, right, out=out)
            count += 1
        return flops * count / elapsed / 1e9

    return measure


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; floats get 3 significant digits."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def run_with_peak_rss(command: Sequence[str]) -> tuple[str, int]:
    """
    Run `command` in a fresh process; return its stdout and its peak resident set size in bytes, which the child
    prints with [`report_peak_rss`]. (The kernel's `ru_maxrss` of a child cannot be used: Linux carries the parent's
    high-water mark across `fork` + `exec`, so every child of a process holding torch would report at least that.)
    """
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed with exit code {result.returncode}:\n{result.stderr[-3000:]}")
    lines = result.stdout.splitlines()
    peaks = [line for line in lines if line.startswith(PEAK_RSS_PREFIX)]
    if not peaks:
        raise RuntimeError(f"{' '.join(command)} did not report its peak RSS (call `report_peak_rss()` last).")
    stdout = "".join(line + "\n" for line in lines if not line.startswith(PEAK_RSS_PREFIX))
    return stdout, int(peaks[-1][len(PEAK_RSS_PREFIX) :])


def report_peak_rss() -> None:
    """Print this process's peak resident set size (`VmHWM`) for [`run_with_peak_rss`]; call it last."""
    with open("/proc/self/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print(f"{PEAK_RSS_PREFIX}{kib * 1024}", flush=True)


def set_threads(num_threads: int | None) -> int:
    """Use `num_threads` intra-op threads (default: all visible cores); returns the count in use."""
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    return torch.get_num_threads()


def machine_description() -> str:
    """CPU model, visible cores, torch/transformers versions and thread count, as a markdown list."""
    import transformers

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return "\n".join(
        [
            f"- CPU: {cpu}, {cores} cores visible to the process",
            f"- Python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}",
            f"- torch threads: {torch.get_num_threads()}, oneDNN available: {torch.backends.mkldnn.is_available()}",
            f"- {load_average()} at the start",
        ]
    )


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as a phrase for the reports."""
    return "load average (1, 5, 15 min) " + ", ".join(f"{load:.1f}" for load in os.getloadavg())
