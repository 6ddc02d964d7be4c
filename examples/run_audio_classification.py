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
Fine-tune the VATT audio tower for audio classification, or train a linear probe on its frozen features, with
🤗 Accelerate.

    python examples/run_audio_classification.py --model_name_or_path outputs/vatt-cpu \
        --dataset_name data/sound_classes/dataset --label_column label --output_dir outputs/vatt-sound-classes

    python examples/run_audio_classification.py --model_name_or_path outputs/vatt-cpu --linear_probe ...

`--model_name_or_path` is a `VattForContrastivePretraining` folder (its audio tower is used), a `VattAudioModel` or a
`VattForAudioClassification` folder (e.g. a converted fine-tuned WaT checkpoint). The dataset (a `save_to_disk` folder
or anything `datasets.load_dataset` accepts) needs an audio column (an `Audio` feature or file paths) and a label
column: a class name or id per recording, or a list of them for multi-label data (sigmoid + binary cross-entropy).

Fine-tuning trains on random crops of `--max_length_seconds` (default: one window of the position table) and
evaluates on whole recordings (long ones window by window). `--linear_probe` freezes the tower, computes the features of
every recording once (cached on disk, keyed by model and data) and trains only the classifier. The output folder is
ready for the Hub: model, feature extractor, model card and the code files for `trust_remote_code`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from modeling_vatt import VattForAudioClassification
from modeling_vatt.classification_data import ClassificationCollator, label_schema, with_undecoded_audio
from modeling_vatt.feature_extraction_vatt import VattFeatureExtractor
from modeling_vatt.linear_probe import (
    WindowFeatures,
    cached_window_features,
    predict_from_features,
    train_linear_probe,
)
from modeling_vatt.metrics import classification_metrics
from modeling_vatt.model_card import render_model_card
from modeling_vatt.speech_data import SkipCounter, drop_unreadable_audio, ensure_splits

logger = logging.getLogger(__name__)

MODEL_CARD_TEMPLATE = Path(__file__).with_name("audio_classification_model_card.md")
DEFAULT_CACHE_DIR = Path(os.environ.get("VATT_CACHE", Path.home() / ".cache" / "vatt")) / "features"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--dataset_name", required=True, help="A `save_to_disk` folder or a `load_dataset` path/name.")
    data.add_argument("--dataset_config_name", help="Configuration of `--dataset_name` (`load_dataset` only).")
    data.add_argument("--train_split_name", default="train")
    data.add_argument("--eval_split_name", default="validation", help="Falls back to `test`, else carved from train.")
    data.add_argument("--eval_split_percentage", type=float, default=10.0, help="Held out when no eval split exists.")
    data.add_argument("--audio_column", default="audio", help="Audio feature or file-path column.")
    data.add_argument("--label_column", default="label", help="Label column (a list of labels for multi-label).")
    data.add_argument("--max_length_seconds", type=float, help="Training crop (default: one position-table window).")
    data.add_argument("--max_train_samples", type=int, help="Use only the first N training recordings.")
    data.add_argument("--max_eval_samples", type=int, help="Use only the first N evaluation recordings.")

    model = parser.add_argument_group("model")
    model.add_argument("--model_name_or_path", required=True, help="Pretrained, converted or fine-tuned VATT folder.")
    model.add_argument("--classifier_head", choices=("linear", "original"), help="Default: the checkpoint's (linear).")
    model.add_argument("--classifier_dropout", type=float, help="Dropout before the classifier.")
    model.add_argument("--window_logits_aggregation", choices=("mean", "max"), help="Combining window logits.")

    train = parser.add_argument_group("training")
    train.add_argument("--linear_probe", action="store_true", help="Freeze the audio tower; train only the head.")
    train.add_argument("--output_dir", required=True, help="Where the Hub-ready model folder is written.")
    train.add_argument("--feature_cache_dir", default=str(DEFAULT_CACHE_DIR), help="Linear-probe feature cache.")
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--per_device_train_batch_size", type=int, default=16)
    train.add_argument("--per_device_eval_batch_size", type=int, default=16)
    train.add_argument("--learning_rate", type=float, help="Default: 1e-4 (fine-tuning), 1e-2 (linear probe).")
    train.add_argument("--weight_decay", type=float, default=0.0)
    train.add_argument("--num_train_epochs", type=int, help="Default: 10 (fine-tuning), 100 (linear probe).")
    train.add_argument("--max_train_steps", type=int, help="Fine-tuning: overrides `--num_train_epochs`.")
    train.add_argument("--gradient_accumulation_steps", type=int, default=1)
    train.add_argument("--max_grad_norm", type=float, default=0.0, help="0 disables gradient clipping.")
    train.add_argument("--lr_scheduler_type", default="linear", help="A `transformers.get_scheduler` name.")
    train.add_argument("--num_warmup_steps", type=int, default=0)

    hub = parser.add_argument_group("hub")
    hub.add_argument("--push_to_hub", action="store_true", help="Upload `--output_dir` at the end.")
    hub.add_argument("--hub_model_id", help="Repository id, e.g. `user/vatt-esc50` (default: the folder name).")
    hub.add_argument("--hub_token", help="Token (default: the logged-in user's).")
    hub.add_argument("--hub_private_repo", action="store_true")
    args = parser.parse_args(argv)
    if args.learning_rate is None:
        args.learning_rate = 1e-2 if args.linear_probe else 1e-4
    if args.num_train_epochs is None:
        args.num_train_epochs = 100 if args.linear_probe else 10
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "num_train_epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1.")
    return args


# ----------------------------------------------------------------------------------------------------------------------
# Data and model
# ----------------------------------------------------------------------------------------------------------------------


def load_splits(args: argparse.Namespace, skips: SkipCounter):
    """`train` and `validation` splits with the audio column undecoded (decoded by soundfile in the collator), without
    the rows whose audio cannot be decoded (counted in `skips`)."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    path = Path(args.dataset_name)
    if path.is_dir() and any((path / name).exists() for name in ("dataset_dict.json", "dataset_info.json")):
        raw = load_from_disk(str(path))
    else:
        raw = load_dataset(args.dataset_name, args.dataset_config_name)
    if isinstance(raw, DatasetDict):
        names = {args.train_split_name: "train"}
        eval_name = next((name for name in (args.eval_split_name, "validation", "test") if name in raw), None)
        if args.train_split_name not in raw:
            raise ValueError(f"No split {args.train_split_name!r}; the dataset has {list(raw)}.")
        if eval_name is not None:
            names[eval_name] = "validation"
        raw = DatasetDict({new: raw[old] for old, new in names.items()})
    splits = ensure_splits(raw, eval_fraction=args.eval_split_percentage / 100, seed=args.seed)
    limits = {"train": args.max_train_samples, "validation": args.max_eval_samples}
    for name, limit in limits.items():
        if limit is not None:
            splits[name] = splits[name].select(range(min(limit, splits[name].num_rows)))
    return DatasetDict(
        {
            name: drop_unreadable_audio(with_undecoded_audio(split, args.audio_column), args.audio_column, skips)
            for name, split in splits.items()
        }
    )


def load_feature_extractor(args: argparse.Namespace, audio_config) -> VattFeatureExtractor:
    """The checkpoint's feature extractor, or a default one at the tower's sampling rate."""
    try:
        feature_extractor = VattFeatureExtractor.from_pretrained(args.model_name_or_path)
    except OSError:
        logger.warning("No feature extractor in %s; using the default one.", args.model_name_or_path)
        feature_extractor = VattFeatureExtractor(sampling_rate=audio_config.sampling_rate)
    if feature_extractor.sampling_rate != audio_config.sampling_rate:
        raise ValueError(
            f"The feature extractor works at {feature_extractor.sampling_rate} Hz but the audio tower expects "
            f"{audio_config.sampling_rate} Hz."
        )
    return feature_extractor


def load_model(args: argparse.Namespace, schema) -> VattForAudioClassification:
    overrides = {
        name: getattr(args, name)
        for name in ("classifier_head", "classifier_dropout", "window_logits_aggregation")
        if getattr(args, name) is not None
    }
    return VattForAudioClassification.from_pretrained(
        args.model_name_or_path,
        num_labels=len(schema.names),
        id2label=schema.id2label,
        label2id=schema.label2id,
        problem_type=schema.problem_type,
        ignore_mismatched_sizes=True,
        dtype=torch.float32,
        **overrides,
    )


def eval_loader(args, split, collator) -> DataLoader:
    return DataLoader(split, batch_size=args.per_device_eval_batch_size, collate_fn=collator)


@torch.no_grad()
def predict(model, loader: DataLoader, accelerator: Accelerator) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of every recording (whole recordings, windowed when long), gathered across processes."""
    model.eval()
    all_logits, all_labels = [], []
    for batch in loader:
        labels = batch.pop("labels")
        logits = model(**batch).logits
        logits, labels = accelerator.gather_for_metrics((logits, labels))
        all_logits.append(logits.float().cpu())
        all_labels.append(labels.cpu())
    return torch.cat(all_logits), torch.cat(all_labels)


# ----------------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------------


def fine_tune(args, accelerator, model, feature_extractor, splits, schema) -> tuple[dict[str, float], dict]:
    config = model.config
    crop_samples = (
        round(args.max_length_seconds * config.sampling_rate)
        if args.max_length_seconds is not None
        else config.window_length * config.patch_size
    )
    crop_samples = max(config.patch_size, crop_samples // config.patch_size * config.patch_size)
    train_collator = ClassificationCollator(
        feature_extractor,
        schema,
        args.audio_column,
        args.label_column,
        max_length=crop_samples,
        crop="random",
        seed=args.seed + accelerator.process_index,
    )
    eval_collator = ClassificationCollator(feature_extractor, schema, args.audio_column, args.label_column)
    train_loader = DataLoader(
        splits["train"], batch_size=args.per_device_train_batch_size, shuffle=True, collate_fn=train_collator
    )
    valid_loader = eval_loader(args, splits["validation"], eval_collator)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=args.learning_rate, weight_decay=args.weight_decay
    )
    model, optimizer, train_loader, valid_loader = accelerator.prepare(model, optimizer, train_loader, valid_loader)
    updates_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps)
    if args.max_train_steps is None:
        args.max_train_steps = args.num_train_epochs * updates_per_epoch
    args.num_train_epochs = math.ceil(args.max_train_steps / updates_per_epoch)
    scheduler = accelerator.prepare(
        get_scheduler(
            args.lr_scheduler_type,
            optimizer=optimizer,
            num_warmup_steps=args.num_warmup_steps * accelerator.num_processes,
            num_training_steps=args.max_train_steps * accelerator.num_processes,
        )
    )
    progress = tqdm(range(args.max_train_steps), desc="fine-tuning", disable=not accelerator.is_local_main_process)
    step, results = 0, {}
    for epoch in range(args.num_train_epochs):
        model.train()
        total_loss, num_batches = 0.0, 0
        for batch in train_loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            total_loss += loss.detach().float().item()
            num_batches += 1
            if accelerator.sync_gradients:
                step += 1
                progress.update(1)
            if step >= args.max_train_steps:
                break
        logits, labels = predict(model, valid_loader, accelerator)
        results = {"train_loss": total_loss / max(num_batches, 1), "epoch": epoch + 1, "step": step}
        results.update({f"eval_{k}": v for k, v in classification_metrics(logits, labels, schema.multi_label).items()})
        accelerator.print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in results.items()}))
        if step >= args.max_train_steps:
            break
    hyperparameters = {
        "mode": "fine-tuning (whole audio tower and head)",
        "training crop": f"{crop_samples / config.sampling_rate:g} s (random)",
        "optimiser": f"AdamW, lr {args.learning_rate:g}, weight decay {args.weight_decay:g}",
        "schedule": f"{args.lr_scheduler_type}, {args.num_warmup_steps} warm-up steps",
        "steps": args.max_train_steps,
        "global batch": args.per_device_train_batch_size
        * accelerator.num_processes
        * args.gradient_accumulation_steps,
        "DropToken rate": config.drop_token_rate,
    }
    return results, hyperparameters


def linear_probe(args, accelerator, model, feature_extractor, splits, schema) -> tuple[dict[str, float], dict]:
    model.freeze_audio_model()
    model.to(accelerator.device)
    collator = ClassificationCollator(feature_extractor, schema, args.audio_column, args.label_column)

    def gather(part: WindowFeatures) -> WindowFeatures:
        features = accelerator.pad_across_processes(part.features, dim=1)
        mask = accelerator.pad_across_processes(part.mask, dim=1)
        return WindowFeatures(*accelerator.gather_for_metrics((features, mask)))

    features, labels = {}, {}
    for name, split in splits.items():
        accelerator.wait_for_everyone()
        features[name], path, hit = cached_window_features(
            model.audio_model,
            lambda split=split, name=name: tqdm(
                accelerator.prepare(eval_loader(args, split, collator)),
                desc=f"features ({name})",
                disable=not accelerator.is_local_main_process,
            ),
            args.feature_cache_dir,
            split._fingerprint,
            {"audio_column": args.audio_column, "feature_extractor": feature_extractor.to_dict()},
            gather=gather,
            write=accelerator.is_main_process,
        )
        accelerator.print(f"{name} features: {'cache hit' if hit else 'computed'} ({path})")
        encoded = [schema.encode(value) for value in split[args.label_column]]
        labels[name] = torch.tensor(encoded, dtype=torch.float32 if schema.multi_label else torch.long)
    history = train_linear_probe(
        model,
        features["train"],
        labels["train"],
        num_epochs=args.num_train_epochs,
        learning_rate=args.learning_rate,
        batch_size=args.per_device_train_batch_size,
        weight_decay=args.weight_decay,
        seed=args.seed,
        progress=accelerator.is_local_main_process,
    )
    logits = predict_from_features(model, features["validation"])
    results = {"train_loss": history[-1], "epoch": args.num_train_epochs}
    metrics = classification_metrics(logits, labels["validation"], schema.multi_label)
    results.update({f"eval_{k}": v for k, v in metrics.items()})
    accelerator.print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in results.items()}))
    hyperparameters = {
        "mode": "linear probe (frozen audio tower, cached features, only the head trained)",
        "optimiser": f"AdamW, lr {args.learning_rate:g}, weight decay {args.weight_decay:g}",
        "epochs": args.num_train_epochs,
        "batch": args.per_device_train_batch_size,
    }
    return results, hyperparameters


# ----------------------------------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------------------------------


def write_model_card(args, output_dir: Path, model, splits, schema, results, hyperparameters) -> None:
    config = model.config
    metric_note = (
        "mAP, AUC and d′ average over the classes that have positive and negative examples."
        if schema.multi_label
        else "mAP, AUC and d′ treat each class one-vs-rest, as the VATT paper reports them."
    )
    eval_results = {
        f"validation/{key[5:]}": value
        for key, value in results.items()
        if key.startswith("eval_") and key != "eval_num_scored_classes"
    }
    hub_ids = {name: None if Path(name).exists() else name for name in (args.model_name_or_path, args.dataset_name)}
    model_id = args.hub_model_id or output_dir.name
    card = render_model_card(
        MODEL_CARD_TEMPLATE,
        model_name=model_id,
        model_id=model_id,
        base_model_metadata=f"base_model: {args.model_name_or_path}" if hub_ids[args.model_name_or_path] else "",
        dataset=hub_ids[args.dataset_name] or Path(args.dataset_name).name,
        metric_names="\n".join(f"- {name}" for name in ("accuracy", "f1", "mAP", "roc_auc")),
        model_description=(
            f"The VATT audio tower (raw {config.sampling_rate} Hz waveform transformer, {config.num_hidden_layers} "
            f"layers, width {config.hidden_size}) with a {config.classifier_head} classification head over "
            f"{len(schema.names)} {'labels (multi-label, sigmoid)' if schema.multi_label else 'classes (softmax)'}, "
            f"trained from `{args.model_name_or_path}`."
        ),
        sampling_rate=config.sampling_rate,
        window_seconds=f"{config.window_length * config.patch_size / config.sampling_rate:g}",
        aggregation=f"`{config.window_logits_aggregation}` of the window logits",
        labels=", ".join(f"`{name}`" for name in schema.names),
        training_data=f"`{args.dataset_name}`, column `{args.audio_column}` (audio) and `{args.label_column}` "
        f"(labels): {splits['train'].num_rows} training recordings.",
        training_procedure=f"`examples/run_audio_classification.py` of the `vatt` package (🤗 Accelerate), "
        f"seed {args.seed}.",
        hyperparameters=hyperparameters,
        eval_split="validation",
        eval_size=splits["validation"].num_rows,
        metric_note=metric_note,
        results=eval_results,
        task_type="audio-classification",
        task_name="Audio classification",
        intended_use="Classifying recordings like those of the training data into its labels.",
        limitations="Only as good as the training data: check the evaluation numbers on data like yours first. "
        "Not for decisions about people.",
    )
    (output_dir / "README.md").write_text(card, encoding="utf-8")


def push_output_to_hub(output_dir: Path, repo_id: str, token: str | None, private: bool, api: Any = None) -> None:
    """Upload the model folder. `api` is an `HfApi`-like object (tests can pass a fake)."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    api.create_repo(repo_id=repo_id, exist_ok=True, private=private)
    api.upload_folder(repo_id=repo_id, folder_path=str(output_dir), commit_message="End of training")


def main(argv: Sequence[str] | None = None, hub_api: Any = None) -> dict[str, float]:
    args = parse_args(argv)
    accelerator = Accelerator(gradient_accumulation_steps=args.gradient_accumulation_steps)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if not accelerator.is_local_main_process:
        logging.getLogger().setLevel(logging.ERROR)
    set_seed(args.seed)

    skips = SkipCounter()
    splits = load_splits(args, skips)
    schema = label_schema(splits.values(), args.label_column)
    model = load_model(args, schema)
    feature_extractor = load_feature_extractor(args, model.config)
    accelerator.print(
        f"{splits['train'].num_rows} training / {splits['validation'].num_rows} evaluation recordings, "
        f"{len(schema.names)} {'multi-label ' if schema.multi_label else ''}classes"
    )
    run = linear_probe if args.linear_probe else fine_tune
    results, hyperparameters = run(args, accelerator, model, feature_extractor, splits, schema)
    results["skipped_rows"] = dict(skips.counts)
    accelerator.print(skips.report())

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        output_dir = Path(args.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        model = accelerator.unwrap_model(model)
        model.save_pretrained(output_dir)
        type(feature_extractor).register_for_auto_class("AutoFeatureExtractor")
        feature_extractor.save_pretrained(output_dir)
        write_model_card(args, output_dir, model, splits, schema, results, hyperparameters)
        (output_dir / "all_results.json").write_text(json.dumps(results, indent=2))
        if args.push_to_hub:
            repo_id = args.hub_model_id or output_dir.name
            push_output_to_hub(output_dir, repo_id, args.hub_token, args.hub_private_repo, api=hub_api)
    accelerator.end_training()
    return results


if __name__ == "__main__":
    main()
