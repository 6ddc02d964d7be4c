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
"""Convert an original TensorFlow VATT checkpoint (google-research/vatt) into a transformers folder.

    python conversion/convert_vatt_original_to_hf.py --tf_checkpoint PATH --original_config CONFIG.json
        --output_dir DIR [--vocab_file FILE] [--verify_against OUTPUTS.npz INPUTS.npz] [--push_to_hub REPO_ID]
        [--overwrite] [--audio_num_heads N] [--text_max_relative_distance N]

The checkpoint kind is recognised from its variable names: modality-specific pre-training (`tx_fac`: WaT audio, T5
text, FAC head), modality-agnostic pre-training (`ut_fac`: one encoder shared by audio and text), both converted to
`VattForContrastivePretraining`, or a fine-tuned WaT audio classifier (`VattForAudioClassification`). Every size the
variable shapes give is read from them. The rest (the generic encoder's head count, the T5 `max_relative_distance`,
norm epsilons, activations, the patch stride) is not stored in TF checkpoints: it comes from `--original_config` (the
original model config as JSON, its `as_dict()`), which the shapes are also checked against, else from the flags, else
from the released defaults, each assumed value printed with what overrides it and listed in the model card
(`conversion/hyperparameters.py`).

TensorFlow is imported only here, lazily; the model package never needs it.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import glob
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers.utils import logging as transformers_logging

if not __package__:  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conversion.hyperparameters import ConversionError, Settings  # noqa: E402
from conversion.verify import reference_inputs, verify  # noqa: E402
from modeling_vatt import (  # noqa: E402
    VattAudioConfig,
    VattConfig,
    VattForAudioClassification,
    VattForContrastivePretraining,
    VattTextConfig,
)
from modeling_vatt.feature_extraction_vatt import VattFeatureExtractor  # noqa: E402
from modeling_vatt.model_card import markdown_table, render_model_card, setting_sources  # noqa: E402
from modeling_vatt.processing_vatt import VattProcessor  # noqa: E402
from modeling_vatt.tokenization_vatt import VattTokenizer  # noqa: E402

MODEL_ROOT = "model/layer_with_weights-0/"
VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
BOOKKEEPING = ("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter" + VALUE_SUFFIX)

AUDIO_ROOT = "_base_layer/aud_backbone/_base/"
TEXT_ROOT = "_base_layer/txt_backbone/"
UNIFIED_ROOT = "_base_layer/unified_backbone/unified_transformer/"
FINETUNED_ROOT = "_base/"
HEAD_ROOT = "_head_layer/_bridge_heads/0/"
CLASSIFIER = "_ops/cls"

VIDEO_BRANCH = (
    "_base_layer/vid_backbone",
    HEAD_ROOT + "vid_to_hid",
    HEAD_ROOT + "hid_to_va",
    *(
        UNIFIED_ROOT + name
        for name in ("raw_to_embeddings/video", "pre_proj/video", "pos_embedding_lookup/video", "post_proj/video")
    ),
    UNIFIED_ROOT + "vid_agg_embedding",
)

MODEL_CARD_TEMPLATE = Path(__file__).resolve().parents[1] / "model_card.md"

# Original config keys (section, field) shared by several plans
AUDIO_HEADS = ("audio", "num_heads")
PRE_PROJECTION = ("audio", "pre_projection")
POST_PROJECTION = ("audio", "d_post_proj")


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


# --------------------------------------------------------------------------------------------------------------------
# Reading the TF checkpoint
# --------------------------------------------------------------------------------------------------------------------


def resolve_checkpoint_prefix(path: str | os.PathLike) -> str:
    """Return the bundle prefix (`.../ckpt-500`) of a prefix, an `.index`/`.data-*` file or a folder with a state file."""
    path = Path(path)
    if path.is_dir():
        state_file = path / "checkpoint"
        if not state_file.is_file():
            raise ConversionError(f"{path} is not a TF checkpoint: the folder has no `checkpoint` state file.")
        match = re.search(r'^model_checkpoint_path:\s*"(.+)"', state_file.read_text(), flags=re.MULTILINE)
        if match is None:
            raise ConversionError(f"{state_file} names no checkpoint (no `model_checkpoint_path` line).")
        prefix = Path(match.group(1)) if os.path.isabs(match.group(1)) else path / match.group(1)
    else:
        prefix = Path(re.sub(r"\.(index|data-\d+-of-\d+)$", "", str(path)))
    if not Path(f"{prefix}.index").is_file():
        raise ConversionError(f"{path} is not a TF checkpoint: {prefix}.index does not exist.")
    if not list(prefix.parent.glob(f"{prefix.name}.data-*")):
        raise ConversionError(f"TF checkpoint {prefix} has an index but no data file ({prefix.name}.data-*).")
    return str(prefix)


@dataclass
class TFCheckpoint:
    """The model variables of a TF2 object-based checkpoint, keyed by attribute path below `MODEL_ROOT`."""

    prefix: str
    variables: dict[str, np.ndarray]
    optimizer_state: list[str] = field(default_factory=list)
    bookkeeping: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)


def read_tf_checkpoint(path: str | os.PathLike) -> TFCheckpoint:
    """Read every tensor once with `tf.train.load_checkpoint` (so a damaged file is detected) and keep the model's."""
    prefix = resolve_checkpoint_prefix(path)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(prefix)
        names = sorted(reader.get_variable_to_shape_map())
    except Exception as error:
        raise ConversionError(f"cannot open TF checkpoint {prefix}: {_one_line(error)}") from error
    checkpoint = TFCheckpoint(prefix=prefix, variables={})
    for name in names:
        try:
            value = reader.get_tensor(name)
        except Exception as error:
            raise ConversionError(
                f"TF checkpoint {prefix} is damaged or truncated: cannot read {name} ({_one_line(error)})."
            ) from error
        if "/.OPTIMIZER_SLOT/" in name or name.startswith("optimizer/"):
            checkpoint.optimizer_state.append(name)
        elif name in BOOKKEEPING:
            checkpoint.bookkeeping.append(name)
        elif name.startswith(MODEL_ROOT) and name.endswith(VALUE_SUFFIX):
            checkpoint.variables[name[len(MODEL_ROOT) : -len(VALUE_SUFFIX)]] = value
        else:
            checkpoint.foreign.append(name)
    return checkpoint


# --------------------------------------------------------------------------------------------------------------------
# Weight mapping: (TF attribute path, state-dict name, transform)
# --------------------------------------------------------------------------------------------------------------------

Rule = tuple[str, str, Callable[[np.ndarray], np.ndarray]]


def _same(value: np.ndarray) -> np.ndarray:
    return value


def _transposed(kernel: np.ndarray) -> np.ndarray:
    return kernel.T


def _patch_kernel(kernel: np.ndarray) -> np.ndarray:
    """Conv1D kernel `[patch, 1, d]` -> `nn.Linear(patch, d).weight`."""
    return kernel[:, 0, :].T


def _tensor(tf_name: str, hf_name: str) -> list[Rule]:
    return [(tf_name, hf_name, _same)]


def _dense(tf_name: str, hf_name: str, bias: bool = True) -> list[Rule]:
    rules = [(f"{tf_name}/kernel", f"{hf_name}.weight", _transposed)]
    return rules + ([(f"{tf_name}/bias", f"{hf_name}.bias", _same)] if bias else [])


def _layer_norm(tf_name: str, hf_name: str) -> list[Rule]:
    return [(f"{tf_name}/gamma", f"{hf_name}.weight", _same), (f"{tf_name}/beta", f"{hf_name}.bias", _same)]


def _batch_norm(tf_name: str, hf_name: str) -> list[Rule]:
    names = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
    return [(f"{tf_name}/{tf}", f"{hf_name}.{hf}", _same) for tf, hf in names.items()]


def _generic_encoder(tf_root: str, hf_root: str, num_layers: int) -> list[Rule]:
    """Pre-LN transformer `tx/` (WaT, UVATT) -> `encoder.`."""
    rules = []
    for i in range(num_layers):
        tf_layer, hf_layer = f"{tf_root}tx/layers/{i}/", f"{hf_root}encoder.layers.{i}."
        rules += _layer_norm(tf_layer + "layer_norm", hf_layer + "layer_norm1")
        for tf_proj, hf_proj in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("o", "out_proj")):
            rules += _dense(f"{tf_layer}mha/{tf_proj}", f"{hf_layer}self_attn.{hf_proj}")
        rules += _layer_norm(tf_layer + "feed_forward/layer_norm", hf_layer + "layer_norm2")
        rules += _dense(tf_layer + "feed_forward/mlp/wi", hf_layer + "mlp.fc1")
        rules += _dense(tf_layer + "feed_forward/mlp/wo", hf_layer + "mlp.fc2")
    return rules + _layer_norm(f"{tf_root}tx/final_layer_norm", f"{hf_root}encoder.final_layer_norm")


def _audio_embeddings(tf_patches: str, tf_positions: str, tf_agg: str, hf_root: str) -> list[Rule]:
    """Conv1D patching, position table with its LayerNorm and AGG token -> `embeddings.`."""
    return [
        (f"{tf_patches}/kernel", f"{hf_root}embeddings.patch_embedding.weight", _patch_kernel),
        (f"{tf_patches}/bias", f"{hf_root}embeddings.patch_embedding.bias", _same),
        *_tensor(
            f"{tf_positions}/temporal_position_embeddings/embeddings", f"{hf_root}embeddings.position_embedding.weight"
        ),
        *_layer_norm(f"{tf_positions}/layernorm", f"{hf_root}embeddings.position_layernorm"),
        *_tensor(tf_agg, f"{hf_root}embeddings.agg_token"),
    ]


def _t5_text(num_layers: int) -> list[Rule]:
    """VATT's T5-style text tower (`txt_backbone/`) -> `text_model.`."""
    tf_lm, hf = TEXT_ROOT + "base_lm/", "text_model."
    rules = [
        *_tensor(TEXT_ROOT + "embedding/embeddings", hf + "embeddings.word_embeddings.weight"),
        *_tensor(TEXT_ROOT + "agg_embedding", hf + "embeddings.agg_token"),
        *_dense(TEXT_ROOT + "pre_proj", hf + "embeddings.pre_projection", bias=False),
        *_tensor(
            tf_lm + "layers/0/self_attention/attention/relative_attention_bias/embeddings",
            hf + "encoder.relative_attention_bias.weight",
        ),
    ]
    for i in range(num_layers):
        tf_layer, hf_layer = f"{tf_lm}layers/{i}/", f"{hf}encoder.layers.{i}."
        rules += _tensor(tf_layer + "self_attention/layer_norm/weight", hf_layer + "layer_norm1.weight")
        for tf_proj, hf_proj in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("o", "out_proj")):
            rules += _dense(f"{tf_layer}self_attention/attention/{tf_proj}", f"{hf_layer}self_attn.{hf_proj}", False)
        rules += _layer_norm(tf_layer + "feed_forward/layer_norm", hf_layer + "layer_norm2")
        rules += _dense(tf_layer + "feed_forward/mlp/wi", hf_layer + "mlp.fc1", bias=False)
        rules += _dense(tf_layer + "feed_forward/mlp/wo", hf_layer + "mlp.fc2", bias=False)
    return rules + _tensor(tf_lm + "final_layer_norm/weight", hf + "encoder.final_layer_norm.weight")


def _unified_text() -> list[Rule]:
    """The text path of the modality-agnostic model (its encoder is the shared one) -> `text_model.`."""
    root, hf = UNIFIED_ROOT, "text_model."
    return [
        *_tensor(root + "raw_to_embeddings/text/embeddings", hf + "embeddings.word_embeddings.weight"),
        *_dense(root + "pre_proj/text", hf + "embeddings.pre_projection"),
        *_tensor(
            root + "pos_embedding_lookup/text/temporal_position_embeddings/embeddings",
            hf + "embeddings.position_embedding.weight",
        ),
        *_layer_norm(root + "pos_embedding_lookup/text/layernorm", hf + "embeddings.position_layernorm"),
        *_tensor(root + "txt_agg_embedding", hf + "embeddings.agg_token"),
        *_dense(root + "post_proj/text", hf + "post_projection"),
    ]


def _bridge_head() -> list[Rule]:
    """FAC head, audio and text paths: audio -> S_va -> S_vat (the video `va_to_vat` block), text -> S_vat."""
    return [
        *_dense(HEAD_ROOT + "aud_to_va", "audio_projection.audio_to_va"),
        *_dense(HEAD_ROOT + "va_to_vat/dense", "audio_projection.va_to_vat.dense", bias=False),
        *_batch_norm(HEAD_ROOT + "va_to_vat/bn", "audio_projection.va_to_vat.batch_norm"),
        *_dense(HEAD_ROOT + "txt_to_vat", "text_projection"),
    ]


# --------------------------------------------------------------------------------------------------------------------
# Sizes: read from the shapes, checked against the original config; the rest from it, a flag or the released defaults
# --------------------------------------------------------------------------------------------------------------------


def _shape(variables: dict[str, np.ndarray], name: str) -> tuple[int, ...]:
    if name not in variables:
        raise ConversionError(f"the checkpoint lacks {MODEL_ROOT}{name}, which the converter needs.")
    return variables[name].shape


def _count_layers(variables: dict[str, np.ndarray], layers_root: str) -> int:
    pattern = re.compile(re.escape(layers_root) + r"(\d+)/")
    indices = {int(match.group(1)) for name in variables if (match := pattern.match(name))}
    if not indices or indices != set(range(len(indices))):
        raise ConversionError(
            f"the transformer layers under {layers_root} are not numbered 0..n-1: {sorted(indices)}."
        )
    return len(indices)


def _generic_encoder_sizes(variables, tf_root: str, settings: Settings, text_heads: int | None = None) -> dict:
    """The pre-LN encoder of WaT / UVATT; only the total attention width is stored, not the head count."""
    hidden_size, attention_width = _shape(variables, f"{tf_root}tx/layers/0/mha/q/kernel")
    heads = settings.attention_heads("audio_config", attention_width, AUDIO_HEADS, text_heads)
    settings.given("audio pre_norm", ("audio", "pre_norm"), supported=(True,))
    return {
        "hidden_size": settings.read("audio_config.hidden_size", hidden_size, ("audio", "d_model")),
        "num_hidden_layers": settings.read(
            "audio_config.num_hidden_layers", _count_layers(variables, f"{tf_root}tx/layers/"), ("audio", "num_layers")
        ),
        "num_attention_heads": heads,
        "head_dim": attention_width // heads,
        "intermediate_size": settings.read(
            "audio_config.intermediate_size",
            _shape(variables, f"{tf_root}tx/layers/0/feed_forward/mlp/wi/kernel")[1],
            ("audio", "d_ff"),
        ),
        "hidden_act": settings.given("audio_config.hidden_act", ("audio", "activation"), supported=("gelu",)),
        "layer_norm_eps": settings.given("audio_config.layer_norm_eps", ("audio", "layer_norm_epsilon")),
    }


def _audio_embedding_sizes(variables, tf_patches: str, tf_positions: str, settings: Settings, unified: bool) -> dict:
    patch_size, channels, _ = _shape(variables, f"{tf_patches}/kernel")
    if channels != 1:
        raise ConversionError(f"{tf_patches} expects {channels} input channels; WaT reads a mono waveform.")
    rows, _ = _shape(variables, f"{tf_positions}/temporal_position_embeddings/embeddings")
    patch_key, rows_key = (
        ("aud_temporal_patch_size", "max_aud_temporal_buckets")
        if unified
        else (
            "temporal_patch_size",
            "max_temporal_buckets",
        )
    )
    patch_size = settings.read("audio_config.patch_size", patch_size, ("audio", patch_key))
    if not unified:  # the original's stride is a separate setting; the converted model's patches never overlap
        stride = ("audio", "temporal_patch_stride")
        settings.given("audio patch stride", stride, supported=(patch_size,), default=patch_size)
    return {
        "patch_size": patch_size,
        "max_position_embeddings": settings.read("audio_config.max_position_embeddings", rows, ("audio", rows_key)),
        "position_interpolation": "spline",
    }


def _wat_projections(variables, root: str, settings: Settings) -> dict:
    """Pre/post projections of a WaT tower (present when it was fine-tuned from the modality-agnostic model)."""
    sizes = {}
    has_pre = settings.read("audio_config.use_pre_projection", root + "pre_proj/kernel" in variables, PRE_PROJECTION)
    if has_pre:
        sizes["use_pre_projection"] = True
    if settings.read("audio post projection", root + "post_proj/kernel" in variables, ("audio", "post_projection")):
        width = _shape(variables, root + "post_proj/kernel")[1]
        sizes["post_projection_size"] = settings.read("audio_config.post_projection_size", width, POST_PROJECTION)
    return sizes


def _bridge_sizes(variables, audio_width: int, text_width: int, settings: Settings) -> dict:
    audio_in, audio_video_dim = _shape(variables, HEAD_ROOT + "aud_to_va/kernel")
    text_in, projection_dim = _shape(variables, HEAD_ROOT + "txt_to_vat/kernel")
    if (audio_in, text_in) != (audio_width, text_width):
        raise ConversionError(
            f"the FAC head expects audio/text widths {audio_in}/{text_in} but the towers output {audio_width}/{text_width}."
        )
    return {
        "projection_type": "bridge",
        "projection_dim": settings.read("projection_dim", projection_dim, ("head", "txt_to_vid_aud_kwargs.d_model")),
        "audio_video_projection_dim": settings.read(
            "audio_video_projection_dim", audio_video_dim, ("head", "aud_to_vid_txt_kwargs.d_model")
        ),
        "batch_norm_eps": settings.given("batch_norm_eps", ("head", "bn_config.epsilon")),
    }


# --------------------------------------------------------------------------------------------------------------------
# Per-kind plans
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class ConversionPlan:
    """What a checkpoint becomes: its kind, the HF config, the weight rules, the variables skipped and the settings."""

    kind: str
    config: VattConfig | VattAudioConfig
    rules: list[Rule]
    settings: Settings
    ignored_prefixes: tuple[str, ...] = ()


def _t5_text_sizes(variables, settings: Settings) -> dict:
    t5_layer0 = TEXT_ROOT + "base_lm/layers/0/self_attention/attention/"
    buckets, text_heads = _shape(variables, t5_layer0 + "relative_attention_bias/embeddings")
    text_hidden, text_width = _shape(variables, t5_layer0 + "q/kernel")
    vocab_size, embedding_size = _shape(variables, TEXT_ROOT + "embedding/embeddings")
    if text_width % text_heads:
        raise ConversionError(f"{text_heads} T5 heads do not divide the text attention width {text_width}.")
    read = settings.read
    return {
        "vocab_size": read("text_config.vocab_size", vocab_size, ("text", "vocab_size")),
        "embedding_size": read("text_config.embedding_size", embedding_size, ("text", "d_embedding")),
        "hidden_size": read("text_config.hidden_size", text_hidden, ("text", "d_model")),
        "num_hidden_layers": read(
            "text_config.num_hidden_layers",
            _count_layers(variables, TEXT_ROOT + "base_lm/layers/"),
            ("text", "num_layers"),
        ),
        "num_attention_heads": read("text_config.num_attention_heads", text_heads, ("text", "num_heads")),
        "head_dim": read("text_config.head_dim", text_width // text_heads, ("text", "d_kv")),
        "intermediate_size": read(
            "text_config.intermediate_size",
            _shape(variables, TEXT_ROOT + "base_lm/layers/0/feed_forward/mlp/wi/kernel")[1],
            ("text", "d_ff"),
        ),
        "position_embedding_type": "relative",
        "relative_attention_num_buckets": read(
            "text_config.relative_attention_num_buckets", buckets, ("text", "num_relative_buckets")
        ),
        "relative_attention_max_distance": settings.given(
            "text_config.relative_attention_max_distance",
            ("text", "max_relative_distance"),
            flag="text_max_relative_distance",
        ),
        # the original applies this activation to the pre-projection too, which the converted model fixes to GELU
        "hidden_act": settings.given("text_config.hidden_act", ("text", "activation"), supported=("gelu",)),
        "layer_norm_eps": settings.given("text_config.layer_norm_eps", ("text", "layer_norm_epsilon")),
    }


def _plan_modality_specific(variables, settings: Settings) -> ConversionPlan:
    text = _t5_text_sizes(variables, settings)
    audio = {
        **_generic_encoder_sizes(variables, AUDIO_ROOT, settings, text["num_attention_heads"]),
        **_audio_embedding_sizes(
            variables, AUDIO_ROOT + "wave_to_patch", AUDIO_ROOT + "pos_embedding_lookup", settings, unified=False
        ),
        **_wat_projections(variables, AUDIO_ROOT, settings),
    }
    bridge = _bridge_sizes(variables, audio["hidden_size"], text["hidden_size"], settings)
    config = VattConfig(audio_config=audio, text_config=text, **bridge)
    rules = [
        *_audio_embeddings(
            AUDIO_ROOT + "wave_to_patch",
            AUDIO_ROOT + "pos_embedding_lookup",
            AUDIO_ROOT + "agg_embedding",
            "audio_model.",
        ),
        *_generic_encoder(AUDIO_ROOT, "audio_model.", audio["num_hidden_layers"]),
        *_t5_text(text["num_hidden_layers"]),
        *_bridge_head(),
    ]
    return ConversionPlan("tx_fac", config, rules, settings, VIDEO_BRANCH)


def _plan_modality_agnostic(variables, settings: Settings) -> ConversionPlan:
    root = UNIFIED_ROOT
    encoder = _generic_encoder_sizes(variables, root, settings)
    audio_post = _shape(variables, root + "post_proj/audio/kernel")[1]
    text_post = _shape(variables, root + "post_proj/text/kernel")[1]
    vocab_size, embedding_size = _shape(variables, root + "raw_to_embeddings/text/embeddings")
    text_rows, _ = _shape(variables, root + "pos_embedding_lookup/text/temporal_position_embeddings/embeddings")
    audio = {
        **encoder,
        **_audio_embedding_sizes(
            variables, root + "raw_to_embeddings/audio", root + "pos_embedding_lookup/audio", settings, unified=True
        ),
        "use_pre_projection": True,
        "post_projection_size": settings.read("audio_config.post_projection_size", audio_post, POST_PROJECTION),
    }
    text = {
        **encoder,
        "vocab_size": settings.read("text_config.vocab_size", vocab_size, ("text", "txt_vocab_size")),
        "embedding_size": settings.read("text_config.embedding_size", embedding_size, ("text", "txt_embedding_dim")),
        "position_embedding_type": "absolute",
        "max_position_embeddings": settings.read(
            "text_config.max_position_embeddings", text_rows, ("text", "max_txt_temporal_buckets")
        ),
        "position_interpolation": "spline",
        # the original pads every caption to the table length and resamples to the padded length
        "position_interpolation_length": "padded",
        "post_projection_size": settings.read("text_config.post_projection_size", text_post, POST_PROJECTION),
    }
    config = VattConfig(
        audio_config=audio,
        text_config=text,
        modality_agnostic=True,
        **_bridge_sizes(variables, audio_post, text_post, settings),
    )
    rules = [
        *_audio_embeddings(
            root + "raw_to_embeddings/audio",
            root + "pos_embedding_lookup/audio",
            root + "aud_agg_embedding",
            "audio_model.",
        ),
        *_dense(root + "pre_proj/audio", "audio_model.embeddings.pre_projection"),
        *_dense(root + "post_proj/audio", "audio_model.post_projection"),
        *_generic_encoder(root, "audio_model.", encoder["num_hidden_layers"]),
        *_unified_text(),
        *_bridge_head(),
    ]
    return ConversionPlan("ut_fac", config, rules, settings, VIDEO_BRANCH)


def _plan_finetuned_audio(variables, settings: Settings) -> ConversionPlan:
    root = FINETUNED_ROOT
    num_labels = settings.read("num_labels", _shape(variables, CLASSIFIER + "/kernel")[1], ("audio", "num_classes"))
    audio = {
        **_generic_encoder_sizes(variables, root, settings),
        **_audio_embedding_sizes(
            variables, root + "wave_to_patch", root + "pos_embedding_lookup", settings, unified=False
        ),
        **_wat_projections(variables, root, settings),
        "num_labels": num_labels,
        # the original head: sigmoid multi-label Linear over the AGG output, window logits averaged
        "classifier_head": "original" if num_labels >= 2 else "linear",
        "problem_type": "multi_label_classification",
    }
    rules = [
        *_audio_embeddings(
            root + "wave_to_patch", root + "pos_embedding_lookup", root + "agg_embedding", "audio_model."
        ),
        *_generic_encoder(root, "audio_model.", audio["num_hidden_layers"]),
    ]
    if audio.get("use_pre_projection"):  # WaT fine-tuned from the modality-agnostic model
        rules += _dense(root + "pre_proj", "audio_model.embeddings.pre_projection")
    if audio.get("post_projection_size"):
        rules += _dense(root + "post_proj", "audio_model.post_projection")
    rules += _dense(CLASSIFIER, "classifier")
    return ConversionPlan("wat_finetuned", VattAudioConfig(**audio), rules, settings)


_PLANS = {"tx_fac": _plan_modality_specific, "ut_fac": _plan_modality_agnostic, "wat_finetuned": _plan_finetuned_audio}


def checkpoint_kind(variables: dict[str, np.ndarray]) -> str:
    """`tx_fac`, `ut_fac` or `wat_finetuned`, recognised from the variable names."""
    if any(name.startswith(UNIFIED_ROOT) for name in variables):
        return "ut_fac"
    if any(name.startswith(AUDIO_ROOT) for name in variables):
        return "tx_fac"
    if any(name.startswith(FINETUNED_ROOT) for name in variables) and CLASSIFIER + "/kernel" in variables:
        return "wat_finetuned"
    found = ", ".join(sorted(variables)[:3]) or "no variables under " + MODEL_ROOT
    raise ConversionError(f"not a VATT checkpoint: no WaT audio backbone or unified transformer found ({found}).")


def plan_conversion(
    variables: dict[str, np.ndarray],
    audio_num_heads: int | None = None,
    original_config: str | os.PathLike | None = None,
    text_max_relative_distance: int | None = None,
) -> ConversionPlan:
    """Recognise the checkpoint kind; read every size from the shapes and the rest from the original config (if
    given), the flags or the released defaults, each recorded with its source."""
    kind = checkpoint_kind(variables)
    flags = {"audio_num_heads": audio_num_heads, "text_max_relative_distance": text_max_relative_distance}
    return _PLANS[kind](variables, Settings(kind, original_config, flags))


# --------------------------------------------------------------------------------------------------------------------
# Building the PyTorch model
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class ConvertedModel:
    kind: str
    model: torch.nn.Module
    num_mapped: int
    ignored: dict[str, int]
    settings: Settings


def _is_under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + "/") for prefix in prefixes)


def _check_finite(variables: dict[str, np.ndarray], names: list[str]) -> None:
    for name in names:
        bad = int(np.size(variables[name]) - np.count_nonzero(np.isfinite(variables[name])))
        if bad:
            raise ConversionError(
                f"checkpoint variable {MODEL_ROOT}{name} holds {bad} non-finite values (NaN or inf): the checkpoint "
                "is corrupt or was saved after training diverged."
            )


def convert_variables(checkpoint: TFCheckpoint, audio_num_heads: int | None = None, **plan_options) -> ConvertedModel:
    """Map every model variable of `checkpoint` onto a freshly built HF model; anything unaccounted for is an error.

    `plan_options` (`original_config`, `text_max_relative_distance`) go to `plan_conversion`.
    """
    variables = checkpoint.variables
    plan = plan_conversion(variables, audio_num_heads, **plan_options)
    mapped = {tf_name for tf_name, _, _ in plan.rules}
    video = [name for name in variables if name not in mapped and _is_under(name, plan.ignored_prefixes)]
    unmapped = [name for name in variables if name not in mapped and name not in video] + checkpoint.foreign
    if unmapped:
        raise ConversionError(f"{len(unmapped)} checkpoint variables have no mapping: {', '.join(sorted(unmapped))}")
    missing = [name for name in mapped if name not in variables]
    if missing:
        raise ConversionError(
            f"the {plan.kind} checkpoint lacks {len(missing)} variables: {', '.join(sorted(missing))}"
        )
    _check_finite(variables, sorted(mapped))

    state = {hf: torch.from_numpy(np.ascontiguousarray(transform(variables[tf]))) for tf, hf, transform in plan.rules}
    model_class = VattForContrastivePretraining if isinstance(plan.config, VattConfig) else VattForAudioClassification
    model = model_class(plan.config)
    _load_exactly(model, state)
    ignored = {
        "optimizer state": len(checkpoint.optimizer_state),
        "bookkeeping": len(checkpoint.bookkeeping),
        "video branch": len(video),
    }
    return ConvertedModel(plan.kind, model.eval(), len(plan.rules), ignored, plan.settings)


def _load_exactly(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load `state`, requiring it to cover every parameter and buffer except the ones TF does not have."""
    own = model.state_dict(keep_vars=True)
    unknown = sorted(set(state) - set(own))
    wrong_shape = [
        f"{name} {tuple(state[name].shape)} != {tuple(own[name].shape)}"
        for name in state
        if name in own and own[name].shape != state[name].shape
    ]
    if unknown or wrong_shape:
        raise ConversionError(f"checkpoint and model disagree: unknown {unknown}, shapes {wrong_shape}")
    loaded = {id(own[name]) for name in state}
    not_in_tf = ("logit_scale", "num_batches_tracked")
    uncovered = [name for name, tensor in own.items() if id(tensor) not in loaded and not name.endswith(not_in_tf)]
    if uncovered:
        raise ConversionError(f"the checkpoint provides no value for {', '.join(uncovered)}")
    model.load_state_dict(state, strict=False)


# --------------------------------------------------------------------------------------------------------------------
# Writing the folder
# --------------------------------------------------------------------------------------------------------------------


@contextmanager
def _registered_for_auto_class(*classes: tuple[type, str]) -> Iterator[None]:
    """Register classes for auto class while saving (so the folder loads with `trust_remote_code`), then undo it."""
    previous = [(cls, cls.__dict__.get("_auto_class")) for cls, _ in classes]
    for cls, auto_class in classes:
        cls.register_for_auto_class(auto_class)
    try:
        yield
    finally:
        for cls, auto_class in previous:
            if auto_class is None:
                del cls._auto_class
            else:
                cls._auto_class = auto_class


def check_output_dir(output_dir: Path, overwrite: bool) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise ConversionError(f"output path {output_dir} exists and is not a folder.")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise ConversionError(f"output folder {output_dir} exists and is not empty; pass --overwrite to replace it.")


def _staging_folder(output_dir: Path, what: str) -> Path:
    """A new folder beside `output_dir`, named with this process id so a later run can tell when it is stale."""
    return Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.{what}-{os.getpid()}-", dir=output_dir.parent))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_staging(output_dir: Path) -> list[Path]:
    """Delete the `.partial` / `.replaced` folders that killed conversions into `output_dir` left beside it."""
    pattern = re.compile(rf"\.{re.escape(output_dir.name)}\.(?:partial|replaced)-(\d+)-\w+")
    stale = [
        path
        for path in output_dir.parent.glob(f".{glob.escape(output_dir.name)}.*")
        if (match := pattern.fullmatch(path.name)) and path.is_dir() and not _process_alive(int(match[1]))
    ]
    for path in stale:
        shutil.rmtree(path)
    return stale


def _exchange(first: Path, second: Path) -> bool:
    """Swap two folders in one atomic step (Linux `renameat2(RENAME_EXCHANGE)`); False where that is unavailable."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None) if sys.platform == "linux" else None
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(error, os.strerror(error), str(second))


def _move_into_place(staging: Path, output_dir: Path, overwrite: bool) -> None:
    """Make the complete `staging` folder `output_dir` atomically: the old folder stays whole until the swap."""
    check_output_dir(output_dir, overwrite)
    if not output_dir.exists():
        staging.rename(output_dir)
    elif _exchange(staging, output_dir):  # `staging` now holds the previous folder
        shutil.rmtree(staging)
    else:
        previous = _staging_folder(output_dir, "replaced")
        output_dir.replace(previous)
        staging.rename(output_dir)
        shutil.rmtree(previous)


def _make_parents(output_dir: Path) -> list[Path]:
    """Create the missing parent folders of `output_dir`; return them, outermost first (to remove them on failure)."""
    missing = [parent for parent in reversed(output_dir.parents) if not parent.exists()]
    try:
        output_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConversionError(f"cannot create the parent folder of {output_dir}: {_one_line(error)}") from error
    return missing


def load_tokenizer(vocab_file: str | os.PathLike, text_config: VattTextConfig) -> VattTokenizer:
    """The original word-level tokenizer for `vocab_file`; its size must match the checkpoint's embedding table.

    With a learned position table (modality-agnostic text) the tokenizer's `model_max_length` is the table length:
    the original padded every caption to it (`padding="max_length"` reproduces the original exactly).
    """
    if not Path(vocab_file).is_file():
        raise ConversionError(f"vocabulary file {vocab_file} does not exist.")
    kwargs = {}
    if text_config.position_embedding_type == "absolute":
        kwargs["model_max_length"] = text_config.max_position_embeddings
    try:
        tokenizer = VattTokenizer.from_vocab_file(str(vocab_file), **kwargs)
    except ValueError as error:
        raise ConversionError(f"unusable vocabulary: {_one_line(error)}") from error
    vocab_size = text_config.vocab_size
    if len(tokenizer) != vocab_size:
        raise ConversionError(
            f"vocabulary {vocab_file} has {len(tokenizer)} entries but the checkpoint's word table has {vocab_size} rows."
        )
    return tokenizer


def _feature_extractor(audio_config: VattAudioConfig) -> VattFeatureExtractor:
    return VattFeatureExtractor(sampling_rate=audio_config.sampling_rate, patch_size=audio_config.patch_size)


_KIND_DESCRIPTIONS = {
    "tx_fac": "modality-specific pre-training checkpoint (WaT audio, T5-style text, FAC bridge head)",
    "ut_fac": "modality-agnostic (UVATT) pre-training checkpoint (one encoder shared by audio and text)",
    "wat_finetuned": "fine-tuned WaT audio classifier",
}

_ZERO_SHOT_NOTE = (
    "Audio and text meet in the original video-audio-text space: text through `txt_to_vat`, audio through `aud_to_va` "
    "(the audio-video space, `model.audio_projection.audio_to_va`) and then the video branch's `va_to_vat` block, as "
    "in the paper's zero-shot audio-text comparison. That block was trained on video embeddings, so audio-text "
    "similarity works zero-shot but is weaker than the original's video-text similarity."
)

_INTENDED_USE = (
    "Zero-shot audio-text retrieval and audio classification with text prompts, as in the VATT paper, and a starting "
    "point for fine-tuning the audio or text tower. Check the results on data like yours before relying on them."
)

_SPLINE_NOTE = (
    "When an input's length differs from a position table (e.g. audio other than 3.2 s), the original resamples the "
    "table with a cubic spline solved in float32, which is ill-conditioned; this model computes the same spline "
    "exactly in float64, so it matches a float64 evaluation of the original to ~1e-5 but differs from the float32 "
    "original by up to ~0.1 on such inputs. Audio longer than the table is encoded in windows, not resampled."
)

_UVATT_TEXT_NOTE = (
    "The original padded every caption to 16 words and this model resamples its text position table to the padded "
    'length as the original did: pass `text_kwargs={"padding": "max_length"}` to the processor to reproduce it.'
)

_CLASSIFIER_USAGE = """```python
from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

model = AutoModelForAudioClassification.from_pretrained("{model_id}", trust_remote_code=True).eval()
feature_extractor = AutoFeatureExtractor.from_pretrained("{model_id}", trust_remote_code=True)
probabilities = model(**feature_extractor(waveform, sampling_rate=48000, return_tensors="pt")).logits.sigmoid()
```

The head is the original one: a multi-label (sigmoid) `Linear` over the AGG output; the logits of a long recording
are averaged over its windows, as the original averaged test clips. Label names are not stored in TF checkpoints."""

_ZERO_SHOT_USAGE = """```python
from transformers import AutoModel

model = AutoModel.from_pretrained("{model_id}", trust_remote_code=True).eval()
audio_embeds = model.get_audio_features(input_values=waveforms_48khz).pooler_output  # not yet L2-normalised
text_embeds = model.get_text_features(input_ids=word_ids).pooler_output
```"""


def model_card(
    converted: ConvertedModel, source: str, errors: dict[str, float], tokenizer: VattTokenizer | None, model_id: str
) -> str:
    """The folder's README: the repository's `model_card.md` template for a contrastive model with a processor, else a
    card generated here (the template's usage example needs a processor and the contrastive model)."""
    config = converted.model.config
    audio = config if isinstance(config, VattAudioConfig) else config.audio_config
    text = None if isinstance(config, VattAudioConfig) else config.text_config
    sizes = {
        "source checkpoint": f"`{Path(source).name}`",
        "kind": converted.kind,
        "audio tower": f"{audio.num_hidden_layers} layers, width {audio.hidden_size}, {audio.num_attention_heads} heads",
    }
    if text is not None:
        sizes["text tower"] = (
            f"{text.num_hidden_layers} layers, width {text.hidden_size}, {text.num_attention_heads} heads, "
            f"{text.position_embedding_type} positions, vocabulary {text.vocab_size}"
        )
    description = (
        f"VATT (Akbari et al., *VATT: Transformers for Multimodal Self-Supervised Learning from Raw Video, Audio and "
        f"Text*, NeurIPS 2021), {_KIND_DESCRIPTIONS[converted.kind]}, converted from the original TensorFlow "
        "checkpoint with `conversion/convert_vatt_original_to_hf.py` of the `vatt` package; the video branch is "
        "not converted."
    )
    notes = [_SPLINE_NOTE] + ([] if text is None else [_ZERO_SHOT_NOTE])
    if text is not None and text.position_embedding_type == "absolute":
        notes.append(_UVATT_TEXT_NOTE)
    sources = setting_sources(converted.settings.by_source())
    rows = "\n".join(f"| `{name}` | {error:.2e} |" for name, error in errors.items())
    verification = (
        "Outputs of the converted model against the original TensorFlow model on reference inputs (max abs error):"
        f"\n\n| output | max abs error |\n| --- | --- |\n{rows}"
        if rows
        else "Not verified against the original at conversion time (`--verify_against`)."
    )
    if text is not None and tokenizer is not None and MODEL_CARD_TEMPLATE.is_file():
        return render_model_card(
            MODEL_CARD_TEMPLATE,
            model_name=model_id,
            dataset="howto100m",
            training_data="The original VATT pre-training data (HowTo100M and AudioSet); nothing was retrained.",
            training_procedure="Original VATT self-supervised pre-training; the weights are converted unchanged.",
            hyperparameters=f"{markdown_table(sizes)}\n\n{sources}",
            results="No retrieval evaluation was run after conversion. " + verification,
            model_index_results="    []",
            model_description=description,
            intended_use=_INTENDED_USE,
            limitations=" ".join(notes),
        )
    if text is None:
        pipeline_tag, usage = "audio-classification", _CLASSIFIER_USAGE.format(model_id=model_id)
    else:
        pipeline_tag, usage = "zero-shot-audio-classification", _ZERO_SHOT_USAGE.format(model_id=model_id)
        usage += "\n\nNo vocabulary was given to the converter, so this folder has no tokenizer and no processor."
    size_lines = "\n".join(f"* {name}: {value}." for name, value in sizes.items())
    note_lines = "\n".join(f"* {note}" for note in notes)
    return f"""---
library_name: transformers
license: apache-2.0
pipeline_tag: {pipeline_tag}
tags: [vatt, audio, custom_code]
---

# {model_id}

{description}

{size_lines}

{sources}

## Usage

{usage}

## Limitations

{note_lines}

## Verification

{verification}
"""


def save_folder(converted: ConvertedModel, folder: Path, tokenizer: VattTokenizer | None = None) -> None:
    """Write model, config, feature extractor, tokenizer and processor, registered for `trust_remote_code` loading."""
    model = converted.model
    auto_class = "AutoModelForAudioClassification" if converted.kind == "wat_finetuned" else "AutoModel"
    with _registered_for_auto_class((type(model.config), "AutoConfig"), (type(model), auto_class)):
        model.save_pretrained(folder)
    audio_config = model.config if isinstance(model.config, VattAudioConfig) else model.config.audio_config
    feature_extractor = _feature_extractor(audio_config)
    if tokenizer is None:
        with _registered_for_auto_class((type(feature_extractor), "AutoFeatureExtractor")):
            feature_extractor.save_pretrained(folder)
        return
    processor = VattProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)
    with _registered_for_auto_class(
        (type(feature_extractor), "AutoFeatureExtractor"),
        (type(tokenizer), "AutoTokenizer"),
        (VattProcessor, "AutoProcessor"),
    ):
        processor.save_pretrained(folder)


@dataclass
class ConversionResult:
    kind: str
    output_dir: Path
    config: VattConfig | VattAudioConfig
    num_mapped: int
    ignored: dict[str, int]
    errors: dict[str, float]
    settings: Settings

    def summary(self) -> str:
        """What was converted, one line per assumed hyperparameter (with what overrides it) and the errors."""
        ignored = ", ".join(f"{count} {what}" for what, count in self.ignored.items() if count)
        lines = [
            f"converted {self.kind} checkpoint to {self.output_dir}: {self.num_mapped} variables mapped"
            + (f" (ignored: {ignored})" if ignored else "")
        ]
        lines += self.settings.assumptions()
        lines += [f"  {name}: max abs error {error:.3e}" for name, error in self.errors.items()]
        return "\n".join(lines)


@contextmanager
def _writing(output_dir: Path) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        raise ConversionError(f"cannot write the converted folder {output_dir}: {_one_line(error)}") from error


def _verify_folder(model_class: type, folder: Path, verify_against: tuple, tolerance: float) -> dict[str, float]:
    """Reload the written folder and compare it with the original's outputs (`verify_against = (outputs, inputs)`)."""
    outputs_npz, inputs_npz = verify_against
    try:
        errors = verify(model_class.from_pretrained(folder), inputs_npz, outputs_npz)
    except ValueError as error:
        raise ConversionError(f"cannot verify against {outputs_npz}: {_one_line(error)}") from error
    failed = {name: error for name, error in errors.items() if not error <= tolerance}
    if failed:
        raise ConversionError(f"converted model differs from the reference beyond {tolerance}: {failed}")
    return errors


def check_reference_files(outputs_npz: str | os.PathLike, inputs_npz: str | os.PathLike) -> None:
    """The `--verify_against` pair must be readable and in the order OUTPUTS_NPZ INPUTS_NPZ."""
    for reference in (outputs_npz, inputs_npz):
        if not Path(reference).is_file():
            raise ConversionError(f"reference file {reference} does not exist.")
    try:
        reference_inputs(outputs_npz, inputs_npz)
    except ValueError as error:
        raise ConversionError(_one_line(error)) from error


def convert_checkpoint(
    tf_checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike,
    vocab_file: str | os.PathLike | None = None,
    verify_against: tuple[str | os.PathLike, str | os.PathLike] | None = None,
    push_to_hub: str | None = None,
    overwrite: bool = False,
    audio_num_heads: int | None = None,
    tolerance: float = 1e-4,
    hub_api=None,
    original_config: str | os.PathLike | None = None,
    text_max_relative_distance: int | None = None,
) -> ConversionResult:
    """Convert `tf_checkpoint` into `output_dir`; with `verify_against=(outputs.npz, inputs.npz)` check the result.

    `original_config` is the original model config as JSON (`as_dict()`); without it, every value the checkpoint
    does not store is the released default, listed in the result's `summary()` and the model card.
    """
    output_dir = Path(output_dir).absolute()
    check_output_dir(output_dir, overwrite)
    if verify_against is not None:
        check_reference_files(*verify_against)
    if original_config is not None and not Path(original_config).is_file():
        raise ConversionError(f"original config {original_config} does not exist.")
    created_parents = _make_parents(output_dir)
    try:
        remove_stale_staging(output_dir)
        staging = _staging_folder(output_dir, "partial")
    except OSError as error:
        raise ConversionError(f"cannot write beside the output folder {output_dir}: {_one_line(error)}") from error
    try:
        staging.chmod(0o755)
        checkpoint = read_tf_checkpoint(tf_checkpoint)
        converted = convert_variables(
            checkpoint,
            audio_num_heads,
            original_config=original_config,
            text_max_relative_distance=text_max_relative_distance,
        )
        config = converted.model.config
        if vocab_file is not None and isinstance(config, VattAudioConfig):
            raise ConversionError("a fine-tuned audio checkpoint has no text tower: drop --vocab_file.")
        tokenizer = load_tokenizer(vocab_file, config.text_config) if vocab_file is not None else None
        with _writing(output_dir):
            save_folder(converted, staging, tokenizer)
        errors = {}
        if verify_against is not None:
            errors = _verify_folder(type(converted.model), staging, verify_against, tolerance)
        card = model_card(converted, checkpoint.prefix, errors, tokenizer, push_to_hub or output_dir.name)
        with _writing(output_dir):
            (staging / "README.md").write_text(card)
            _move_into_place(staging, output_dir, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for parent in reversed(created_parents):
            with suppress(OSError):
                parent.rmdir()
        raise
    if push_to_hub is not None:
        push_folder(output_dir, push_to_hub, hub_api)
    return ConversionResult(
        converted.kind, output_dir, config, converted.num_mapped, converted.ignored, errors, converted.settings
    )


def push_folder(folder: Path, repo_id: str, api=None) -> None:
    """Upload a converted folder to the Hub (`api` defaults to `huggingface_hub.HfApi()`)."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="Convert original VATT checkpoint")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tf_checkpoint", required=True, help="checkpoint prefix (.../ckpt-500000) or its folder")
    parser.add_argument("--output_dir", required=True, help="folder to write (must be empty unless --overwrite)")
    parser.add_argument("--vocab_file", help="original word-level vocabulary (e.g. howto100m_en.txt)")
    parser.add_argument(
        "--verify_against",
        nargs=2,
        metavar=("OUTPUTS_NPZ", "INPUTS_NPZ"),
        help="reference outputs and inputs of the original model; the conversion fails if they are not reproduced",
    )
    parser.add_argument("--verify_tolerance", type=float, default=1e-4, help="largest accepted max abs error")
    parser.add_argument("--push_to_hub", metavar="REPO_ID", help="upload the converted folder to this Hub repository")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    parser.add_argument(
        "--original_config",
        metavar="JSON",
        help="the original model config as JSON (its `as_dict()`): every hyperparameter comes from it",
    )
    parser.add_argument(
        "--audio_num_heads",
        type=int,
        help="heads of the audio (or shared) encoder (original num_heads), not stored in checkpoints",
    )
    parser.add_argument(
        "--text_max_relative_distance",
        type=int,
        help="the T5 text tower's max_relative_distance (released default 64), not stored in checkpoints",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = convert_checkpoint(
            args.tf_checkpoint,
            args.output_dir,
            vocab_file=args.vocab_file,
            verify_against=args.verify_against,
            push_to_hub=args.push_to_hub,
            overwrite=args.overwrite,
            audio_num_heads=args.audio_num_heads,
            tolerance=args.verify_tolerance,
            original_config=args.original_config,
            text_max_relative_distance=args.text_max_relative_distance,
        )
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(result.summary())
    return 0


if __name__ == "__main__":
    transformers_logging.disable_progress_bar()
    sys.exit(main())
