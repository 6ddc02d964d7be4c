"""
VATT audio and text towers against transformers encoders of the same dimensions, on CPU.

`VattAudioModel` is compared with `ViTModel` fed a `(1, 128 * patches)` "image" cut into `(1, 128)` patches, so
both see the same tokens (patches + one AGG/CLS token) and the same 128-wide patch projection; `VattTextModel`
(T5-style) with `BertModel` of the same width, depth and vocabulary, given as many ids as VATT has tokens (AGG
included), with its word table frozen when VATT's is. Weights are random, dropout and DropToken are off (except in
the DropToken comparison), attention is SDPA. Each comparison runs in one process, alternating the compared models
and an fp32 matmul of the feed-forward shape (the same-run matmul ceiling); times are medians. FLOPs follow the
formula in `timing.py`.

    python benchmarks/bench_encoders.py [--quick] [--output FILE.md] [--repetitions N] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import BertConfig, BertModel, T5Config, T5EncoderModel, ViTConfig, ViTModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import (  # noqa: E402
    alternate,
    encoder_flops,
    load_average,
    markdown_table,
    matmul_ceiling,
    median,
    report_peak_rss,
    run_with_peak_rss,
    set_threads,
)

from modeling_vatt import VattAudioConfig, VattAudioModel, VattTextConfig, VattTextModel  # noqa: E402

SECTIONS = ("peers", "dropout", "droptoken", "attention", "bf16", "memory", "compile", "compile-training")
TRAINING_DROPOUT = 0.1  # the presets' hidden and attention dropout
PEER_HEADERS = [
    "tower",
    "preset",
    "tokens",
    "peer",
    "pass",
    "rounds",
    "VATT s",
    "peer s",
    "speed vs peer",
    "VATT GFLOP/s",
    "peer GFLOP/s",
    "matmul ceiling GFLOP/s",
    "VATT efficiency",
]

# Benchmark preset -> (audio preset, text preset), as in `VattConfig.from_preset`.
PRESETS = {"small": ("small", "small"), "base": ("base", "t5_small"), "tiny": ("tiny", "tiny")}
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_dropout": 0.0}


@dataclass
class Pair:
    """A VATT tower, its transformers peer, their inputs and the forward FLOPs of one call."""

    vatt: torch.nn.Module
    peer: torch.nn.Module
    vatt_inputs: dict[str, torch.Tensor]
    peer_inputs: dict[str, torch.Tensor]
    flops: float
    tokens: int
    hidden_size: int
    intermediate_size: int


def audio_model(
    preset: str, patches: int, attn: str = "sdpa", batch: int = 1, **overrides
) -> tuple[VattAudioModel, dict]:
    """A random-weight audio tower for `batch` inputs of `patches` patches; longer than the table: full attention."""
    config = VattAudioConfig.from_preset(preset, **{"drop_token_rate": 0.0, **NO_DROPOUT, **overrides})
    if patches > config.max_position_embeddings:
        config = VattAudioConfig.from_preset(
            preset,
            **{"drop_token_rate": 0.0, **NO_DROPOUT, **overrides},
            long_input_mode="full",
            position_interpolation="linear",
        )
    config._attn_implementation = attn
    model = VattAudioModel(config)
    return model, {"input_values": torch.randn(batch, patches * config.patch_size)}


def text_model(
    preset: str, length: int, attn: str = "sdpa", batch: int = 1, **overrides
) -> tuple[VattTextModel, dict]:
    config = VattTextConfig.from_preset(preset, **{**NO_DROPOUT, **overrides})
    config._attn_implementation = attn
    model = VattTextModel(config)
    return model, {"input_ids": torch.randint(1, config.vocab_size, (batch, length))}


def _peer_encoder_kwargs(config: VattAudioConfig | VattTextConfig) -> dict:
    """ViT/BERT config fields giving a peer VATT's encoder dimensions and dropout (exact GELU)."""
    return {
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "hidden_act": "gelu",
        "hidden_dropout_prob": config.hidden_dropout_prob,
        "attention_probs_dropout_prob": config.attention_dropout,
        "layer_norm_eps": config.layer_norm_eps,
    }


def _pair(
    vatt: torch.nn.Module, peer: torch.nn.Module, vatt_inputs: dict, peer_inputs: dict, tokens: int, input_width: int
) -> Pair:
    """A comparison of `tokens` tokens per input (AGG/CLS included); `input_width`: the input projection's width."""
    config = vatt.config
    inner = config.num_attention_heads * config.head_dim
    dims = (config.hidden_size, config.num_hidden_layers, config.intermediate_size, inner, input_width)
    batch = next(iter(vatt_inputs.values())).shape[0]
    flops = encoder_flops(tokens, *dims) * batch
    return Pair(vatt, peer, vatt_inputs, peer_inputs, flops, tokens, config.hidden_size, config.intermediate_size)


def dropout_overrides(dropout: float) -> dict:
    """Config overrides setting VATT's hidden and attention dropout (the peers copy both)."""
    return {"hidden_dropout_prob": dropout, "attention_dropout": dropout}


def audio_pair(preset: str, patches: int, dropout: float = 0.0, attn: str = "sdpa", batch: int = 1) -> Pair:
    vatt, vatt_inputs = audio_model(preset, patches, attn=attn, batch=batch, **dropout_overrides(dropout))
    config = vatt.config
    peer_config = ViTConfig(
        **_peer_encoder_kwargs(config),
        image_size=(1, config.patch_size * patches),
        patch_size=(1, config.patch_size),
        num_channels=1,
    )
    peer_config._attn_implementation = "sdpa"
    peer = ViTModel(peer_config, add_pooling_layer=False)
    peer_inputs = {"pixel_values": vatt_inputs["input_values"].view(batch, 1, 1, -1)}
    return _pair(vatt, peer, vatt_inputs, peer_inputs, patches + 1, config.patch_size)


def text_pair(preset: str, length: int, dropout: float = 0.0, attn: str = "sdpa", batch: int = 1) -> Pair:
    vatt, vatt_inputs = text_model(preset, length, attn=attn, batch=batch, **dropout_overrides(dropout))
    config = vatt.config
    peer_config = BertConfig(
        **_peer_encoder_kwargs(config),
        vocab_size=config.vocab_size,
        max_position_embeddings=length + 1,
    )
    peer_config._attn_implementation = "sdpa"
    peer = BertModel(peer_config, add_pooling_layer=False)
    peer.embeddings.word_embeddings.weight.requires_grad_(config.trainable_word_embeddings)
    peer_ids = torch.cat([torch.ones(batch, 1, dtype=torch.long), vatt_inputs["input_ids"]], dim=1)
    return _pair(vatt, peer, vatt_inputs, {"input_ids": peer_ids}, length + 1, config.embedding_size)


def tower_model(tower: str, preset: str, length: int, **kwargs) -> tuple[torch.nn.Module, dict]:
    """A seeded random-weight audio (`length` patches) or text (`length` ids) tower and its inputs."""
    torch.manual_seed(0)
    return (audio_model if tower == "audio" else text_model)(preset, length, **kwargs)


def bf16_autocast(inputs: dict, enabled: bool) -> torch.autocast:
    """bf16 autocast on the inputs' device (off unless `enabled`)."""
    return torch.autocast(next(iter(inputs.values())).device.type, dtype=torch.bfloat16, enabled=enabled)


def forward_fn(model: torch.nn.Module, inputs: dict, autocast: bool = False) -> Callable[[], torch.Tensor]:
    """Inference-mode forward returning the first token's output (VATT's pooled output, ViT/BERT's CLS)."""
    model.eval()

    def run() -> torch.Tensor:
        with torch.inference_mode(), bf16_autocast(inputs, autocast):
            return model(**inputs).last_hidden_state[:, 0]

    return run


def train_step_fn(model: torch.nn.Module, inputs: dict, autocast: bool = False) -> Callable[[], torch.Tensor]:
    """Training-mode forward and backward of the summed last hidden state; returns the first token's output."""
    model.train()

    def run() -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        with bf16_autocast(inputs, autocast):
            output = model(**inputs).last_hidden_state
        output.float().sum().backward()
        return output[:, 0].detach()

    return run


def cosine(reference: torch.Tensor, other: torch.Tensor) -> float:
    return F.cosine_similarity(reference.float().flatten(), other.float().flatten(), dim=0).item()


def bf16_agreement(model: torch.nn.Module, inputs: dict) -> dict[str, float]:
    """Cosine similarity of the pooled output in bf16 autocast and with bf16 weights against fp32."""
    reference = forward_fn(model, inputs)()
    autocast = forward_fn(model, inputs, autocast=True)()
    bf16_model = _bf16_copy(model)
    weights = forward_fn(bf16_model, inputs)()
    return {"autocast": cosine(reference, autocast), "bf16 weights": cosine(reference, weights)}


def _bf16_copy(model: torch.nn.Module) -> torch.nn.Module:
    copy = type(model)(model.config).to(torch.bfloat16)
    copy.load_state_dict(model.state_dict())
    return copy.eval()


def t5_pair(preset: str, length: int, dropout: float = 0.0, batch: int = 1) -> Pair:
    """VATT's text tower against transformers' T5 encoder: the like-for-like peer (relative bias, unscaled attention)."""
    pair = text_pair(preset, length, dropout=dropout, batch=batch)
    config = pair.vatt.config
    peer_config = T5Config(
        vocab_size=config.vocab_size,
        d_model=config.hidden_size,
        d_kv=config.head_dim,
        d_ff=config.intermediate_size,
        num_layers=config.num_hidden_layers,
        num_heads=config.num_attention_heads,
        relative_attention_num_buckets=config.relative_attention_num_buckets,
        relative_attention_max_distance=config.relative_attention_max_distance,
        feed_forward_proj="gelu",
        dropout_rate=dropout,
        layer_norm_epsilon=config.layer_norm_eps,
    )
    peer_config._attn_implementation = "sdpa"
    peer = T5EncoderModel(peer_config)
    peer.shared.weight.requires_grad_(config.trainable_word_embeddings)
    return replace(pair, peer=peer)


def compare_with_peer(
    pair: Pair, repetitions: int, warmup: int, budget: float | None, training_only: bool = False
) -> list[list]:
    """
    Rows (pass, rounds, VATT s, peer s, speed ratio, GFLOP/s, ceiling, efficiency) for forward and forward+backward
    (only the latter with `training_only`). Forward+backward gets no warm-up round of its own after the forward
    rounds, which already ran every kernel shape once.
    """
    ceiling = matmul_ceiling(pair.tokens, pair.hidden_size, pair.intermediate_size)
    rows = []
    passes = [("forward", forward_fn, pair.flops, warmup), ("fwd+bwd", train_step_fn, 3 * pair.flops, 0)]
    if training_only:
        passes = [("fwd+bwd", train_step_fn, 3 * pair.flops, warmup)]
    for name, make, flops, warmup_rounds in passes:
        ceilings: list[float] = []
        times = alternate(
            {
                "vatt": make(pair.vatt, pair.vatt_inputs),
                "peer": make(pair.peer, pair.peer_inputs),
                "ceiling": lambda record=ceilings.append: record(ceiling()),
            },
            repetitions,
            warmup_rounds,
            budget,
        )
        vatt_time, peer_time, best = median(times["vatt"]), median(times["peer"]), median(ceilings)
        vatt_rate, peer_rate = flops / vatt_time / 1e9, flops / peer_time / 1e9
        ratio, efficiency = peer_time / vatt_time, vatt_rate / best
        rows.append([name, len(times["vatt"]), vatt_time, peer_time, ratio, vatt_rate, peer_rate, best, efficiency])
    return rows


def peer_section(
    presets: list[str],
    audio_lengths: dict[str, list[int]],
    text_lengths: list[int],
    reps: int,
    warmup: int,
    budget: float | None,
) -> str:
    rows = []
    for preset in presets:
        audio_preset, text_preset = PRESETS[preset]
        for tower, build, tower_preset, lengths, peer_name in (
            ("audio", audio_pair, audio_preset, audio_lengths[preset], "ViTModel"),
            ("text", text_pair, text_preset, text_lengths, "BertModel"),
            ("text", t5_pair, text_preset, text_lengths, "T5EncoderModel"),
        ):
            for length in lengths:
                torch.manual_seed(0)
                pair = build(tower_preset, length)
                for row in compare_with_peer(pair, reps, warmup, budget):
                    rows.append([tower, f"{preset} ({tower_preset})", f"{length:,}", peer_name, *row])
                del pair
    return (
        "### VATT vs transformers encoders of the same dimensions\n\n"
        "`speed vs peer` = peer time / VATT time (>= 1.0: VATT no slower); times are medians over `rounds` alternating "
        "rounds. Tokens exclude the AGG/CLS token. Audio "
        "inputs longer than the 1,200-row position table use `long_input_mode='full'` with linear position "
        "interpolation (one attention over all tokens, like the peer).\n\n" + markdown_table(PEER_HEADERS, rows)
    )


def dropout_section(cases: list[tuple[str, str, int]], reps: int, warmup: int, budget: float | None = None) -> str:
    """
    Training with VATT's default dropout (0.1 on residual branches and attention probabilities) in VATT and its peer.
    Each tower runs under SDPA and eager attention: both apply the same dropout to the attention probabilities (SDPA's
    fused CPU kernels have no dropout, so it computes the same math), and the faster one is the recipe.
    """
    rows = []
    for tower, preset, length in cases:
        build, peer_name = (audio_pair, "ViTModel") if tower == "audio" else (text_pair, "BertModel")
        for attn in ("sdpa", "eager"):
            torch.manual_seed(0)
            pair = build(preset, length, dropout=TRAINING_DROPOUT, attn=attn)
            for row in compare_with_peer(pair, reps, warmup, budget, training_only=True):
                rows.append([tower, f"{preset} ({attn})", f"{length:,}", peer_name, *row])
            del pair
    return (
        f"### Training with dropout {TRAINING_DROPOUT} (forward+backward, VATT and peer alike)\n\n"
        "As users train: hidden and attention dropout on in both models (DropToken off). The preset column names "
        "VATT's attention implementation; the peer always uses SDPA, whose fused CPU kernels take no dropout, so "
        "both fall back to plain attention math.\n\n" + markdown_table(PEER_HEADERS, rows)
    )


def drop_token_section(preset: str, patches: int, reps: int, warmup: int, budget: float | None = None) -> str:
    torch.manual_seed(0)
    models = {rate: audio_model(preset, patches, drop_token_rate=rate) for rate in (0.0, 0.5)}
    times = alternate(
        {rate: train_step_fn(model, inputs) for rate, (model, inputs) in models.items()}, reps, warmup, budget
    )
    full, dropped = median(times[0.0]), median(times[0.5])
    rows = [[f"audio {preset}", f"{patches:,}", full, dropped, full / dropped]]
    headers = ["tower", "patches", "DropToken 0.0 fwd+bwd s", "DropToken 0.5 fwd+bwd s", "speed-up"]
    return "### DropToken (training, forward+backward)\n\n" + markdown_table(headers, rows)


def attention_section(cases: list[tuple[str, str, int]], reps: int, warmup: int, budget: float | None = None) -> str:
    rows = []
    for tower, preset, length in cases:
        eager, inputs = tower_model(tower, preset, length, attn="eager")
        sdpa, _ = tower_model(tower, preset, length, attn="sdpa")
        sdpa.load_state_dict(eager.state_dict())
        run_eager, run_sdpa = forward_fn(eager, inputs), forward_fn(sdpa, inputs)
        times = alternate({"eager": run_eager, "sdpa": run_sdpa}, reps, warmup, budget)
        eager_time, sdpa_time = median(times["eager"]), median(times["sdpa"])
        agreement = f"{cosine(run_eager(), run_sdpa()):.6f}"
        rows.append([f"{tower} {preset}", f"{length:,}", eager_time, sdpa_time, eager_time / sdpa_time, agreement])
    headers = ["tower", "tokens", "eager s", "SDPA s", "SDPA speed-up", "cosine(pooled)"]
    return "### Eager vs SDPA attention (forward, inference mode)\n\n" + markdown_table(headers, rows)


def bf16_section(cases: list[tuple[str, str, int]], reps: int, warmup: int, budget: float | None = None) -> str:
    rows = []
    for tower, preset, length in cases:
        model, inputs = tower_model(tower, preset, length)
        bf16_model = _bf16_copy(model)
        times = alternate(
            {
                "fp32": forward_fn(model, inputs),
                "autocast": forward_fn(model, inputs, autocast=True),
                "bf16 weights": forward_fn(bf16_model, inputs),
            },
            reps,
            warmup,
            budget,
        )
        fp32 = median(times["fp32"])
        agreement = bf16_agreement(model, inputs)
        for variant in ("autocast", "bf16 weights"):
            bf16 = median(times[variant])
            rows.append(
                [f"{tower} {preset}", f"{length:,}", variant, fp32, bf16, fp32 / bf16, f"{agreement[variant]:.6f}"]
            )
    headers = ["tower", "tokens", "variant", "fp32 s", "bf16 s", "bf16 speed-up", "cosine(pooled) vs fp32"]
    return "### fp32 vs bf16 inference (forward)\n\n" + markdown_table(headers, rows)


def compiled_forward_fn(model: torch.nn.Module, inputs: dict) -> Callable[[], torch.Tensor]:
    """
    [`forward_fn`] through the README's compiled inference path: `torch.compile` with inductor's weight freezing
    (weights constant-folded and prepacked), which the global `freezing` flag enables; `options={"freezing": True}`
    does not bring the same speed-up here.
    """
    run = forward_fn(torch.compile(model), inputs)

    def frozen() -> torch.Tensor:
        with torch._inductor.config.patch(freezing=True):
            return run()

    return frozen


def compile_section(cases: list[tuple[str, str, int]], reps: int, warmup: int, budget: float | None = None) -> str:
    rows = []
    for tower, preset, length in cases:
        model, inputs = tower_model(tower, preset, length)
        eager, compiled = forward_fn(model, inputs), compiled_forward_fn(model, inputs)
        start = time.perf_counter()
        compiled()
        compile_seconds = time.perf_counter() - start
        times = alternate({"eager": eager, "compiled": compiled}, reps, warmup, budget)
        eager_time, compiled_time = median(times["eager"]), median(times["compiled"])
        agreement = f"{cosine(eager(), compiled()):.6f}"
        label = f"{tower} {preset}"
        rows.append(
            [label, f"{length:,}", compile_seconds, eager_time, compiled_time, eager_time / compiled_time, agreement]
        )
    headers = ["tower", "tokens", "compile s (first call)", "eager s", "compiled s", "speed-up", "cosine(pooled)"]
    return (
        "### `torch.compile` (forward, inference mode, inductor with `torch._inductor.config.freezing = True`)\n\n"
        + markdown_table(headers, rows)
    )


def compiled_train_step_fn(model: torch.nn.Module, inputs: dict) -> Callable[[], None]:
    """[`train_step_fn`] of `torch.compile(model)` (inductor; forward and backward graphs compiled on the first call)."""
    return train_step_fn(torch.compile(model), inputs)


def compiled_training_section(
    cases: list[tuple[str, str, int]], reps: int, warmup: int, budget: float | None = None
) -> str:
    """Forward+backward of VATT and its peer, each eager and compiled, alternating all four in every round."""
    rows = []
    for tower, preset, length in cases:
        torch.manual_seed(0)
        pair, peer_name = (
            (audio_pair(preset, length), "ViTModel") if tower == "audio" else (text_pair(preset, length), "BertModel")
        )
        functions = {}
        compile_seconds = {}
        for name, model, inputs in (("vatt", pair.vatt, pair.vatt_inputs), ("peer", pair.peer, pair.peer_inputs)):
            functions[name] = train_step_fn(model, inputs)
            functions[f"compiled {name}"] = compiled_train_step_fn(model, inputs)
            start = time.perf_counter()
            functions[f"compiled {name}"]()
            compile_seconds[name] = time.perf_counter() - start
        times = {name: median(values) for name, values in alternate(functions, reps, warmup, budget).items()}
        rows.append(
            [
                f"{tower} {preset}",
                f"{length:,}",
                peer_name,
                compile_seconds["vatt"],
                compile_seconds["peer"],
                times["vatt"],
                times["compiled vatt"],
                times["vatt"] / times["compiled vatt"],
                times["peer"],
                times["compiled peer"],
                times["peer"] / times["compiled peer"],
                times["compiled peer"] / times["compiled vatt"],
            ]
        )
        del pair, functions
    headers = [
        "tower",
        "tokens",
        "peer",
        "VATT compile s",
        "peer compile s",
        "VATT eager s",
        "VATT compiled s",
        "VATT compile speed-up",
        "peer eager s",
        "peer compiled s",
        "peer compile speed-up",
        "compiled VATT vs compiled peer",
    ]
    return (
        "### `torch.compile` in training (forward+backward, dropout off, peers compiled too)\n\n"
        "Compile s = the first compiled forward+backward. The last column is compiled peer time / compiled VATT "
        "time (>= 1.0: VATT no slower).\n\n" + markdown_table(headers, rows)
    )


def text_memory_child(preset: str, length: int) -> dict:
    """One inference forward of a `length`-token transcript in one attention (meant for a fresh process)."""
    torch.manual_seed(0)
    run = forward_fn(*text_model(preset, length))
    start = time.perf_counter()
    run()
    return {"seconds": time.perf_counter() - start}


def text_memory_section(preset: str, lengths: list[int], threads: int) -> str:
    """Peak memory of whole-transcript text forwards by length, each in a fresh process."""
    config = VattTextConfig.from_preset(preset)
    rows = []
    for length in lengths:
        command = [sys.executable, __file__, "--threads", str(threads), "--text-memory-child", preset, str(length)]
        stdout, peak_rss = run_with_peak_rss(command)
        seconds = json.loads(stdout.strip().splitlines()[-1])["seconds"]
        dense_bias = config.num_attention_heads * (length + 1) ** 2 * 4 / 2**20
        rows.append([f"text {preset}", f"{length:,}", seconds, peak_rss / 2**20, dense_bias])
    headers = ["tower", "tokens", "forward s", "peak RSS MiB", "one dense (heads, L, L) fp32 bias MiB"]
    return (
        "### Long transcripts: text tower forward memory (one attention over all tokens, SDPA, inference mode)\n\n"
        "Each length runs in a fresh process (peak RSS includes Python, torch and the model). The relative bias is "
        "a strided view of its `2L - 1` offsets; the last column is what a materialised bias alone would take.\n\n"
        + markdown_table(headers, rows)
    )


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny dims, one repetition (smoke run)")
    parser.add_argument("--output", type=Path, help="also write the markdown here")
    parser.add_argument("--repetitions", type=int, help="timed repetitions (default 3, 1 with --quick)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all visible cores)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurements")
    parser.add_argument(
        "--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run (default: all)"
    )
    parser.add_argument(
        "--case-budget", type=float, default=None, help="seconds of timed rounds per comparison before stopping early"
    )
    parser.add_argument("--text-memory-child", nargs=2, metavar=("PRESET", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)
    if args.text_memory_child:
        preset, length = args.text_memory_child
        print(json.dumps(text_memory_child(preset, int(length))))
        report_peak_rss()
        return ""
    reps = args.repetitions or (1 if args.quick else 3)
    warmup = 1
    if args.quick:
        presets, audio_lengths, text_lengths, big = ["tiny"], {"tiny": [50, 100]}, [16, 32], "tiny"
        extra_audio, extra_text, memory_lengths = 50, 32, [32, 64]
        memory_preset, small = "tiny", "tiny"
    else:
        # Audio base at 4,800 patches (four windows in one attention) is left out: ~3 min of the run on 2 cores.
        presets, audio_lengths, text_lengths, big = (
            ["small", "base"],
            {"small": [1200, 4800], "base": [1200]},
            [512, 2048],
            "base",
        )
        extra_audio, extra_text, memory_lengths = 1200, 2048, [2048, 8192, 32768]
        memory_preset, small = "small", "small"
    budget = args.case_budget
    big_cases = [("audio", big, extra_audio), ("text", PRESETS[big][1], extra_text)]
    steps = {
        "peers": lambda: peer_section(presets, audio_lengths, text_lengths, reps, warmup, budget),
        "dropout": lambda: dropout_section(
            list(
                dict.fromkeys(
                    [("audio", small, extra_audio), ("audio", big, extra_audio), ("text", small, extra_text)]
                )
            ),
            reps,
            warmup,
            budget,
        ),
        "droptoken": lambda: drop_token_section(big, extra_audio, reps, warmup, budget),
        "attention": lambda: attention_section(big_cases, reps, warmup, budget),
        "bf16": lambda: bf16_section(
            [("audio", big, extra_audio), ("text", PRESETS[big][1], extra_text // 4)], reps, warmup, budget
        ),
        "memory": lambda: text_memory_section(memory_preset, memory_lengths, threads),
        "compile": lambda: compile_section(big_cases, reps, warmup, budget),
        "compile-training": lambda: compiled_training_section(
            [("audio", small, extra_audio), ("text", small, extra_text)], reps, warmup, budget
        ),
    }
    if args.quick or args.no_compile:
        steps = {name: step for name, step in steps.items() if not name.startswith("compile")}
    sections = []
    for step in (steps[name] for name in SECTIONS if name in steps and name in args.sections):
        sections.append(f"{step()}\n\n({load_average()} after this section.)")
        print(sections[-1] + "\n", flush=True)
        if args.output:  # keep what is done if a later step fails
            args.output.write_text("\n\n".join(sections) + "\n")
    text = "\n\n".join(sections) + "\n"
    return text


if __name__ == "__main__":
    main()
