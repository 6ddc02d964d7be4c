"""
One-table GPU check of the VATT towers, meant to finish within 8 minutes on one GPU:

- correctness: the relative-bias attention functions (eager, SDPA, FlexAttention) against each other, outputs and
  gradients of queries, keys, values and the per-offset bias, in fp32 with TF32 off (target: relative error <= 1e-5);
  both towers in training, SDPA and eager against eager in fp64 (outputs and every parameter gradient; SDPA within
  twice eager's distance);
- fp32 vs bf16 autocast, forward and forward+backward, both towers (target: bf16 >= 1.6x, cosine >= 0.999);
- forward+backward (bf16 autocast) against `ViTModel`, `BertModel` and `T5EncoderModel`, dropout off and on
  (target: >= 1.0), and the text tower's trained-bias paths (SDPA's dense bias; FlexAttention on CUDA) against eager;
- windowed long-audio real-time factor (10 minutes of audio, small and base presets, fp32 and bf16);
- peak GPU memory of every row.

Without a CUDA GPU it says so and exits 0. `--device cpu --tiny` runs every code path on CPU with tiny presets (the
tests use it; FlexAttention has no CPU backward in torch 2.13, so there it is checked forward only). Exits 1 when a
correctness check fails or a row raises; missed speed targets are reported, not fatal.

    python benchmarks/gpu_check.py [--budget SECONDS] [--only SECTION]     # make gpu-check
    python benchmarks/gpu_check.py --device cpu --tiny
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_encoders as be  # noqa: E402
from timing import alternate, markdown_table, median  # noqa: E402

from modeling_vatt.modeling_vatt import (  # noqa: E402
    eager_attention_forward,
    flex_relative_bias_attention_forward,
    sdpa_relative_bias_attention_forward,
)

MAX_RELATIVE_ERROR = 1e-5
BF16_MIN_SPEEDUP = 1.6
BF16_MIN_COSINE = 0.999
SAMPLING_RATE = 48_000
ATTENTION_FUNCTIONS = {
    "eager": eager_attention_forward,
    "sdpa": sdpa_relative_bias_attention_forward,
    "flex": flex_relative_bias_attention_forward,
}
HEADERS = ["section", "case", "metric", "value", "target", "status", "peak GPU MiB"]


@dataclass
class Sizes:
    """Presets and lengths of one run: the real check or the tiny CPU rehearsal."""

    small: str
    base: str
    text_base: str
    audio_patches: int
    text_lengths: tuple[int, ...]
    long_audio_seconds: float
    attention_length: int
    repetitions: int
    batch: int


FULL = Sizes("small", "base", "t5_small", 1200, (512, 2048), 600.0, 1000, 5, 8)
TINY = Sizes("tiny", "tiny", "tiny", 60, (24, 40), 1.0, 37, 1, 2)


class Device:
    """Synchronisation and peak-memory bookkeeping for the device under test."""

    def __init__(self, name: str):
        self.device = torch.device(name)
        self.is_cuda = self.device.type == "cuda"

    def sync(self) -> None:
        if self.is_cuda:
            torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        if self.is_cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_mib(self) -> str:
        return f"{torch.cuda.max_memory_allocated(self.device) / 2**20:,.0f}" if self.is_cuda else "n/a (CPU)"

    def timed(self, functions: dict[str, Callable[[], object]], repetitions: int) -> dict[str, float]:
        """Median seconds of each function over alternating rounds, synchronised (one untimed warm-up round)."""

        def synced(function: Callable[[], object]) -> Callable[[], None]:
            def run() -> None:
                function()
                self.sync()

            return run

        times = alternate({name: synced(function) for name, function in functions.items()}, repetitions, warmup=1)
        return {name: median(values) for name, values in times.items()}


class Report:
    """The table: every row records the peak memory since the last row; a raising row is recorded, not fatal."""

    def __init__(self, device: Device, budget: float):
        self.device, self.rows, self.failed = device, [], False
        self.deadline = time.perf_counter() + budget

    def add(self, section: str, case: str, metric: str, value: float, target: str, passed: bool, fatal: bool):
        status = "ok" if passed else ("FAIL" if fatal else "below target")
        self.failed |= fatal and not passed
        self.rows.append([section, case, metric, f"{value:.4g}", target, status, self.device.peak_mib()])

    def run(self, section: str, case: str, measure: Callable[[], None]) -> None:
        if time.perf_counter() > self.deadline:
            self.rows.append([section, case, "-", "", "", "skipped: time budget spent", ""])
            return
        self.device.reset_peak()
        try:
            measure()
        except Exception as error:  # one broken row must not cost the rest of a short GPU session
            traceback.print_exc()
            self.failed = True
            message = " ".join(f"{type(error).__name__}: {error}".split())[:150].replace("|", "/")
            self.rows.append([section, case, "-", "", "", f"ERROR {message}", self.device.peak_mib()])


def relative_error(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> float:
    """
    Largest `max |actual - expected| / max |expected|` over tensors, each scale floored at 1e-3 of the largest one:
    a gradient that is zero in exact arithmetic (a key-projection bias: softmax ignores a per-query constant) holds
    only rounding noise, which is measured against the gradients' overall scale.
    """
    scales = [tensor.float().abs().max().item() for tensor in expected]
    floor = 1e-3 * max(scales)
    errors = [
        (a.float() - e.float()).abs().max().item() / max(scale, floor) for a, e, scale in zip(actual, expected, scales)
    ]
    return max(errors)


def cosine(reference: torch.Tensor, other: torch.Tensor) -> float:
    return be.cosine(reference, other)


def attention_results(
    function: Callable, inputs: list[torch.Tensor], mask: torch.Tensor, trained: bool
) -> list[torch.Tensor]:
    """Output, and with `trained` the gradients of queries, keys, values and per-offset bias, of one function."""
    module = nn.Module().train(trained)
    leaves = [tensor.detach().clone().requires_grad_(trained) for tensor in inputs]
    with torch.set_grad_enabled(trained):
        output, _ = function(module, *leaves[:3], mask, 0.125, position_bias=leaves[3])
    if not trained:
        return [output]
    output.backward(torch.linspace(-1, 1, output.numel(), device=output.device).view_as(output))
    return [output.detach(), *(leaf.grad for leaf in leaves)]


def check_attention_functions(report: Report, sizes: Sizes) -> None:
    device = report.device
    length = sizes.attention_length
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(2, 4, length, 64, generator=generator) for _ in range(3)]
    inputs = [tensor.to(device.device) for tensor in (*inputs, torch.randn(4, 2 * length - 1, generator=generator))]
    mask = torch.ones(2, 1, 1, length, dtype=torch.bool, device=device.device)
    mask[1, ..., length - length // 3 :] = False
    # FlexAttention has no CPU backward in torch 2.13: there it is compared in inference only.
    for trained in (False, True) if device.is_cuda else (False,):
        results = {
            name: attention_results(function, inputs, mask, trained) for name, function in ATTENTION_FUNCTIONS.items()
        }
        if not device.is_cuda:
            results["sdpa (trained)"] = attention_results(ATTENTION_FUNCTIONS["sdpa"], inputs, mask, True)
            results["eager (trained)"] = attention_results(ATTENTION_FUNCTIONS["eager"], inputs, mask, True)
        pairs = [("sdpa", "eager"), ("flex", "eager"), ("flex", "sdpa")]
        pairs += [] if device.is_cuda else [("sdpa (trained)", "eager (trained)")]
        for actual, expected in pairs:
            error = relative_error(results[actual], results[expected])
            quantities = "output + grads" if len(results[actual]) > 1 else "output"
            mode = "trained bias" if trained else "inference"
            report.add(
                "correctness",
                f"attention fp32, {length} tokens, padded, {mode}",
                f"{actual} vs {expected}: max rel. error ({quantities})",
                error,
                f"<= {MAX_RELATIVE_ERROR:g}",
                error <= MAX_RELATIVE_ERROR,
                fatal=True,
            )


def tower_results(model: nn.Module, inputs: dict) -> list[torch.Tensor]:
    """Training-mode last hidden state and every parameter gradient (dropout off)."""
    model.train().zero_grad(set_to_none=True)
    output = model(**inputs).last_hidden_state
    output.backward(torch.linspace(-1, 1, output.numel(), device=output.device).view_as(output))
    return [output.detach(), *(p.grad for p in model.parameters() if p.grad is not None)]


def check_towers_sdpa_vs_eager(report: Report, sizes: Sizes) -> None:
    """
    Both towers in training, SDPA and eager in fp32 against eager in fp64: through a whole tower (every parameter
    gradient) fp32 rounding alone exceeds 1e-5, so SDPA passes when it is as close to fp64 as eager is (within 2x).
    """
    device = report.device
    for tower, preset, length in (
        ("audio", sizes.small, sizes.audio_patches),
        ("text", sizes.small, sizes.text_lengths[0]),
    ):

        def measure(tower: str = tower, preset: str = preset, length: int = length) -> None:
            results = {}
            for attn, dtype in (("sdpa", torch.float32), ("eager", torch.float32), ("eager", torch.float64)):
                model, inputs = be.tower_model(tower, preset, length, attn=attn, batch=2)
                if tower == "text":
                    inputs["input_ids"][1, length // 2 :] = 0  # padding: the key mask reaches every path
                inputs = {
                    name: tensor.to(device.device, dtype if tensor.is_floating_point() else None)
                    for name, tensor in inputs.items()
                }
                results[attn, dtype] = tower_results(model.to(device.device, dtype), inputs)
            exact = results["eager", torch.float64]
            eager_error = relative_error(results["eager", torch.float32], exact)
            sdpa_error = relative_error(results["sdpa", torch.float32], exact)
            limit = max(MAX_RELATIVE_ERROR, 2 * eager_error)
            report.add(
                "correctness",
                f"{tower} {preset}, {length} tokens{', padded' if tower == 'text' else ''}, training",
                f"max rel. error vs fp64 (output + every parameter grad): sdpa (eager: {eager_error:.3g})",
                sdpa_error,
                f"<= max({MAX_RELATIVE_ERROR:g}, 2x eager)",
                sdpa_error <= limit,
                fatal=True,
            )

        report.run("correctness", f"{tower} tower", measure)


def check_bf16(report: Report, sizes: Sizes) -> None:
    device = report.device
    for tower, preset, length in (
        ("audio", sizes.base, sizes.audio_patches),
        ("text", sizes.text_base, sizes.text_lengths[-1]),
    ):

        def measure(tower: str = tower, preset: str = preset, length: int = length) -> None:
            model, inputs = be.tower_model(tower, preset, length, batch=sizes.batch)
            model, inputs = model.to(device.device), {k: v.to(device.device) for k, v in inputs.items()}
            case = f"{tower} {preset}, {sizes.batch} x {length} tokens"
            for name, make in (("forward", be.forward_fn), ("fwd+bwd", be.train_step_fn)):
                fp32, bf16 = make(model, inputs), make(model, inputs, autocast=True)
                times = device.timed({"fp32": fp32, "bf16": bf16}, sizes.repetitions)
                speedup = times["fp32"] / times["bf16"]
                report.add(
                    "fp32 vs bf16",
                    case,
                    f"{name}: bf16 autocast speed-up",
                    speedup,
                    f">= {BF16_MIN_SPEEDUP}",
                    speedup >= BF16_MIN_SPEEDUP,
                    fatal=False,
                )
                similarity = cosine(fp32(), bf16())
                report.add(
                    "fp32 vs bf16",
                    case,
                    f"{name}: cosine(pooled) bf16 vs fp32",
                    similarity,
                    f">= {BF16_MIN_COSINE}",
                    similarity >= BF16_MIN_COSINE,
                    fatal=True,
                )

        report.run("fp32 vs bf16", f"{tower} {preset}", measure)


def check_peers(report: Report, sizes: Sizes) -> None:
    device = report.device
    cases = [("audio", be.audio_pair, sizes.base, sizes.audio_patches, "ViTModel")]
    cases += [("text", be.text_pair, sizes.text_base, length, "BertModel") for length in sizes.text_lengths]
    cases += [("text", be.t5_pair, sizes.text_base, sizes.text_lengths[-1], "T5EncoderModel")]
    for dropout in (0.0, be.TRAINING_DROPOUT):
        for tower, build, preset, length, peer_name in cases:

            def measure(
                tower=tower, build=build, preset=preset, length=length, peer_name=peer_name, dropout=dropout
            ) -> None:
                torch.manual_seed(0)
                pair = build(preset, length, dropout=dropout, batch=sizes.batch)
                vatt_inputs = {k: v.to(device.device) for k, v in pair.vatt_inputs.items()}
                peer_inputs = {k: v.to(device.device) for k, v in pair.peer_inputs.items()}
                functions = {
                    "vatt": be.train_step_fn(pair.vatt.to(device.device), vatt_inputs, autocast=True),
                    "peer": be.train_step_fn(pair.peer.to(device.device), peer_inputs, autocast=True),
                }
                times = device.timed(functions, sizes.repetitions)
                ratio = times["peer"] / times["vatt"]
                report.add(
                    "fwd+bwd vs peer (bf16)",
                    f"{tower} {preset}, {sizes.batch} x {length} tokens, dropout {dropout:g}",
                    f"{peer_name} s / VATT s ({times['vatt'] * 1e3:.3g} ms)",
                    ratio,
                    ">= 1.0",
                    ratio >= 1.0,
                    fatal=False,
                )

            report.run("fwd+bwd vs peer (bf16)", f"{tower} {preset} {length}", measure)


def check_trained_bias_path(report: Report, sizes: Sizes) -> None:
    """
    The text tower's trained-bias paths against eager attention, fp32 and bf16: SDPA (a dense bias with gradient on
    the memory-efficient kernel on CUDA, plain math on CPU) and, on CUDA, FlexAttention.
    """
    device = report.device
    length = sizes.text_lengths[-1]
    contenders = {"sdpa": "sdpa (dense bias)" if device.is_cuda else "sdpa (plain math)"}
    contenders |= {"flex_attention": "flex"} if device.is_cuda else {}
    for autocast in (False, True):

        def measure(autocast: bool = autocast) -> None:
            functions = {}
            for attn in ("eager", *contenders):
                model, inputs = be.tower_model("text", sizes.text_base, length, batch=sizes.batch)
                model.config._attn_implementation = attn  # set after construction: flex is selected by name only
                inputs = {k: v.to(device.device) for k, v in inputs.items()}
                functions[attn] = be.train_step_fn(model.to(device.device), inputs, autocast=autocast)
            times = device.timed(functions, sizes.repetitions)
            for attn, label in contenders.items():
                speedup = times["eager"] / times[attn]
                report.add(
                    "trained relative bias",
                    f"text {sizes.text_base}, {sizes.batch} x {length} tokens, {'bf16' if autocast else 'fp32'}",
                    f"fwd+bwd: eager s / {label} s ({times[attn] * 1e3:.3g} ms)",
                    speedup,
                    ">= 1.0",
                    speedup >= 1.0,
                    fatal=False,
                )

        report.run("trained relative bias", f"{'bf16' if autocast else 'fp32'}", measure)


def check_long_audio(report: Report, sizes: Sizes) -> None:
    device = report.device
    seconds = sizes.long_audio_seconds
    for preset in dict.fromkeys((sizes.small, sizes.base)):
        for autocast in (False, True):

            def measure(preset: str = preset, autocast: bool = autocast) -> None:
                torch.manual_seed(0)
                model, _ = be.tower_model("audio", preset, 1)
                model = model.to(device.device).eval()
                inputs = {"input_values": torch.randn(1, round(seconds * SAMPLING_RATE), device=device.device) * 0.1}

                def run() -> torch.Tensor:
                    with torch.inference_mode(), be.bf16_autocast(inputs, autocast):
                        return model(**inputs).pooler_output

                compute = device.timed({"run": run}, 1)["run"]
                report.add(
                    "long audio (windowed)",
                    f"audio {preset}, {seconds:g} s, {'bf16' if autocast else 'fp32'}",
                    f"real-time factor ({compute:.3g} s compute)",
                    seconds / compute,
                    "report",
                    True,
                    fatal=False,
                )

            report.run("long audio (windowed)", f"{preset}", measure)


def check_attention_functions_row(report: Report, sizes: Sizes) -> None:
    report.run("correctness", "attention functions", lambda: check_attention_functions(report, sizes))


SECTIONS = {
    "attention": check_attention_functions_row,
    "towers": check_towers_sdpa_vs_eager,
    "bf16": check_bf16,
    "peers": check_peers,
    "trained-bias": check_trained_bias_path,
    "long-audio": check_long_audio,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="torch device (default cuda; cpu only with --tiny)")
    parser.add_argument("--tiny", action="store_true", help="tiny presets and lengths: rehearse every code path")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds after which remaining rows are skipped")
    parser.add_argument("--only", choices=[*SECTIONS], help="run one section (default: all)")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU is available here; skipping (run `make gpu-check` on a GPU machine).")
        return 0
    if not args.device.startswith("cuda") and not args.tiny:
        parser.error("--device cpu needs --tiny: the full-size check is sized for a GPU")
    started = time.perf_counter()
    device = Device(args.device)
    sizes = TINY if args.tiny else FULL
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 (PyTorch's default, made explicit)
    torch.backends.cudnn.allow_tf32 = False
    # FlexAttention compiles once per length, dtype, grad mode and mask kind; this check visits about 8 of them.
    torch._dynamo.config.recompile_limit = 32
    report = Report(device, args.budget)
    for name, check in SECTIONS.items():
        if args.only in (None, name):
            check(report, sizes)
    name = torch.cuda.get_device_name(device.device) if device.is_cuda else "CPU"
    print(f"\n### VATT GPU check ({name}, torch {torch.__version__}, {time.perf_counter() - started:.0f} s)\n")
    print(markdown_table(HEADERS, report.rows), flush=True)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
