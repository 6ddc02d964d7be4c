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
Contrastive audio-text pretraining of VATT on long-form speech with 🤗 Accelerate.

Without any data flag it renders the embedded long-form corpus (first use only) and trains the CPU-sized preset:

    python examples/run_pretraining.py --output_dir outputs/vatt-cpu

The same script runs on many GPUs or nodes, e.g.

    accelerate launch --config_file examples/accelerate_configs/multi_gpu_ddp.yaml examples/run_pretraining.py \
        --model_preset small --dataset_name /data/my_speech_dataset --per_device_train_batch_size 64

Training pairs are audio windows of long recordings with the words spoken inside them (plus the neighbouring
windows' words for MIL-NCE), drawn by `modeling_vatt.pretraining_pairs`; negatives come from every process. The final model,
processor and model card are written at the top of `--output_dir`, resumable checkpoints beneath it
(`checkpoints/step_N`). A new run refuses an `--output_dir` holding another run unless `--overwrite_output_dir`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoProcessor, PreTrainedConfig, get_scheduler

from modeling_vatt import VattConfig, VattForContrastivePretraining, vatt_contrastive_loss
from modeling_vatt.audio_augmentation import WaveformAugmentation
from modeling_vatt.corpus import EXTRA_TRAINING_VOICE_SETS
from modeling_vatt.feature_extraction_vatt import VattFeatureExtractor
from modeling_vatt.metrics import load_retrieval_metric
from modeling_vatt.model_card import render_model_card
from modeling_vatt.pretraining_pairs import (
    LongFormEpochSampler,
    LongFormPairDataset,
    LongFormPairSampler,
    LongFormRecordings,
    collate_long_form_pairs,
)
from modeling_vatt.processing_vatt import VattProcessor
from modeling_vatt.speech_data import SkipCounter, ensure_splits, load_speech_dataset
from modeling_vatt.tokenization_vatt import VattTokenizer
from modeling_vatt.voice_evaluation import (
    EVALUATION_SETS,
    format_voice_table,
    load_evaluation_set,
    resolve_sets,
    with_confidence_intervals,
)
from modeling_vatt.word_vectors import tokenizer_word_vectors

logger = logging.getLogger(__name__)

LR_SCHEDULERS = ("cosine", "linear", "constant_with_warmup", "vatt_stepwise_cosine")
CORPUS_DATA_NAME = "vatt-embedded-long-form-corpus"
REPOSITORY_SPEECH_FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "speech"
CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)$")
HUB_IGNORE_PATTERNS = ["checkpoints/*", "checkpoints/**", "runs/*", "runs/**"]
WEIGHT_FILE_PATTERNS = ("model*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin*")
SECRET_ARGUMENTS = ("hub_token",)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    data = parser.add_argument_group("data (default: the embedded long-form corpus)")
    data.add_argument("--dataset_name", help="`datasets` Hub name or a `save_to_disk` folder.")
    data.add_argument("--dataset_config_name", help="Configuration of `--dataset_name` (Hub datasets only).")
    data.add_argument("--train_file", help="Training data: a CSV/JSONL manifest or a folder of audio + .txt files.")
    data.add_argument("--validation_file", help="Evaluation data in the same forms as `--train_file`.")
    data.add_argument("--audio_column", default="audio", help="Audio column of a dataset or manifest.")
    data.add_argument("--text_column", default="text", help="Transcript column of a dataset or manifest.")
    data.add_argument("--validation_split_percentage", type=float, default=10.0, help="Held out when no eval split.")
    data.add_argument("--corpus_dir", help="Where the embedded corpus is rendered (default: ~/.cache/vatt/...).")
    data.add_argument("--corpus_size", default="default", choices=("tiny", "small", "default"))
    data.add_argument("--max_eval_recordings", type=int, help="Evaluate on at most this many recordings.")
    data.add_argument(
        "--extra_training_voices",
        type=extra_voice_sets,
        default=[],
        help=f"Comma-separated extra renderings of the embedded corpus's training passages, from "
        f"{EXTRA_TRAINING_VOICE_SETS}: 'festival' adds Festival's ked diphone voice (`apt-get install festival "
        "festvox-kdlpc16k`), training audio that is not espeak-ng.",
    )
    data.add_argument(
        "--eval_voice_sets",
        default="auto",
        help=f"Comma-separated evaluation sets across voices for the final evaluation, from {EVALUATION_SETS}; "
        "'auto' (default): every set available when training on the embedded corpus (piper needs vatt[piper]), "
        "only real_speech otherwise; 'none' skips them.",
    )
    data.add_argument(
        "--real_speech_dir",
        default=str(REPOSITORY_SPEECH_FIXTURES) if REPOSITORY_SPEECH_FIXTURES.is_dir() else None,
        help="Recorded speech with transcripts.tsv for the real_speech set (default: the repository's fixtures).",
    )
    data.add_argument("--window_seconds", type=float, default=None, help="Training window (default: position table).")
    data.add_argument("--num_text_candidates", type=int, default=1, help="Texts per window; > 1 gives MIL-NCE.")
    data.add_argument("--max_text_length", type=int, default=64, help="Words kept per training window text.")
    data.add_argument("--audio_cache_gb", type=float, default=4.0, help="Decoded audio kept in memory per process.")
    data.add_argument("--preprocessing_num_workers", type=int, default=0, help="DataLoader worker processes.")

    augment = parser.add_argument_group("augmentation of training windows (off by default; see audio_augmentation)")
    augment.add_argument(
        "--speed_perturbation", type=float, default=0.0, help="Speed factors drawn from [1 - x, 1 + x], e.g. 0.15."
    )
    augment.add_argument("--random_eq_db", type=float, default=0.0, help="Random equaliser within +-x dB, e.g. 10.")
    augment.add_argument(
        "--noise_snr_db",
        type=snr_range,
        default=None,
        help="White noise at an SNR drawn from LOW,HIGH dB, e.g. 15,40.",
    )
    augment.add_argument(
        "--augmentation_probability",
        type=float,
        default=1.0,
        help="Share of the windows perturbed; the rest stay clean.",
    )

    model = parser.add_argument_group("model")
    model.add_argument("--model_name_or_path", help="Continue from a saved VATT model + processor.")
    model.add_argument(
        "--model_preset", default="cpu", choices=sorted(VattConfig.PRESETS), help="`VattConfig` preset of a new model."
    )
    model.add_argument("--config_overrides", help="JSON merged into the preset, e.g. '{\"audio_config\": {...}}'.")
    model.add_argument("--vocab_size", type=int, default=8192, help="Word vocabulary built from the training split.")
    model.add_argument("--min_word_frequency", type=int, default=1, help="Rarer training words map to <unk>.")
    model.add_argument(
        "--word_vectors",
        default="char_ngram",
        choices=("char_ngram", "random"),
        help="Word table of a model from scratch: character n-gram vectors (modeling_vatt.word_vectors) or random.",
    )
    model.add_argument("--loss_type", choices=("nce", "symmetric"), help="Contrastive loss (default: the config's).")
    model.add_argument("--drop_token_rate", type=float, help="Audio DropToken rate (default: the config's).")
    model.add_argument("--gradient_checkpointing", action="store_true", help="Trade compute for activation memory.")

    train = parser.add_argument_group("training")
    train.add_argument("--output_dir", default="outputs/vatt-pretraining", help="Model, card, plots, checkpoints.")
    train.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="Start a new run in a non-empty `--output_dir`, deleting the older run's checkpoints and logs.",
    )
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--per_device_train_batch_size", type=int, default=32)
    train.add_argument("--per_device_eval_batch_size", type=int, default=32)
    train.add_argument("--num_train_epochs", type=int, default=30)
    train.add_argument("--max_train_steps", type=int, help="Overrides `--num_train_epochs` when set.")
    train.add_argument("--gradient_accumulation_steps", type=int, default=1)
    train.add_argument("--learning_rate", type=float, default=1e-3)
    train.add_argument("--weight_decay", type=float, default=0.0)
    train.add_argument("--adam_beta1", type=float, default=0.9)
    train.add_argument("--adam_beta2", type=float, default=0.999)
    train.add_argument("--adam_epsilon", type=float, default=1e-7)
    train.add_argument("--max_grad_norm", type=float, default=0.0, help="0 disables clipping (the original's).")
    train.add_argument(
        "--lr_scheduler_type",
        default="cosine",
        choices=LR_SCHEDULERS,
        help="Linear warm-up, then: cosine decay to 0, linear decay, constant, or the original VATT schedule "
        "(half-cosine from the peak down to `--min_lr_ratio` of it).",
    )
    train.add_argument("--num_warmup_steps", type=int, default=None, help="Default: 10%% of the training steps.")
    train.add_argument("--min_lr_ratio", type=float, default=0.5, help="Final LR share of `vatt_stepwise_cosine`.")
    train.add_argument("--mixed_precision", choices=("no", "fp16", "bf16"), help="Default: accelerate's config.")
    train.add_argument("--checkpointing_steps", type=int, default=None, help="Save a resumable state every N steps.")
    train.add_argument("--checkpoints_total_limit", type=int, default=None, help="Keep only the last K checkpoints.")
    train.add_argument("--resume_from_checkpoint", help="`latest` or a checkpoint folder.")
    train.add_argument("--eval_steps", type=int, default=None, help="Evaluate every N steps (and always at the end).")
    train.add_argument("--logging_steps", type=int, default=10)
    train.add_argument("--with_tracking", action="store_true", help="Log to TensorBoard under `output_dir/runs`.")
    train.add_argument("--report_to", default="tensorboard", help="Accelerate tracker used with `--with_tracking`.")

    hub = parser.add_argument_group("Hub")
    hub.add_argument("--push_to_hub", action="store_true", help="Upload `--output_dir` at the end.")
    hub.add_argument("--hub_model_id", help="Repository id, e.g. `user/vatt-long-form`.")
    hub.add_argument("--hub_token", help="Token (default: the logged-in one).")
    hub.add_argument("--hub_private_repo", action="store_true")

    args = parser.parse_args(argv)
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id.")
    if args.num_text_candidates < 1:
        parser.error("--num_text_candidates must be at least 1.")
    if args.checkpoints_total_limit is not None and args.checkpoints_total_limit < 1:
        parser.error("--checkpoints_total_limit must be at least 1.")
    if bool(args.train_file) + bool(args.dataset_name) > 1:
        parser.error("Give either --dataset_name or --train_file, not both.")
    if args.validation_file and not args.train_file:
        parser.error("--validation_file goes with --train_file.")
    if args.extra_training_voices and (args.train_file or args.dataset_name):
        parser.error("--extra_training_voices re-renders the embedded corpus; it does not go with your own data.")
    if args.overwrite_output_dir and args.resume_from_checkpoint:
        parser.error("--overwrite_output_dir starts a new run; it cannot resume one (--resume_from_checkpoint).")
    return args


# ----------------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------------


def snr_range(value: str) -> str:
    """Checks a `LOW,HIGH` decibel range and keeps it as text (a scalar the tracker can log)."""
    try:
        low, high = (float(part) for part in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH in decibels, got {value!r}") from None
    if low > high:
        raise argparse.ArgumentTypeError(f"LOW must not exceed HIGH, got {value!r}")
    return value


def waveform_augmentation(args: argparse.Namespace) -> WaveformAugmentation:
    snr_db = tuple(float(part) for part in args.noise_snr_db.split(",")) if args.noise_snr_db else None
    return WaveformAugmentation(
        speed=args.speed_perturbation,
        eq_db=args.random_eq_db,
        snr_db=snr_db,
        probability=args.augmentation_probability,
    )


def augmentation_description(augmentation: WaveformAugmentation) -> str:
    parts = []
    if augmentation.speed:
        parts.append(f"speed x{1 - augmentation.speed:g}-{1 + augmentation.speed:g}")
    if augmentation.eq_db:
        parts.append(f"random equaliser +-{augmentation.eq_db:g} dB")
    if augmentation.snr_db:
        parts.append(f"white noise at {augmentation.snr_db[0]:g}-{augmentation.snr_db[1]:g} dB SNR")
    if not parts:
        return "none"
    share = "" if augmentation.probability >= 1 else f" on {augmentation.probability:.0%} of the windows"
    return ", ".join(parts) + share


def extra_voice_sets(value: str) -> list[str]:
    """Parses `--extra_training_voices`: comma-separated names from `EXTRA_TRAINING_VOICE_SETS`."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in EXTRA_TRAINING_VOICE_SETS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown voice sets {unknown}; choose from {EXTRA_TRAINING_VOICE_SETS}")
    return names


def default_corpus_dir(size: str) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "vatt" / f"corpus-{size}"


def corpus_dir_of(args: argparse.Namespace) -> Path:
    return Path(args.corpus_dir) if args.corpus_dir else default_corpus_dir(args.corpus_size)


def voice_set_names(args: argparse.Namespace, data_name: str) -> list[str]:
    """The evaluation sets across voices that `--eval_voice_sets` asks for (see `modeling_vatt.voice_evaluation`)."""
    auto = None if data_name == CORPUS_DATA_NAME else ["real_speech"]
    return resolve_sets(args.eval_voice_sets, args.real_speech_dir, auto)


def load_raw_data(args: argparse.Namespace, accelerator: Accelerator, skips: SkipCounter) -> tuple[Any, str]:
    """The training data as a `DatasetDict` with `train`, `validation` (and maybe `test`), plus a name for the card."""
    from datasets import DatasetDict, load_dataset

    columns = {"audio_column": args.audio_column, "text_column": args.text_column}
    if args.train_file:
        # An audio folder has no columns to name; manifests and datasets do.
        train = load_speech_dataset(args.train_file, skips=skips, **_column_args(args.train_file, columns))
        if not args.validation_file:
            return ensure_splits(train, args.validation_split_percentage / 100, args.seed), Path(args.train_file).name
        validation = load_speech_dataset(
            args.validation_file, skips=skips, **_column_args(args.validation_file, columns)
        )
        return DatasetDict(train=train, validation=validation), Path(args.train_file).name
    if args.dataset_name:
        if Path(args.dataset_name).is_dir():
            data = load_speech_dataset(args.dataset_name, skips=skips, **columns)
        else:
            data = load_speech_dataset(
                load_dataset(args.dataset_name, args.dataset_config_name), skips=skips, **columns
            )
        splits = ensure_splits(data, args.validation_split_percentage / 100, args.seed)
        if isinstance(data, DatasetDict) and "test" in data and "validation" in data:
            splits["test"] = data["test"]
        return splits, args.dataset_name
    from datasets import concatenate_datasets

    from modeling_vatt.corpus import build_corpus

    corpus_dir, show = corpus_dir_of(args), accelerator.is_local_main_process
    with accelerator.main_process_first():
        corpus = build_corpus(corpus_dir, size=args.corpus_size, show_progress=show)
        extra = [
            build_corpus(corpus_dir / "voice_sets" / name, size=args.corpus_size, voice_set=name, show_progress=show)
            for name in args.extra_training_voices
        ]
    corpus["train"] = concatenate_datasets([corpus["train"], *(rendering["train"] for rendering in extra)])
    return corpus, CORPUS_DATA_NAME


def _column_args(source: str, columns: dict[str, str]) -> dict[str, str]:
    return {} if Path(source).is_dir() else columns


def collate_recordings(
    items: list[tuple[np.ndarray, str]], processor: VattProcessor, sampling_rate: int
) -> dict[str, torch.Tensor]:
    audio, texts = zip(*items)
    return dict(processor(text=list(texts), audio=list(audio), sampling_rate=sampling_rate, return_tensors="pt"))


def check_window(window_samples: int, config: VattConfig) -> None:
    """Refuse training windows that would attend over more patches than the position table without windowing."""
    audio = config.audio_config
    num_patches = window_samples // audio.patch_size
    if num_patches > audio.max_position_embeddings and audio.long_input_mode == "full":
        seconds = audio.max_position_embeddings * audio.patch_size / audio.sampling_rate
        raise ValueError(
            f"A {window_samples / audio.sampling_rate:.2f} s training window has {num_patches} patches, more than the "
            f"{audio.max_position_embeddings}-row position table, and `long_input_mode='full'` would attend over all "
            f"of them at once (memory grows with the square of the length). Use --window_seconds {seconds:g} or less, "
            "or keep `long_input_mode='window'` so long inputs are encoded window by window."
        )


# ----------------------------------------------------------------------------------------------------------------------
# Model, processor, optimisation
# ----------------------------------------------------------------------------------------------------------------------


def load_pretrained_model(path: str, overrides: dict[str, Any]) -> VattForContrastivePretraining:
    """A saved model with `overrides` applied to its config before loading, so the config it saves describes its
    weights. Overrides that change the architecture (any weight missing, unexpected or of another shape) are refused."""
    config = VattConfig.from_pretrained(path)
    for key, value in overrides.items():
        target, fields = (getattr(config, key, None), value) if isinstance(value, dict) else (config, {key: value})
        if not isinstance(target, PreTrainedConfig):
            raise ValueError(f"--config_overrides: {key!r} is not a sub-config of {path}.")
        for name, field_value in fields.items():
            if not hasattr(target, name):
                raise ValueError(f"--config_overrides: {type(target).__name__} has no field {name!r}.")
            setattr(target, name, field_value)
    model, info = VattForContrastivePretraining.from_pretrained(
        path, config=config, dtype=torch.float32, ignore_mismatched_sizes=True, output_loading_info=True
    )
    changed = sorted(info["missing_keys"] | info["unexpected_keys"] | {key for key, *_ in info["mismatched_keys"]})
    if changed:
        raise ValueError(
            f"--config_overrides {json.dumps(overrides)} changes the architecture of {path} ({len(changed)} weights "
            f"differ, e.g. {changed[0]}); only options that keep the weights (dropout, DropToken, loss, ...) can be "
            "overridden on a loaded model."
        )
    return model


def build_model_and_processor(
    args: argparse.Namespace, train_texts: list[str]
) -> tuple[VattForContrastivePretraining, VattProcessor]:
    overrides = json.loads(args.config_overrides) if args.config_overrides else {}
    if args.model_name_or_path:
        model = load_pretrained_model(args.model_name_or_path, overrides)
        processor = AutoProcessor.from_pretrained(args.model_name_or_path)
    else:
        # The vocabulary comes from the training transcripts only: held-out text never leaks into the model.
        tokenizer = VattTokenizer.from_corpus(
            train_texts, vocab_size=args.vocab_size, min_frequency=args.min_word_frequency
        )
        text_overrides = {**overrides.get("text_config", {}), "vocab_size": len(tokenizer)}
        config = VattConfig.from_preset(args.model_preset, **{**overrides, "text_config": text_overrides})
        model = VattForContrastivePretraining(config)
        if args.word_vectors == "char_ngram":
            word_table = model.text_model.get_input_embeddings().weight
            with torch.no_grad():
                word_table.copy_(tokenizer_word_vectors(tokenizer, word_table.shape[1], seed=args.seed))
        audio_config = config.audio_config
        # Per-clip normalised waveforms: raw speech is ~0.1 in amplitude, ten times weaker than the LayerNorm'ed position
        # embeddings it is added to, which stalls training from scratch.
        feature_extractor = VattFeatureExtractor(
            sampling_rate=audio_config.sampling_rate, patch_size=audio_config.patch_size, do_normalize=True
        )
        processor = VattProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)
    if args.loss_type:
        model.config.loss_type = args.loss_type
    if args.drop_token_rate is not None:
        model.config.audio_config.drop_token_rate = args.drop_token_rate
    return model, processor


def contrastive_loss(model, batch: dict[str, torch.Tensor], accelerator: Accelerator) -> torch.Tensor:
    """The loss of a training batch with the negatives of every process (gathered with their gradients)."""
    output = model(**batch)
    unwrapped = accelerator.unwrap_model(model)
    return vatt_contrastive_loss(
        output.audio_embeds,
        output.text_embeds,
        unwrapped.logit_scale,
        unwrapped.config.loss_type,
        batch["text_candidate_mask"],
        gather=accelerator.num_processes > 1,
    )


def create_optimizer(model: torch.nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    """AdamW; biases, norms, tokens, tables and the temperature get no weight decay."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        is_matrix = parameter.ndim >= 2 and "embedding" not in name
        (decay if is_matrix else no_decay).append(parameter)
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(
        groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon
    )


def create_scheduler(optimizer, args: argparse.Namespace, num_processes: int):
    # A prepared scheduler steps once per process per optimisation step, hence the scaling.
    kwargs = {}
    name = args.lr_scheduler_type
    if name == "vatt_stepwise_cosine":
        name, kwargs = "cosine_with_min_lr", {"min_lr_rate": args.min_lr_ratio}
    return get_scheduler(
        name,
        optimizer=optimizer,
        num_warmup_steps=args.num_warmup_steps * num_processes,
        num_training_steps=args.max_train_steps * num_processes,
        scheduler_specific_kwargs=kwargs,
    )


# ----------------------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------------------


def cosine_similarity(audio: torch.Tensor, text: torch.Tensor) -> np.ndarray:
    audio = torch.nn.functional.normalize(audio.float(), dim=-1)
    text = torch.nn.functional.normalize(text.float(), dim=-1)
    return (audio @ text.T).cpu().numpy()


@torch.no_grad()
def embed(model, dataloader: DataLoader, accelerator: Accelerator) -> tuple[torch.Tensor, torch.Tensor]:
    """Audio and text embeddings of every pair of a prepared evaluation loader, gathered from all processes."""
    audio, text = [], []
    for batch in dataloader:
        batch.pop("text_candidate_mask", None)
        output = model(**batch)
        audio_embeds, text_embeds = accelerator.gather_for_metrics((output.audio_embeds, output.text_embeds))
        audio.append(audio_embeds.float().cpu())
        text.append(text_embeds.float().cpu())
    return torch.cat(audio), torch.cat(text)


def retrieval_metrics(similarity: np.ndarray, metric) -> dict[str, float]:
    """Both directions of R@1/5/10, median rank and chance levels; pair `i` is audio row `i` with text column `i`.
    R@K is only defined for K up to the number of candidates."""
    ks = [k for k in (1, 5, 10) if k <= similarity.shape[1]]
    return metric.compute(predictions=similarity.tolist(), references=list(range(similarity.shape[0])), ks=ks)


@dataclass
class EvalSet:
    windows: DataLoader
    recordings: DataLoader | None
    num_windows: int
    num_recordings: int


def build_eval_set(
    recordings: LongFormRecordings,
    processor: VattProcessor,
    window_samples: int,
    batch_size: int,
    max_text_length: int,
    loader_kwargs: dict[str, Any],
) -> EvalSet:
    """
    Loaders of every window of `recordings` (with the words spoken in it) and, when at least two recordings are
    longer than a window, of each whole recording with its transcript.
    """
    sampling_rate = recordings.sampling_rate
    sampler = LongFormPairSampler(window_samples=window_samples, sampling_rate=sampling_rate)
    windows = recordings.windows(sampler)
    collate = partial(
        collate_long_form_pairs,
        tokenizer=processor.tokenizer,
        max_text_length=max_text_length,
        feature_extractor=processor.feature_extractor,
    )
    window_loader = DataLoader(windows, batch_size=batch_size, collate_fn=collate, **loader_kwargs)
    long_ones = [r for r in recordings if r.num_samples > window_samples]
    recording_loader = None
    if len(long_ones) >= 2:
        items = [(recordings.audio(r), r.text) for r in long_ones]
        recording_collate = partial(collate_recordings, processor=processor, sampling_rate=sampling_rate)
        recording_loader = DataLoader(items, batch_size=1, collate_fn=recording_collate, **loader_kwargs)
    return EvalSet(window_loader, recording_loader, len(windows), len(long_ones))


def window_samples_for(audio_config: PreTrainedConfig, window_seconds: float | None) -> int:
    """Samples per window: `window_seconds` (default: the audio position table) rounded to whole patches."""
    patch, rate = audio_config.patch_size, audio_config.sampling_rate
    seconds = window_seconds or audio_config.window_length * patch / rate
    return max(1, round(seconds * rate / patch)) * patch


def prepare_eval_set(accelerator: Accelerator, eval_set: EvalSet) -> None:
    """Shards an evaluation set's loaders over the processes."""
    eval_set.windows = accelerator.prepare(eval_set.windows)
    if eval_set.recordings is not None:
        eval_set.recordings = accelerator.prepare(eval_set.recordings)


def evaluate_with_intervals(model, eval_set: EvalSet, accelerator: Accelerator, metric, name: str) -> dict[str, float]:
    """`evaluate_model`'s figures under `name/`, each R@K with its Wilson 95 % interval and number of queries."""
    results, _ = evaluate_model(model, eval_set, accelerator, metric)
    items = {"window": eval_set.num_windows, "recording": eval_set.num_recordings}
    return {f"{name}/{key}": value for key, value in with_confidence_intervals(results or {}, items).items()}


def evaluate_model(model, eval_set: EvalSet, accelerator: Accelerator, metric) -> tuple[dict[str, float], np.ndarray]:
    """
    Window-level (and recording-level) retrieval metrics plus the window similarity matrix. Every process embeds its
    share; the metrics are computed where `metric` is given (the main process) and are empty elsewhere.
    """
    was_training = model.training
    model.eval()
    similarities = {"window": cosine_similarity(*embed(model, eval_set.windows, accelerator))}
    if eval_set.recordings is not None:
        similarities["recording"] = cosine_similarity(*embed(model, eval_set.recordings, accelerator))
    model.train(was_training)
    results = {}
    if metric is not None:
        for level, similarity in similarities.items():
            results.update({f"{level}/{key}": value for key, value in retrieval_metrics(similarity, metric).items()})
    return results, similarities["window"]


def format_retrieval_table(results: dict[str, float], title: str = "") -> str:
    """A plain-text table of R@1/5/10 and median rank per level and direction, with chance levels."""
    lines = [title] if title else []
    lines.append(f"{'level / direction':<28}{'R@1':>16}{'R@5':>16}{'R@10':>16}{'median rank':>13}")
    for level in ("window", "recording"):
        for direction in ("audio_to_text", "text_to_audio"):
            prefix = f"{level}/{direction}"
            if f"{prefix}_R@1" not in results:
                continue
            cells = [
                f"{results[f'{prefix}_R@{k}']:.3f} ({results[f'{prefix}_chance_R@{k}']:.3f})"
                if f"{prefix}_R@{k}" in results
                else "-"
                for k in (1, 5, 10)
            ]
            lines.append(
                f"{prefix.replace('_to_', '->'):<28}{cells[0]:>16}{cells[1]:>16}{cells[2]:>16}"
                f"{results[f'{prefix}_median_rank']:>13.1f}"
            )
    lines.append("(chance level in parentheses)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------------


def list_checkpoints(checkpoint_root: Path) -> list[tuple[int, Path]]:
    """Completed checkpoints `(step, path)` in step order; temporary folders of interrupted saves are ignored."""
    if not checkpoint_root.is_dir():
        return []
    found = [
        (int(m.group(1)), path) for path in checkpoint_root.iterdir() if (m := CHECKPOINT_PATTERN.match(path.name))
    ]
    return sorted(found)


def save_checkpoint(
    accelerator: Accelerator, checkpoint_root: Path, step: int, state: dict[str, Any], total_limit: int | None
) -> Path:
    """`accelerator.save_state` into a temporary folder renamed to `step_<step>` once complete; keeps the last K."""
    final = checkpoint_root / f"step_{step}"
    temporary = checkpoint_root / f".step_{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (temporary / "trainer_state.json").write_text(json.dumps(state))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(temporary, final)
        if total_limit is not None:
            for _, old in list_checkpoints(checkpoint_root)[:-total_limit]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def resolve_checkpoint(value: str, checkpoint_root: Path) -> Path | None:
    if value != "latest":
        path = Path(value)
        if not (path / "trainer_state.json").is_file():
            raise ValueError(f"{path} is not a checkpoint written by this script (no trainer_state.json).")
        return path
    checkpoints = list_checkpoints(checkpoint_root)
    return checkpoints[-1][1] if checkpoints else None


def check_output_dir(args: argparse.Namespace) -> None:
    """Refuses to start a new run in a folder holding another run (its checkpoints would mix with the new ones)."""
    output_dir = Path(args.output_dir)
    if args.resume_from_checkpoint or args.overwrite_output_dir or not output_dir.is_dir():
        return
    if any(output_dir.iterdir()):
        raise ValueError(
            f"--output_dir {output_dir} is not empty: it holds another run. Resume that run with "
            "--resume_from_checkpoint, start over with --overwrite_output_dir, or choose another folder."
        )


def save_atomically(output_dir: Path, save: Callable[[Path], None]) -> None:
    """Runs `save(folder)` into a temporary folder beside the target, then moves the files in with `config.json`
    last, after removing the old one: an interrupted save leaves the old model or no `config.json` (which fails to
    load), never a new config beside old weights or a truncated file."""
    temporary = output_dir / ".final.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    save(temporary)
    (output_dir / "config.json").unlink(missing_ok=True)
    written = {path.name for path in temporary.iterdir()}
    for stale in (path for pattern in WEIGHT_FILE_PATTERNS for path in output_dir.glob(pattern)):
        if stale.name not in written:
            stale.unlink()  # e.g. an older single-file model beside new shards would be loaded in their place
    for path in sorted(temporary.iterdir(), key=lambda path: path.name == "config.json"):
        os.replace(path, output_dir / path.name)
    temporary.rmdir()


def tracked_hyperparameters(args: argparse.Namespace) -> dict[str, int | float | str | bool]:
    """The scalar arguments for the experiment tracker, without secrets (they would land in `runs/` in plain text)."""
    return {
        key: value
        for key, value in vars(args).items()
        if isinstance(value, (int, float, str, bool)) and key not in SECRET_ARGUMENTS
    }


# ----------------------------------------------------------------------------------------------------------------------
# Outputs: plots, card, Hub
# ----------------------------------------------------------------------------------------------------------------------


def plot_loss_curve(history: list[tuple[int, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, losses = zip(*history) if history else ((), ())
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(steps, losses, linewidth=1, label="training loss")
    if len(losses) >= 10:
        width = max(len(losses) // 20, 2)
        smooth = np.convolve(losses, np.ones(width) / width, mode="valid")
        axis.plot(steps[width - 1 :], smooth, linewidth=2, label=f"moving average ({width} steps)")
    axis.set(xlabel="optimisation step", ylabel="contrastive loss", title="VATT pretraining loss")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_similarity(similarity: np.ndarray, path: Path, max_items: int = 48) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = similarity[:max_items, :max_items]
    figure, axis = plt.subplots(figsize=(6, 5))
    image = axis.imshow(shown, cmap="viridis", aspect="auto")
    figure.colorbar(image, ax=axis, label="cosine similarity")
    axis.set(
        xlabel="text of window j",
        ylabel="audio window i",
        title=f"Evaluation windows: audio-text similarity ({len(shown)} of {len(similarity)})",
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_model_card(
    output_dir: Path, args: argparse.Namespace, model: VattForContrastivePretraining, results: dict, data_name: str
) -> None:
    audio, text = model.config.audio_config, model.config.text_config
    window_seconds = args.window_samples / audio.sampling_rate
    hyper_parameters = {
        "model preset": args.model_name_or_path or args.model_preset,
        "parameters": f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M",
        "audio tower": (
            f"{audio.num_hidden_layers} layers x {audio.hidden_size}, {audio.sampling_rate} Hz, "
            f"{audio.patch_features.replace('_', ' ')} patch features"
        ),
        "text tower": f"{text.num_hidden_layers} layers x {text.hidden_size}, {text.vocab_size} words",
        "word table": (
            ("trained" if text.trainable_word_embeddings else "frozen")
            + ("" if args.model_name_or_path else f", {args.word_vectors.replace('_', ' ')} initialisation")
        ),
        "training window": f"{window_seconds:.3g} s",
        "text candidates per window": args.num_text_candidates,
        "loss": f"{model.config.loss_type}{' (MIL)' if args.num_text_candidates > 1 else ''}",
        "DropToken rate": audio.drop_token_rate,
        "augmentation": augmentation_description(waveform_augmentation(args)),
        "optimiser": f"AdamW, lr {args.learning_rate:g}, weight decay {args.weight_decay:g}",
        "schedule": f"{args.lr_scheduler_type}, {args.num_warmup_steps} warm-up steps",
        "steps": args.max_train_steps,
        "global batch": args.global_batch_size,
        "seed": args.seed,
    }
    model_id = args.hub_model_id or output_dir.name
    card = render_model_card(
        None,
        model_name=model_id,
        model_id=model_id,
        dataset=data_name,
        training_data=training_data_description(data_name, args.extra_training_voices),
        hyperparameters=hyper_parameters,
        results=results,
    )
    (output_dir / "README.md").write_text(card, encoding="utf-8")


def training_data_description(data_name: str, extra_training_voices: Sequence[str] = ()) -> str:
    if data_name == CORPUS_DATA_NAME:
        festival = (
            " The training passages are also rendered with Festival's ked diphone voice (same rates and pitches, "
            "Festival's word timings)."
            if "festival" in extra_training_voices
            else ""
        )
        return (
            "The embedded long-form corpus of the `vatt` package: lecture-style passages of CPython's "
            "`pydoc_data.topics` (PSF licence) rendered offline into speech with espeak-ng (voices drawn from 6 "
            "accents x 25 variants, 140-200 words per minute, several pitches), 15 s to a few minutes per clip, with "
            f"espeak's word timings.{festival} Train/validation/test splits are disjoint passages. The evaluation "
            "across voices re-renders the held-out passages in espeak-ng accents and variants never used in training "
            "and in the neural piper voice, and adds real recorded speech."
        )
    return f"`{data_name}`: long recordings with transcripts (and word timings where available)."


def push_output_to_hub(
    output_dir: Path, repo_id: str, token: str | None = None, private: bool = False, api: Any = None
) -> None:
    """Upload the final model folder (without checkpoints or logs). `api` is an `HfApi`-like object (tests pass a fake)."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    api.create_repo(repo_id=repo_id, exist_ok=True, private=private)
    api.upload_folder(
        repo_id=repo_id,
        folder_path=str(output_dir),
        commit_message="End of training",
        ignore_patterns=HUB_IGNORE_PATTERNS,
    )


# ----------------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None, hub_api: Any = None) -> dict[str, float]:
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    check_output_dir(args)  # on every process before any of them writes
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=args.report_to if args.with_tracking else None,
        project_dir=str(output_dir / "runs"),
    )
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S")
    logger.setLevel(logging.INFO if accelerator.is_main_process else logging.WARNING)
    logger.info(accelerator.state)
    set_seed(args.seed)
    if accelerator.is_main_process:
        if args.overwrite_output_dir:
            for folder in ("checkpoints", "runs"):
                shutil.rmtree(output_dir / folder, ignore_errors=True)
        output_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()

    skips = SkipCounter()
    raw, data_name = load_raw_data(args, accelerator, skips)
    train_texts = [text for text in raw["train"]["text"] if text and text.strip()]
    model, processor = build_model_and_processor(args, train_texts)
    audio_config = model.config.audio_config
    sampling_rate = audio_config.sampling_rate
    args.window_samples = window_samples_for(audio_config, args.window_seconds)
    check_window(args.window_samples, model.config)
    if args.gradient_checkpointing:
        model.activation_checkpointing_enable()

    show = accelerator.is_local_main_process
    cache = args.audio_cache_gb * 2**30

    def recordings(split: str) -> LongFormRecordings:
        data = raw[split]
        if split != "train" and args.max_eval_recordings:
            data = data.select(range(min(args.max_eval_recordings, data.num_rows)))
        return LongFormRecordings(data, sampling_rate, skips, cache, name=split, show_progress=show)

    # Every split is decoded and checked here, so bad evaluation data stops the run before training, not after.
    train_recordings, eval_recordings = recordings("train"), recordings("validation")
    test_recordings = recordings("test") if "test" in raw else None

    pair_sampler = LongFormPairSampler(
        window_samples=args.window_samples,
        sampling_rate=sampling_rate,
        num_neighbor_segments=args.num_text_candidates - 1,
    )
    train_dataset = LongFormPairDataset(train_recordings, pair_sampler, args.seed, waveform_augmentation(args))
    epoch_sampler = LongFormEpochSampler(train_dataset, args.seed)
    if len(train_dataset) < args.per_device_train_batch_size * accelerator.num_processes:
        raise ValueError(
            f"The training data gives {len(train_dataset)} windows per epoch, fewer than one global batch of "
            f"{args.per_device_train_batch_size * accelerator.num_processes}; lower --per_device_train_batch_size."
        )
    collate = partial(
        collate_long_form_pairs,
        tokenizer=processor.tokenizer,
        max_text_length=args.max_text_length,
        feature_extractor=processor.feature_extractor,
    )
    loader_kwargs = {
        "num_workers": args.preprocessing_num_workers,
        "generator": torch.Generator().manual_seed(args.seed),
    }
    train_dataloader = DataLoader(
        train_dataset,
        sampler=epoch_sampler,
        batch_size=args.per_device_train_batch_size,
        collate_fn=collate,
        drop_last=True,  # equal shapes on every process for the gathered negatives, no wrapped-around duplicates
        **loader_kwargs,
    )

    def make_eval_set(split: LongFormRecordings) -> EvalSet:
        return build_eval_set(
            split, processor, args.window_samples, args.per_device_eval_batch_size, args.max_text_length, loader_kwargs
        )

    eval_set, test_set = make_eval_set(eval_recordings), test_recordings and make_eval_set(test_recordings)
    voice_sets = {}
    for name in voice_set_names(args, data_name):
        with accelerator.main_process_first():
            data = load_evaluation_set(name, corpus_dir_of(args), args.corpus_size, args.real_speech_dir, show)
        voice_sets[name] = make_eval_set(LongFormRecordings(data, sampling_rate, skips, cache, name=name))

    optimizer = create_optimizer(model, args)
    num_update_steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    if args.max_train_steps is None:
        args.max_train_steps = args.num_train_epochs * num_update_steps_per_epoch
    if args.num_warmup_steps is None:
        args.num_warmup_steps = args.max_train_steps // 10
    scheduler = create_scheduler(optimizer, args, accelerator.num_processes)

    model, optimizer, train_dataloader, scheduler = accelerator.prepare(model, optimizer, train_dataloader, scheduler)
    for prepared_set in [eval_set, test_set, *voice_sets.values()]:
        if prepared_set is not None:
            prepare_eval_set(accelerator, prepared_set)
    num_update_steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    num_epochs = math.ceil(args.max_train_steps / num_update_steps_per_epoch)
    args.global_batch_size = (
        args.per_device_train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    )

    if args.with_tracking:
        accelerator.init_trackers("vatt_pretraining", tracked_hyperparameters(args))

    metric = load_retrieval_metric(keep_in_memory=True) if accelerator.is_main_process else None
    checkpoint_root = output_dir / "checkpoints"
    completed_steps, loss_history, eval_history = 0, [], []
    if args.resume_from_checkpoint:
        checkpoint = resolve_checkpoint(args.resume_from_checkpoint, checkpoint_root)
        if checkpoint is None:
            logger.info("No checkpoint in %s: starting from scratch.", checkpoint_root)
        else:
            accelerator.load_state(str(checkpoint))
            state = json.loads((checkpoint / "trainer_state.json").read_text())
            completed_steps = state["completed_steps"]
            loss_history = [tuple(item) for item in state["loss_history"]]
            eval_history = state["eval_history"]
            logger.info("Resumed from %s (step %d).", checkpoint, completed_steps)

    logger.info("***** Running VATT pretraining *****")
    logger.info(
        "  Recordings: %d train, %d eval (%d windows)",
        len(train_recordings),
        len(eval_recordings),
        eval_set.num_windows,
    )
    logger.info(
        "  Window: %.2f s, %d text candidate(s)", args.window_samples / sampling_rate, args.num_text_candidates
    )
    logger.info("  Windows per epoch = %d, epochs = %d", len(train_dataset), num_epochs)
    logger.info("  Global batch = %d, optimisation steps = %d", args.global_batch_size, args.max_train_steps)
    progress = tqdm(range(args.max_train_steps), disable=not show, desc="training", initial=completed_steps)

    def run_eval(step: int, title: str) -> dict[str, float]:
        results, similarity = evaluate_model(model, eval_set, accelerator, metric)
        if accelerator.is_main_process:
            logger.info("\n%s", format_retrieval_table(results, f"{title} (step {step})"))
        return results, similarity

    model.train()
    start_epoch = completed_steps // num_update_steps_per_epoch
    resume_batches = (completed_steps % num_update_steps_per_epoch) * args.gradient_accumulation_steps
    running_loss, running_count = 0.0, 0
    for epoch in range(start_epoch, num_epochs):
        if completed_steps >= args.max_train_steps:  # also a finished run resumed: evaluate and save again, no step
            break
        epoch_sampler.epoch = epoch
        batches = train_dataloader
        if epoch == start_epoch and resume_batches:
            batches = accelerator.skip_first_batches(train_dataloader, resume_batches)
        for batch in batches:
            with accelerator.accumulate(model):
                loss = contrastive_loss(model, batch, accelerator)
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            running_loss += accelerator.gather(loss.detach()).mean().item()
            running_count += 1
            if not accelerator.sync_gradients:
                continue
            completed_steps += 1
            progress.update(1)
            step_loss = running_loss / running_count
            running_loss, running_count = 0.0, 0
            loss_history.append((completed_steps, step_loss))
            progress.set_postfix(loss=f"{step_loss:.3f}")
            if args.with_tracking:
                accelerator.log(
                    {"train/loss": step_loss, "train/lr": scheduler.get_last_lr()[0]}, step=completed_steps
                )
            if completed_steps % args.logging_steps == 0:
                recent = [value for _, value in loss_history[-args.logging_steps :]]
                logger.info(
                    "step %d: loss %.4f, lr %.2e", completed_steps, np.mean(recent), scheduler.get_last_lr()[0]
                )
            last_step = completed_steps >= args.max_train_steps
            if args.eval_steps and completed_steps % args.eval_steps == 0 and not last_step:
                results, _ = run_eval(completed_steps, "validation")
                if accelerator.is_main_process:
                    eval_history.append({"step": completed_steps, **results})
                if args.with_tracking:
                    accelerator.log({f"eval/{k}": v for k, v in (results or {}).items()}, step=completed_steps)
            if args.checkpointing_steps and completed_steps % args.checkpointing_steps == 0:
                state = {
                    "completed_steps": completed_steps,
                    "loss_history": loss_history,
                    "eval_history": eval_history,
                }
                path = save_checkpoint(
                    accelerator, checkpoint_root, completed_steps, state, args.checkpoints_total_limit
                )
                logger.info("Saved checkpoint %s", path)
            if last_step:
                break
    progress.close()

    # The model is saved before the final evaluation, so a failing evaluation cannot lose the trained model.
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(model)
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.is_main_process:

        def save(folder: Path) -> None:
            unwrapped.save_pretrained(str(folder), state_dict=state_dict)
            processor.save_pretrained(str(folder))

        save_atomically(output_dir, save)
        logger.info("Saved the final model to %s", output_dir)
    accelerator.wait_for_everyone()

    results, similarity = run_eval(completed_steps, "validation")
    final = {f"validation/{key}": value for key, value in (results or {}).items()}
    if test_set is not None:
        test_results, _ = evaluate_model(model, test_set, accelerator, metric)
        final.update({f"test/{key}": value for key, value in (test_results or {}).items()})
        if accelerator.is_main_process:
            logger.info("\n%s", format_retrieval_table(test_results, f"test (step {completed_steps})"))
    for name, voice_set in voice_sets.items():
        final.update(evaluate_with_intervals(model, voice_set, accelerator, metric, name))
    if voice_sets and accelerator.is_main_process:
        table = format_voice_table(final, list(voice_sets))
        logger.info("\nAcross voices (held-out passages; Wilson 95%% intervals):\n%s", table)
    if args.with_tracking:
        accelerator.log({f"final/{k}": v for k, v in final.items()}, step=completed_steps)
        accelerator.end_training()

    if accelerator.is_main_process:
        plot_loss_curve(loss_history, output_dir / "loss_curve.png")
        plot_similarity(similarity, output_dir / "similarity_matrix.png")
        summary = {
            "completed_steps": completed_steps,
            "eval_windows": eval_set.num_windows,
            "eval_recordings": eval_set.num_recordings,
            "skipped_rows": dict(skips.counts),
            **final,
        }
        (output_dir / "eval_results.json").write_text(json.dumps(summary, indent=1))
        (output_dir / "trainer_history.json").write_text(json.dumps({"loss": loss_history, "eval": eval_history}))
        write_model_card(output_dir, args, unwrapped, final, data_name)
        logger.info(skips.report())
        if args.push_to_hub:
            push_output_to_hub(output_dir, args.hub_model_id, args.hub_token, args.hub_private_repo, api=hub_api)
            logger.info("Pushed %s to %s", output_dir, args.hub_model_id)
    accelerator.wait_for_everyone()
    return final


if __name__ == "__main__":
    main()
