"""
Long recordings through `VattAudioModel`: time, peak memory and real-time factor by recording length.

Every (preset, length, mode) runs in a fresh process, whose peak resident set size (model, activations, waveform,
Python and torch included) is read from the kernel. Modes:

- `window, streamed`: `LongAudioIndex.build` (`modeling_vatt/moment_search.py`) reads the WAV file in blocks and
  encodes `WINDOWS_PER_BATCH` windows at a time; the waveform is never whole in memory. Timed end to end (file
  hashing and decoding included).
- `window, one call`: the whole waveform (float32, read from the file) in one `audio_model(...)` call, windowed
  inside the model.
- `full`: one attention over the whole recording (`long_input_mode="full"`, linear position interpolation); run
  only where its FLOP estimate fits `--full-max-tflop`.

Audio is seeded white noise at 48 kHz written to a float32 WAV file (one per length) before the runs; the
model is a random-weight `VattForContrastivePretraining` of the preset (its audio tower does the work). Real-time
factor = seconds of audio per second of compute.

    python benchmarks/bench_long_audio.py [--quick] [--output FILE.md] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import soundfile
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import encoder_flops, markdown_table, report_peak_rss, run_with_peak_rss, set_threads  # noqa: E402

from modeling_vatt import VattAudioConfig, VattConfig, VattForContrastivePretraining  # noqa: E402
from modeling_vatt.moment_search import LongAudioIndex  # noqa: E402
from modeling_vatt.windowing_vatt import windows_for_length  # noqa: E402

MODES = ("window, streamed", "window, one call", "full")
SAMPLING_RATE = 48_000
WINDOWS_PER_BATCH = 16  # windows per model call, streamed and in one call alike


class SyntheticRecording:
    """Seeded white noise of `seconds` seconds, readable by sample range; each second is generated on demand."""

    def __init__(self, seconds: float, sampling_rate: int = SAMPLING_RATE, seed: int = 0):
        self.num_samples = round(seconds * sampling_rate)
        self.sampling_rate = sampling_rate
        self.seed = seed

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Samples `[start, stop)` as a `(1, stop - start)` float32 tensor."""
        stop = min(stop, self.num_samples)
        out = torch.empty(1, stop - start)
        second = start // self.sampling_rate
        while second * self.sampling_rate < stop:
            begin = second * self.sampling_rate
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + second)
            chunk = torch.randn(self.sampling_rate, generator=generator) * 0.1
            lo, hi = max(begin, start), min(begin + self.sampling_rate, stop)
            out[0, lo - start : hi - start] = chunk[lo - begin : hi - begin]
            second += 1
        return out


def write_recording(path: Path, seconds: float, block_seconds: int = 60) -> Path:
    """Write a [`SyntheticRecording`] of `seconds` seconds to a float32 WAV file, `block_seconds` at a time."""
    recording = SyntheticRecording(seconds)
    block = block_seconds * recording.sampling_rate
    with soundfile.SoundFile(path, "w", recording.sampling_rate, 1, subtype="FLOAT") as handle:
        for start in range(0, recording.num_samples, block):
            handle.write(recording.read(start, start + block)[0].numpy())
    return path


def build_model(preset: str, mode: str) -> VattForContrastivePretraining:
    overrides = {"long_input_mode": "full", "position_interpolation": "linear"} if mode == "full" else {}
    torch.manual_seed(0)
    return VattForContrastivePretraining(VattConfig.from_preset(preset, audio_config=overrides)).eval()


def run_child(preset: str, path: Path, mode: str) -> dict:
    """One measurement (meant for a fresh process): seconds to encode the recording at `path`."""
    model = build_model(preset, mode)
    config = model.config.audio_config
    with torch.inference_mode():  # warm-up on one window so one-off start-up costs are not timed
        model.audio_model(input_values=torch.randn(1, config.window_length * config.patch_size))
    if mode == "model only":
        return {"seconds": 0.0, "windows": 0}
    start = time.perf_counter()
    if mode == "window, streamed":
        index = LongAudioIndex.build(model, None, path, batch_windows=WINDOWS_PER_BATCH, progress=False)
        windows = len(index)
    else:
        waveform, _ = soundfile.read(path, dtype="float32")
        with torch.inference_mode():
            output = model.audio_model(
                input_values=torch.from_numpy(waveform)[None], windows_per_batch=WINDOWS_PER_BATCH
            )
        windows = 1 if output.window_pooler_output is None else output.window_pooler_output.shape[1]
    return {"seconds": time.perf_counter() - start, "windows": windows}


def estimated_tflop(preset: str, seconds: float, mode: str) -> float:
    config = VattAudioConfig.from_preset(preset)
    patches = round(seconds * SAMPLING_RATE) // config.patch_size
    dims = (
        config.hidden_size,
        config.num_hidden_layers,
        config.intermediate_size,
        config.num_attention_heads * config.head_dim,
        config.patch_size,
    )
    if mode == "full":
        return encoder_flops(patches + 1, *dims) / 1e12
    windows = windows_for_length(patches, config.window_length, config.window_overlap)
    return windows * encoder_flops(config.window_length + 1, *dims) / 1e12


def format_duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def plan(args: argparse.Namespace) -> list[tuple[str, float, str]]:
    """Every (preset, seconds, mode) to measure, cheapest first, so an interrupted run loses the costliest."""
    runs = []
    for preset in args.presets:
        for seconds in args.durations:
            for mode in MODES:
                if mode == "window, one call" and seconds not in args.one_call_durations:
                    continue
                if mode == "full" and seconds not in args.full_durations:
                    continue
                runs.append((preset, seconds, mode))
    return sorted(runs, key=lambda run: estimated_tflop(*run))


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny model, seconds-long inputs (smoke run)")
    parser.add_argument("--output", type=Path, help="also write the markdown here")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default: all cores)")
    parser.add_argument("--presets", nargs="+", default=["small", "base"])
    parser.add_argument("--durations", nargs="+", type=float, default=[10, 60, 600, 3600], help="seconds")
    parser.add_argument("--one-call-durations", nargs="+", type=float, default=[60, 600], help="seconds")
    parser.add_argument("--full-durations", nargs="+", type=float, default=[10, 60, 600, 3600], help="seconds")
    parser.add_argument("--full-max-tflop", type=float, default=6.0, help="skip full attention above this")
    # 8 TFLOP keeps `make bench` within ~20 min on 2 cores: the 10-min base and 60-min runs are projected, not run.
    parser.add_argument("--window-max-tflop", type=float, default=8.0, help="skip windowed runs above this")
    parser.add_argument("--child", nargs=3, metavar=("PRESET", "WAV", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)
    if args.child:
        preset, path, mode = args.child
        print(json.dumps(run_child(preset, Path(path), mode)))
        report_peak_rss()
        return ""
    if args.quick:
        args.presets, args.durations, args.one_call_durations, args.full_durations = ["tiny"], [2], [2], [2]

    config = VattAudioConfig.from_preset(args.presets[0])
    window_seconds = config.window_length * config.patch_size / SAMPLING_RATE
    intro = (
        "### Long recordings (48 kHz), VATT audio tower, inference mode\n\n"
        f"Windows of {config.window_length} patches ({window_seconds:g} s), overlap {config.window_overlap}, "
        f"{WINDOWS_PER_BATCH} windows per model call, {threads} threads. Peak RSS is the whole fresh process "
        "(`model only` = Python, torch, transformers and the model after a one-window warm-up). The raw float32 "
        f"waveform alone is {SAMPLING_RATE * 4 * 60 / 2**20:.3g} MiB per minute "
        f"({SAMPLING_RATE * 4 * 3600 / 2**20:,.0f} MiB per hour).\n\n"
    )
    headers = ["preset", "audio", "mode", "compute s", "real-time factor", "peak RSS MiB", "est. TFLOP", "note"]
    rows: dict[tuple, list] = {}

    def table() -> str:
        order = sorted(rows, key=lambda key: (args.presets.index(key[0]), key[1], key[2]))
        return intro + markdown_table(headers, [rows[key] for key in order]) + "\n"

    def measure(preset: str, path: Path | str, mode: str) -> tuple[float, int]:
        command = [sys.executable, __file__, "--threads", str(threads), "--child", preset, str(path), mode]
        stdout, peak_rss = run_with_peak_rss(command)
        return json.loads(stdout.strip().splitlines()[-1])["seconds"], peak_rss

    rates = {}
    with tempfile.TemporaryDirectory(prefix="vatt-long-audio-") as folder:
        recordings: dict[float, Path] = {}
        for preset in args.presets:
            _, peak_rss = measure(preset, "-", "model only")
            rows[(preset, -1, -1)] = [preset, "-", "model only", "", "", peak_rss / 2**20, "", ""]
        for preset, seconds, mode in plan(args):
            tflop = estimated_tflop(preset, seconds, mode)
            limit = args.full_max_tflop if mode == "full" else args.window_max_tflop
            key, label = (preset, seconds, MODES.index(mode)), [preset, format_duration(seconds), mode]
            if tflop > limit and not args.quick:
                rate = rates.get((preset, mode))
                projected = f"~{tflop / rate:,.0f} s projected" if rate else "no smaller run to project from"
                note = f"over the {limit:g} TFLOP budget; {projected}"
                rows[key] = [*label, "not run", "", "", f"{tflop:.3g}", note]
                continue
            if seconds not in recordings:
                recordings[seconds] = write_recording(Path(folder) / f"{seconds:g}s.wav", seconds)
            compute, peak_rss = measure(preset, recordings[seconds], mode)
            rates[(preset, mode)] = tflop / compute
            note = f"load {os.getloadavg()[0]:.1f}"
            rows[key] = [*label, compute, seconds / compute, peak_rss / 2**20, f"{tflop:.3g}", note]
            print(" | ".join(str(cell) for cell in rows[key]), flush=True)
            if args.output:  # keep what is done if a later run fails
                args.output.write_text(table())
    text = table()
    print(text)
    if args.output:
        args.output.write_text(text)
    return text


if __name__ == "__main__":
    main()
