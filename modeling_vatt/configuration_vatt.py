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
"""VATT audio, text and audio-text configurations."""

import math

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig

POSITION_INTERPOLATIONS = ("none", "spline", "linear")
INTERPOLATION_LENGTHS = ("unpadded", "padded")
PATCH_FEATURES = ("waveform", "log_spectrum")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}.")


class _PresetMixin:
    """`from_preset(name, **overrides)` for configs that define a `PRESETS` table."""

    PRESETS: dict[str, dict] = {}

    @classmethod
    def from_preset(cls, name: str, **overrides):
        """Build a named preset; dict overrides of sub-configs are merged into the preset's sub-config."""
        if name not in cls.PRESETS:
            raise ValueError(f"Unknown {cls.__name__} preset {name!r}; available: {sorted(cls.PRESETS)}.")
        kwargs = dict(cls.PRESETS[name])
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(kwargs.get(key), dict):
                value = {**kwargs[key], **value}
            kwargs[key] = value
        return cls(**kwargs)


# What a modality-agnostic model's towers must agree on to share one encoder.
SHARED_ENCODER_SIZES = ("hidden_size", "num_hidden_layers", "num_attention_heads", "head_dim", "intermediate_size")
# The transformer sizes of the tiny presets, shared by both towers so that they also fit one shared encoder.
TINY_ENCODER = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "head_dim": 16,
    "intermediate_size": 128,
}


@strict
class VattEncoderConfig(_PresetMixin, PreTrainedConfig):
    """
    What every VATT transformer has: its sizes, regularisation and long-input windows. [`VattAudioConfig`] and
    [`VattTextConfig`] add their inputs and defaults; their docstrings describe the fields.
    """

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    head_dim: int = 64
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    hidden_dropout_prob: float = 0.1
    attention_dropout: float = 0.1
    post_projection_size: int | None = None
    window_length: int | None = None
    window_overlap: int = 0

    @property
    def output_size(self) -> int:
        """Width of `pooler_output` / `last_hidden_state`."""
        return self.post_projection_size or self.hidden_size


@strict
class VattAudioConfig(VattEncoderConfig):
    r"""
    Configuration of the VATT raw-waveform audio tower (WaT): 128-sample patches, a learned position table with its own
    LayerNorm, an AGG token and a pre-LN transformer. `VattAudioConfig()` is WaT-Base.

    Args:
        hidden_size: width of the transformer.
        num_hidden_layers: number of encoder layers.
        num_attention_heads: attention heads per layer.
        head_dim: width of one attention head (`d_kv` in the original; 64 for every released model).
        intermediate_size: width of the feed-forward layer.
        hidden_act: activation of the feed-forward layer (exact GELU in the original).
        patch_size: samples per patch (128 = 2.67 ms at 48 kHz).
        patch_features: what the linear patch embedding sees: `"waveform"` (the raw samples, as in the original) or
            `"log_spectrum"` (the LayerNorm'ed log-magnitude spectrum of each Hann-windowed patch, `patch_size // 2 +
            1` bins). The spectrum is invariant to phase and level, which lets small models trained briefly from
            scratch learn speech content that the raw-sample projection does not pick up within the same budget.
        max_position_embeddings: rows of the position table (1200 patches = 3.2 s at 48 kHz).
        layer_norm_eps: epsilon of every LayerNorm.
        hidden_dropout_prob: dropout on embeddings, residual branches and the final output.
        attention_dropout: dropout on attention probabilities.
        drop_token_rate: fraction of patch tokens DropToken removes in training (never in eval).
        position_interpolation: `"none"` (a position is the absolute patch index; longer inputs are windowed),
            `"spline"` (the original's cubic polyharmonic resampling of the whole table, computed in float64) or
            `"linear"` (cheap linear resampling).
        position_interpolation_length: in the resampling modes, resample each item to its own `"unpadded"` length
            (padding-invariant, default) or to the `"padded"` tensor length (what the original code did).
        use_pre_projection: Linear + GELU after the patch embedding (modality-agnostic model).
        post_projection_size: if set, Linear + GELU to this width after the encoder (modality-agnostic model).
        sampling_rate: the rate the tower was trained at.
        window_length: patches per window when encoding inputs longer than it (default: the position table).
        window_overlap: patches shared by consecutive windows.
        long_input_mode: `"window"` (default) or `"full"` (one attention over the whole input; needs interpolation).
        classifier_head: head of [`VattForAudioClassification`]: `"linear"` (a plain Linear, default) or
            `"original"` (the original fine-tuning head: dropout, then a Linear whose bias starts at
            `-log(num_labels - 1)`, trained multi-label with sigmoid cross-entropy).
        classifier_dropout: dropout on the pooled output before the classifier.
        window_logits_aggregation: how [`VattForAudioClassification`] combines the per-window logits of a long
            (windowed) recording: `"mean"` (mean of the logits weighted by each window's real-content share, as
            the original averaged test-clip logits) or `"max"` (per-class maximum over the windows).
    """

    model_type = "vatt_audio_model"
    base_config_key = "audio_config"

    PRESETS = {
        "base": {},
        "medium": {"hidden_size": 1024, "num_attention_heads": 16, "intermediate_size": 4096},
        "large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096},
        "small": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 6, "intermediate_size": 1536},
        "tiny": {**TINY_ENCODER, "max_position_embeddings": 50},
    }

    patch_size: int = 128
    patch_features: str = "waveform"
    max_position_embeddings: int = 1200
    drop_token_rate: float = 0.5
    position_interpolation: str = "none"
    position_interpolation_length: str = "unpadded"
    use_pre_projection: bool = False
    sampling_rate: int = 48000
    long_input_mode: str = "window"
    classifier_head: str = "linear"
    classifier_dropout: float = 0.0
    window_logits_aggregation: str = "mean"

    def __post_init__(self, **kwargs):
        _check_choice("position_interpolation", self.position_interpolation, POSITION_INTERPOLATIONS)
        _check_choice("position_interpolation_length", self.position_interpolation_length, INTERPOLATION_LENGTHS)
        _check_choice("patch_features", self.patch_features, PATCH_FEATURES)
        _check_choice("long_input_mode", self.long_input_mode, ("window", "full"))
        _check_choice("classifier_head", self.classifier_head, ("linear", "original"))
        _check_choice("window_logits_aggregation", self.window_logits_aggregation, ("mean", "max"))
        if not 0.0 <= self.drop_token_rate < 1.0:
            raise ValueError(f"`drop_token_rate` must be in [0, 1), got {self.drop_token_rate}.")
        if self.window_length is None:
            self.window_length = self.max_position_embeddings
        if not 0 < self.window_length <= self.max_position_embeddings:
            raise ValueError("`window_length` must be in [1, max_position_embeddings].")
        if not 0 <= self.window_overlap < self.window_length:
            raise ValueError("`window_overlap` must be smaller than `window_length`.")
        super().__post_init__(**kwargs)


@strict
class VattTextConfig(VattEncoderConfig):
    r"""
    Configuration of the VATT text tower. `position_embedding_type="relative"` (default) is the original
    modality-specific T5-style encoder (frozen word table, AGG token in embedding space, GELU pre-projection, shared
    relative position bias, RMSNorm/LayerNorm, no biases, no attention scaling). `"absolute"` is the text path of the
    modality-agnostic model (learned position table with LayerNorm, generic pre-LN layers with biases).

    Args:
        vocab_size: rows of the word table.
        embedding_size: width of the word table (300-d word2vec in the original).
        hidden_size, num_hidden_layers, num_attention_heads, head_dim, intermediate_size, hidden_act, layer_norm_eps,
        hidden_dropout_prob, attention_dropout: as in [`VattAudioConfig`].
        position_embedding_type: `"relative"` or `"absolute"`.
        relative_attention_num_buckets, relative_attention_max_distance: T5 bucketing of relative positions.
        max_position_embeddings: rows of the absolute position table (`"absolute"` only).
        position_interpolation, position_interpolation_length: as in [`VattAudioConfig`] (`"absolute"` only).
        trainable_word_embeddings: train the word table (frozen in the original).
        pad_token_id: id of the padding token (0, as in the original); without an `attention_mask`, text is masked
            as `input_ids != pad_token_id`.
        post_projection_size: Linear + GELU to this width after the encoder (modality-agnostic model).
        window_length: tokens per window for transcripts longer than this. `None` (default) never windows the
            relative tower; the absolute tower without interpolation windows at its position table's length.
        window_overlap: tokens shared by consecutive windows.
    """

    model_type = "vatt_text_model"
    base_config_key = "text_config"

    PRESETS = {
        "t5_small": {},
        "t5_base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
        "small": {
            "vocab_size": 8192,
            "embedding_size": 128,
            "hidden_size": 256,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "intermediate_size": 1024,
            "trainable_word_embeddings": True,
        },
        "tiny": {"vocab_size": 1000, "embedding_size": 24, **TINY_ENCODER},
    }

    hidden_size: int = 512
    num_hidden_layers: int = 6
    num_attention_heads: int = 8
    intermediate_size: int = 2048
    vocab_size: int = 65536
    embedding_size: int = 300
    position_embedding_type: str = "relative"
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 64
    max_position_embeddings: int = 16
    position_interpolation: str = "spline"
    position_interpolation_length: str = "unpadded"
    trainable_word_embeddings: bool = False
    pad_token_id: int = 0

    def __post_init__(self, **kwargs):
        _check_choice("position_embedding_type", self.position_embedding_type, ("relative", "absolute"))
        _check_choice("position_interpolation", self.position_interpolation, POSITION_INTERPOLATIONS)
        _check_choice("position_interpolation_length", self.position_interpolation_length, INTERPOLATION_LENGTHS)
        if not isinstance(self.pad_token_id, int) or not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"`pad_token_id` must be a token id in [0, vocab_size={self.vocab_size}): padding is masked as "
                f"`input_ids != pad_token_id`; got {self.pad_token_id!r}."
            )
        if (
            self.window_length is None
            and self.position_embedding_type == "absolute"
            and self.position_interpolation == "none"
        ):
            self.window_length = self.max_position_embeddings
        if self.window_length is not None and not 0 <= self.window_overlap < self.window_length:
            raise ValueError("`window_overlap` must be smaller than `window_length`.")
        super().__post_init__(**kwargs)


@strict
class VattConfig(_PresetMixin, PreTrainedConfig):
    r"""
    Configuration of [`VattForContrastivePretraining`]: an audio tower, a text tower and their projections into one
    audio-text space. `VattConfig()` is the released modality-specific size (WaT-Base audio, T5-Small text).

    Args:
        audio_config: dict or [`VattAudioConfig`].
        text_config: dict or [`VattTextConfig`].
        modality_agnostic: one encoder shared by audio and text (UVATT); the text tower then uses absolute positions
            and both towers get pre/post projections.
        projection_type: `"linear"` (one Linear per modality into `projection_dim`) or `"bridge"` (the original FAC
            path: audio -> audio-video space (`audio_video_projection_dim`) -> ReLU, Linear, BatchNorm -> the
            `projection_dim` text space; text -> one Linear). Converted checkpoints use `"bridge"`.
        projection_dim: width of the shared audio-text space (256 = the original's video-audio-text space).
        audio_video_projection_dim: width of the original audio-video space (`"bridge"` only).
        batch_norm_eps: epsilon of the bridge BatchNorm.
        logit_scale_init_value: log of the inverse temperature (temperature 0.07 in VATT).
        learnable_logit_scale: learn the temperature (fixed in VATT).
        loss_type: `"nce"` (VATT's NCE: one softmax over both directions) or `"symmetric"` (CLIP-style two softmaxes).
            Several texts per clip turn either into its MIL form.
    """

    model_type = "vatt"
    sub_configs_defaults = {"audio_config": VattAudioConfig, "text_config": VattTextConfig}

    PRESETS = {
        "base": {"audio_config": VattAudioConfig.PRESETS["base"], "text_config": VattTextConfig.PRESETS["t5_small"]},
        "medium": {
            "audio_config": VattAudioConfig.PRESETS["medium"],
            "text_config": VattTextConfig.PRESETS["t5_base"],
        },
        "large": {"audio_config": VattAudioConfig.PRESETS["large"], "text_config": VattTextConfig.PRESETS["t5_base"]},
        "small": {
            "audio_config": VattAudioConfig.PRESETS["small"],
            "text_config": VattTextConfig.PRESETS["small"],
            "projection_dim": 256,
        },
        "tiny": {
            "audio_config": VattAudioConfig.PRESETS["tiny"],
            "text_config": VattTextConfig.PRESETS["tiny"],
            "projection_dim": 32,
        },
        # Trains in minutes on two CPU cores: 8 kHz audio, so a 128-sample patch is 16 ms (a speech frame) and a
        # 2-second window fits the 125-row position table; log-spectrum patch features with a GELU pre-projection;
        # no DropToken (at this budget dropping frames costs more than it saves); a frozen word table (filled with
        # character n-gram vectors by the pretraining script); transcripts encoded in 8-word windows, as the audio is.
        "cpu": {
            "audio_config": {
                **VattAudioConfig.PRESETS["small"],
                "hidden_size": 128,
                "num_hidden_layers": 3,
                "num_attention_heads": 4,
                "head_dim": 32,
                "intermediate_size": 512,
                "max_position_embeddings": 125,
                "sampling_rate": 8000,
                "patch_features": "log_spectrum",
                "drop_token_rate": 0.0,
                "use_pre_projection": True,
            },
            "text_config": {
                **VattTextConfig.PRESETS["small"],
                "embedding_size": 128,
                "hidden_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "head_dim": 32,
                "intermediate_size": 512,
                "trainable_word_embeddings": False,
                "window_length": 8,
            },
            "projection_dim": 128,
        },
        **{
            f"ut_{size}": {
                "modality_agnostic": True,
                "audio_config": {**VattAudioConfig.PRESETS[size]},
                "text_config": {},
            }
            for size in ("base", "medium", "large")
        },
    }

    audio_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    modality_agnostic: bool = False
    projection_type: str = "linear"
    projection_dim: int = 256
    audio_video_projection_dim: int = 512
    batch_norm_eps: float = 1e-5
    logit_scale_init_value: float = math.log(1 / 0.07)
    learnable_logit_scale: bool = False
    loss_type: str = "nce"

    def __post_init__(self, **kwargs):
        _check_choice("projection_type", self.projection_type, ("linear", "bridge"))
        _check_choice("loss_type", self.loss_type, ("nce", "symmetric"))
        if self.modality_agnostic:
            self.audio_config, self.text_config = _modality_agnostic_sub_configs(self.audio_config, self.text_config)
        super().__post_init__(**kwargs)
        if self.modality_agnostic:
            mismatched = [
                k for k in SHARED_ENCODER_SIZES if getattr(self.audio_config, k) != getattr(self.text_config, k)
            ]
            if mismatched or self.text_config.position_embedding_type != "absolute":
                raise ValueError(
                    "A modality-agnostic VATT shares one encoder: audio and text must agree on "
                    f"{mismatched or SHARED_ENCODER_SIZES} and the text tower must use absolute positions."
                )


def _modality_agnostic_sub_configs(audio_config, text_config) -> tuple[dict, dict]:
    """Fill UVATT defaults: both towers share the encoder sizes and get pre/post projections."""
    audio = audio_config.to_dict() if isinstance(audio_config, PreTrainedConfig) else dict(audio_config or {})
    text = text_config.to_dict() if isinstance(text_config, PreTrainedConfig) else dict(text_config or {})
    audio.setdefault("use_pre_projection", True)
    audio.setdefault("post_projection_size", 1024)
    audio_defaults = VattAudioConfig.__dataclass_fields__
    for key in (*SHARED_ENCODER_SIZES, "hidden_act", "layer_norm_eps", "hidden_dropout_prob", "attention_dropout"):
        text.setdefault(key, audio.get(key, audio_defaults[key].default))
    text.setdefault("position_embedding_type", "absolute")
    text.setdefault("post_projection_size", audio["post_projection_size"])
    return audio, text


__all__ = ["VattEncoderConfig", "VattAudioConfig", "VattTextConfig", "VattConfig"]
