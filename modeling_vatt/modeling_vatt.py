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
"""PyTorch VATT audio (WaT) and text towers, the modality-agnostic variant and the audio-text contrastive model."""

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, can_return_tuple
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_vatt import VattAudioConfig, VattConfig, VattTextConfig

# Added to spectral magnitudes before the log so that silent (or zero-padded) patches stay finite.
LOG_SPECTRUM_FLOOR = 1e-3

# ----------------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class VattEncoderOutput(BaseModelOutputWithPooling):
    r"""
    Output of [`VattAudioModel`] and [`VattTextModel`].

    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, 1 + sequence_length, hidden_size)`):
        Index 0 is the AGG token, `[:, 1:]` the patch (word) features. For windowed long inputs it holds the stitched
        per-patch features after the recording-level pooled output, and is `None` unless
        `return_window_features=True`.
    pooler_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
        The AGG token output; for windowed inputs the mean of the windows' AGG outputs weighted by their real content.
    attention_mask (`torch.BoolTensor` of shape `(batch_size, 1 + sequence_length)`, *optional*):
        Which positions of `last_hidden_state` are real (not padding). `None` when nothing is padded.
    window_pooler_output (`torch.FloatTensor` of shape `(batch_size, num_windows, hidden_size)`, *optional*):
        Per-window AGG outputs (windowed inputs only).
    window_spans (`torch.LongTensor` of shape `(num_windows, 2)`, *optional*):
        Start and end (exclusive) of each window, in samples (audio) or tokens (text).
    window_mask (`torch.FloatTensor` of shape `(batch_size, num_windows)`, *optional*):
        Share of real content in each window (0 for windows that lie entirely in padding).
    """

    attention_mask: torch.Tensor | None = None
    window_pooler_output: torch.FloatTensor | None = None
    window_spans: torch.LongTensor | None = None
    window_mask: torch.FloatTensor | None = None


@dataclass
class VattContrastiveOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `(1,)`, *optional*, returned when `return_loss=True`):
        Contrastive loss (NCE, or MIL-NCE when several texts belong to each clip).
    logits_per_audio (`torch.FloatTensor` of shape `(audio_batch_size, text_batch_size)`):
        Scaled cosine similarities between audio and text embeddings.
    logits_per_text (`torch.FloatTensor` of shape `(text_batch_size, audio_batch_size)`):
        The transpose of `logits_per_audio`.
    audio_embeds (`torch.FloatTensor` of shape `(audio_batch_size, projection_dim)`):
        Projected audio embeddings (not normalised).
    text_embeds (`torch.FloatTensor` of shape `(text_batch_size, projection_dim)`):
        Projected text embeddings (not normalised).
    audio_model_output, text_model_output ([`VattEncoderOutput`]):
        The tower outputs.
    """

    loss: torch.FloatTensor | None = None
    logits_per_audio: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    audio_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    audio_model_output: VattEncoderOutput | None = None
    text_model_output: VattEncoderOutput | None = None

    def to_tuple(self) -> tuple[Any]:
        return tuple(v.to_tuple() if isinstance(v, ModelOutput) else v for v in self.values())


# ----------------------------------------------------------------------------------------------------------------------
# Learned position tables and their resampling
# ----------------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def polyharmonic_spline_matrix(num_rows: int, length: int) -> np.ndarray:
    """
    `(length, num_rows)` float64 matrix that resamples a `num_rows`-row table to `length` rows exactly as the original
    VATT does (order-3 polyharmonic spline with an affine term, knots `i / num_rows`, queries `j / length`), but solved
    in float64 instead of the original's ill-conditioned float32.
    """
    knots = np.arange(num_rows, dtype=np.float64) / num_rows
    queries = np.arange(length, dtype=np.float64) / length

    def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.maximum((a[:, None] - b[None, :]) ** 2, 1e-10) ** 1.5

    affine = np.stack([knots, np.ones_like(knots)], axis=1)
    system = np.zeros((num_rows + 2, num_rows + 2))
    system[:num_rows, :num_rows] = kernel(knots, knots)
    system[:num_rows, num_rows:] = affine
    system[num_rows:, :num_rows] = affine.T
    # Coefficients [w; v] = system^-1 [table; 0], so only the first num_rows columns of the inverse matter.
    coefficients = np.linalg.solve(system, np.eye(num_rows + 2)[:, :num_rows])
    evaluation = np.concatenate([kernel(queries, knots), queries[:, None], np.ones((length, 1))], axis=1)
    return evaluation @ coefficients


def resample_table(weight: torch.Tensor, length: int, mode: str) -> torch.Tensor:
    """Resample a `(rows, hidden)` table to `length` rows over the fractional grid `j / length` (spline or linear)."""
    num_rows = weight.shape[0]
    if length == num_rows:
        return weight
    if mode == "spline":
        matrix = torch.from_numpy(polyharmonic_spline_matrix(num_rows, length)).to(weight.device)
        return (matrix @ weight.double()).to(weight.dtype)
    coordinates = torch.arange(length, device=weight.device, dtype=torch.float64) * num_rows / length
    coordinates = coordinates.clamp(max=num_rows - 1)
    lower = coordinates.floor().long()
    upper = (lower + 1).clamp(max=num_rows - 1)
    fraction = (coordinates - lower).to(weight.dtype).unsqueeze(-1)
    return torch.lerp(weight[lower], weight[upper], fraction)


def learned_position_embeddings(
    table: nn.Embedding,
    layernorm: nn.LayerNorm,
    config: VattAudioConfig | VattTextConfig,
    length: int,
    valid_lengths: torch.Tensor | None,
) -> torch.Tensor:
    """
    Position embeddings `LayerNorm(rows)` for `length` tokens, shape `(1 or batch, length, hidden)`.

    With `position_interpolation="none"` row `i` is token `i`. Otherwise the whole table is resampled to the token
    count when it differs from the table size: to each item's unpadded length (`valid_lengths`) or, with
    `position_interpolation_length="padded"`, to the padded `length` as the original code did.
    """
    num_rows = table.num_embeddings
    mode = config.position_interpolation
    if mode == "none" or (length == num_rows and (valid_lengths is None or bool((valid_lengths == length).all()))):
        if length > num_rows:
            raise ValueError(
                f"{length} positions exceed the {num_rows}-row position table; use windowed encoding or a "
                "`position_interpolation` of 'spline' or 'linear'."
            )
        return layernorm(table.weight[:length]).unsqueeze(0)
    if valid_lengths is None or config.position_interpolation_length == "padded":
        targets, inverse = [length], None
    else:
        unique, inverse = torch.unique(valid_lengths, return_inverse=True)
        targets = unique.tolist()
    rows = [F.pad(resample_table(table.weight, target, mode), (0, 0, 0, length - target)) for target in targets]
    positions = layernorm(torch.stack(rows))
    return positions if inverse is None else positions[inverse]


def drop_tokens(
    embeddings: torch.Tensor, mask: torch.Tensor | None, rate: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """
    DropToken: keep a random `ceil((1 - rate) * tokens)` of the tokens of each item, real tokens before padding, in
    their original order. (The original shared one permutation across the batch; sampling per item is equivalent in
    distribution and keeps padded batches fair.)
    """
    batch_size, num_tokens, hidden_size = embeddings.shape
    num_kept = num_tokens - int(rate * num_tokens)
    scores = torch.rand(batch_size, num_tokens, device=embeddings.device)
    if mask is not None:
        scores = scores + (~mask).to(scores.dtype) * 2.0
    kept = scores.topk(num_kept, dim=1, largest=False).indices.sort(dim=1).values
    embeddings = embeddings.gather(1, kept.unsqueeze(-1).expand(-1, -1, hidden_size))
    return embeddings, None if mask is None else mask.gather(1, kept)


def _prepend_agg_token(
    embeddings: torch.Tensor, agg_token: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    agg = agg_token.to(embeddings.dtype).expand(embeddings.shape[0], 1, -1)
    embeddings = torch.cat([agg, embeddings], dim=1)
    if mask is not None:
        mask = F.pad(mask, (1, 0), value=True)
    return embeddings, mask


# ----------------------------------------------------------------------------------------------------------------------
# Embeddings
# ----------------------------------------------------------------------------------------------------------------------


class VattPatchLogSpectrum(nn.Module):
    """LayerNorm'ed log-magnitude spectrum of each Hann-windowed patch: `(..., patch_size)` -> `(..., patch_size//2+1)`."""

    def __init__(self, config: VattAudioConfig):
        super().__init__()
        self.patch_size = config.patch_size
        self.layernorm = nn.LayerNorm(config.patch_size // 2 + 1, eps=config.layer_norm_eps)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        # The window is rebuilt per call (128 values) rather than kept as a buffer that meta-device loading would skip.
        window = torch.hann_window(self.patch_size, periodic=True, device=patches.device)
        magnitude = torch.fft.rfft(patches.float() * window, dim=-1).abs()
        return self.layernorm(torch.log(magnitude + LOG_SPECTRUM_FLOOR).to(self.layernorm.weight.dtype))


class VattAudioEmbeddings(nn.Module):
    """
    Waveform patches (raw samples or their log spectra) -> linear projection (+ optional GELU pre-projection) +
    LayerNorm'ed positions -> DropToken -> AGG.
    """

    def __init__(self, config: VattAudioConfig):
        super().__init__()
        self.config = config
        log_spectrum = config.patch_features == "log_spectrum"
        self.patch_spectrum = VattPatchLogSpectrum(config) if log_spectrum else None
        patch_width = config.patch_size // 2 + 1 if log_spectrum else config.patch_size
        self.patch_embedding = nn.Linear(patch_width, config.hidden_size)
        self.pre_projection = nn.Linear(config.hidden_size, config.hidden_size) if config.use_pre_projection else None
        self.position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.position_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.agg_token = nn.Parameter(torch.zeros(config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self, input_values: torch.Tensor, patch_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch_size, num_samples = input_values.shape
        num_patches = num_samples // self.config.patch_size
        patches = input_values[:, : num_patches * self.config.patch_size].reshape(batch_size, num_patches, -1)
        if self.patch_spectrum is not None:
            patches = self.patch_spectrum(patches)
        embeddings = self.patch_embedding(patches.to(self.patch_embedding.weight.dtype))
        if self.pre_projection is not None:
            embeddings = F.gelu(self.pre_projection(embeddings))
        valid_lengths = None if patch_mask is None else patch_mask.sum(1)
        positions = learned_position_embeddings(
            self.position_embedding, self.position_layernorm, self.config, num_patches, valid_lengths
        )
        embeddings = self.dropout(embeddings + positions)
        if self.training and self.config.drop_token_rate > 0:
            embeddings, patch_mask = drop_tokens(embeddings, patch_mask, self.config.drop_token_rate)
        return _prepend_agg_token(embeddings, self.agg_token, patch_mask)


class VattTextEmbeddings(nn.Module):
    """
    Word table lookup (frozen unless `trainable_word_embeddings`), then either the T5-style path (AGG token in
    embedding space, bias-free GELU pre-projection) or the absolute path (GELU pre-projection with bias, LayerNorm'ed
    positions, AGG token in model space).
    """

    def __init__(self, config: VattTextConfig):
        super().__init__()
        self.config = config
        self.relative = config.position_embedding_type == "relative"
        self.word_embeddings = nn.Embedding(config.vocab_size, config.embedding_size)
        self.word_embeddings.weight.requires_grad_(config.trainable_word_embeddings)
        self.pre_projection = nn.Linear(config.embedding_size, config.hidden_size, bias=not self.relative)
        if self.relative:
            self.agg_token = nn.Parameter(torch.zeros(config.embedding_size))
        else:
            self.position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size)
            self.position_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
            self.agg_token = nn.Parameter(torch.zeros(config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        words = self.word_embeddings(input_ids)
        if self.relative:
            words, mask = _prepend_agg_token(words, self.agg_token, mask)
            return self.dropout(F.gelu(self.pre_projection(words))), mask
        embeddings = F.gelu(self.pre_projection(words))
        positions = learned_position_embeddings(
            self.position_embedding, self.position_layernorm, self.config, input_ids.shape[1], mask.sum(1)
        )
        embeddings = self.dropout(embeddings + positions)
        return _prepend_agg_token(embeddings, self.agg_token, mask)


# ----------------------------------------------------------------------------------------------------------------------
# Encoder
# ----------------------------------------------------------------------------------------------------------------------


class VattRMSNorm(nn.Module):
    """T5's scale-only RMS norm, computed in float32."""

    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        normed = F.rms_norm(hidden_states.float(), hidden_states.shape[-1:], eps=self.variance_epsilon)
        return self.weight * normed.to(self.weight.dtype)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    position_bias: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    scores = torch.matmul(query, key.transpose(-1, -2))
    if scaling != 1.0:
        scores = scores * scaling
    if position_bias is not None:
        scores = scores + position_bias
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


def sdpa_position_bias_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    position_bias: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """
    SDPA with the relative position bias as its additive mask, read in place. transformers' SDPA wrapper makes the
    mask contiguous, which would expand the strided bias of [`VattEncoder.position_bias`] to `heads * length**2`
    values in every layer. `attention_mask` is a boolean key mask `(batch, 1, 1, length)` or None.

    A bias that needs a gradient (training) gets plain attention math: SDPA's fused CPU kernels return no gradient for
    an additive mask, and its fallback math path adds a fully-masked-row check over every score. Otherwise padding
    becomes one extra head dimension (queries 1, values 0, keys a huge negative number where padded), so one strided
    bias still serves the whole batch.
    """
    if position_bias.requires_grad and torch.is_grad_enabled():
        output, _ = eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout, position_bias)
        return output, None
    head_dim = value.shape[-1]
    if attention_mask is not None:
        padded = torch.zeros_like(key[..., :1]).masked_fill(
            ~attention_mask.transpose(-1, -2), torch.finfo(key.dtype).min / 4
        )
        query, key, value = F.pad(query, (0, 1), value=1.0), torch.cat([key, padded], -1), F.pad(value, (0, 1))
    output = F.scaled_dot_product_attention(
        query, key, value, attn_mask=position_bias, dropout_p=dropout, scale=scaling
    )
    return output[..., :head_dim].transpose(1, 2).contiguous(), None


class VattAttention(nn.Module):
    """Multi-head self-attention; T5 style (relative text tower): no biases and no `1/sqrt(d)` scaling."""

    def __init__(self, config: VattAudioConfig | VattTextConfig):
        super().__init__()
        self.config = config
        t5_style = getattr(config, "position_embedding_type", "absolute") == "relative"
        self.head_dim = config.head_dim
        self.scaling = 1.0 if t5_style else config.head_dim**-0.5
        self.dropout = config.attention_dropout
        self.is_causal = False
        inner_size = config.num_attention_heads * config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, inner_size, bias=not t5_style)
        self.k_proj = nn.Linear(config.hidden_size, inner_size, bias=not t5_style)
        self.v_proj = nn.Linear(config.hidden_size, inner_size, bias=not t5_style)
        self.out_proj = nn.Linear(inner_size, config.hidden_size, bias=not t5_style)
        if t5_style:
            # T5's initialiser for unscaled attention: query-key logits start with unit variance (Glorot kernels
            # would give them a variance of `head_dim`, i.e. near one-hot attention that barely passes gradients).
            self.q_proj.init_std = (config.hidden_size * config.head_dim) ** -0.5
            self.k_proj.init_std = self.v_proj.init_std = config.hidden_size**-0.5
            self.out_proj.init_std = inner_size**-0.5

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_bias: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)

        attention_interface: Callable
        if position_bias is not None and self.config._attn_implementation == "sdpa":
            # The encoder laid the bias out for the keys in reverse order (see `VattEncoder.reads_strided_bias`).
            key, value = key.flip(2), value.flip(2)
            attention_interface = sdpa_position_bias_attention_forward
        else:
            attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(
                self.config._attn_implementation, eager_attention_forward
            )
        extra = {} if position_bias is None else {"position_bias": position_bias}
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            is_causal=False,
            scaling=self.scaling,
            dropout=0.0 if not self.training else self.dropout,
            **extra,
        )
        attn_output = self.out_proj(attn_output.reshape(*input_shape, -1).contiguous())
        return attn_output, attn_weights


class VattMLP(nn.Module):
    def __init__(self, config: VattAudioConfig | VattTextConfig):
        super().__init__()
        bias = getattr(config, "position_embedding_type", "absolute") != "relative"
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size, bias=bias)
        self.activation_fn = ACT2FN[config.hidden_act]
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.activation_fn(self.fc1(hidden_states))))


class VattEncoderLayer(GradientCheckpointingLayer):
    """Pre-norm layer. The T5-style text layer normalises attention inputs with RMSNorm, the MLP input with LayerNorm."""

    def __init__(self, config: VattAudioConfig | VattTextConfig):
        super().__init__()
        t5_style = getattr(config, "position_embedding_type", "absolute") == "relative"
        norm = VattRMSNorm if t5_style else nn.LayerNorm
        self.layer_norm1 = norm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = VattAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = VattMLP(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_bias: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        attn_output, _ = self.self_attn(self.layer_norm1(hidden_states), attention_mask, position_bias, **kwargs)
        hidden_states = hidden_states + self.dropout(attn_output)
        return hidden_states + self.dropout(self.mlp(self.layer_norm2(hidden_states)))


def relative_position_buckets(length: int, num_buckets: int, max_distance: int, device: torch.device) -> torch.Tensor:
    """T5 bidirectional buckets of `key - query` offsets, shape `(length, length)`."""
    positions = torch.arange(length, device=device)
    return offset_buckets(positions[None, :] - positions[:, None], num_buckets, max_distance)


def offset_buckets(relative: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    """T5 bidirectional bucket of each `key - query` offset: exact below `num_buckets / 4`, log-spaced above."""
    half = num_buckets // 2
    buckets = (relative > 0).long() * half
    distance = relative.abs()
    max_exact = half // 2
    log_ratio = torch.log(distance.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact)
    large = (max_exact + (log_ratio * (half - max_exact)).long()).clamp(max=half - 1)
    return buckets + torch.where(distance < max_exact, distance, large)


class VattEncoder(nn.Module):
    """Stack of [`VattEncoderLayer`] and the final norm; owns the shared relative position bias of the T5-style tower."""

    def __init__(self, config: VattAudioConfig | VattTextConfig):
        super().__init__()
        self.config = config
        t5_style = getattr(config, "position_embedding_type", "absolute") == "relative"
        self.relative_attention_bias = None
        if t5_style:
            self.relative_attention_bias = nn.Embedding(
                config.relative_attention_num_buckets, config.num_attention_heads
            )
            self.relative_attention_bias.init_std = config.hidden_size**-0.5
        self.layers = nn.ModuleList([VattEncoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.final_layer_norm = (VattRMSNorm if t5_style else nn.LayerNorm)(
            config.hidden_size, eps=config.layer_norm_eps
        )
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.gradient_checkpointing = False
        # Without autograd, the bias of the last length is kept and reused while the table is unchanged: building
        # it costs as much as one attention layer at 2,048 tokens (mostly first-touch page faults of a fresh buffer).
        self._inference_bias: tuple[tuple, torch.Tensor] | None = None

    @property
    def reads_strided_bias(self) -> bool:
        """
        Whether attention reads the relative bias as a strided view (SDPA): [`VattAttention`] then takes the keys in
        reverse order, and padding stays a key mask.
        """
        return self.relative_attention_bias is not None and self.config._attn_implementation == "sdpa"

    def position_bias(self, length: int, dtype: torch.dtype, reversed_keys: bool = False) -> torch.Tensor:
        """
        `(1, heads, length, length)` relative bias shared by every layer, built from its `2 * length - 1` offsets.

        With `reversed_keys`, column `j` belongs to key `length - 1 - j`. The bias is then a Hankel matrix (entry
        `(q, j)` depends on `q + j` only), which is a strided view of the offsets: O(length) memory that SDPA reads in
        place, instead of a `heads * length**2` tensor.
        """
        table = self.relative_attention_bias.weight
        # Inference tensors (a model built under `torch.inference_mode`) keep no version counter to key the reuse on.
        reusable = not (torch.is_grad_enabled() or torch.compiler.is_compiling() or table.is_inference())
        key = (length, dtype, reversed_keys, table.device, table.data_ptr(), table._version) if reusable else None
        if key is not None and self._inference_bias is not None and self._inference_bias[0] == key:
            return self._inference_bias[1]
        offsets = torch.arange(1 - length, length, device=table.device)
        buckets = offset_buckets(
            offsets, self.config.relative_attention_num_buckets, self.config.relative_attention_max_distance
        )
        # (heads, 2 * length - 1): offsets 1 - length ... length - 1, contiguous so that the views below are sequential.
        per_offset = self.relative_attention_bias(buckets).to(dtype).T.contiguous()
        if reversed_keys:
            # Entry (q, j) holds offset (length - 1 - j) - q, which is index q + j of the reversed offsets.
            reversed_offsets = per_offset.flip(1).contiguous()
            heads, stride = reversed_offsets.shape[0], reversed_offsets.stride(0)
            bias = reversed_offsets.as_strided((1, heads, length, length), (0, stride, 1, 1))
        else:
            # Row q holds offsets -q ... length - 1 - q: windows of the offset axis, last window first.
            bias = per_offset.unfold(1, length, 1).flip(1).contiguous().unsqueeze(0)
        self._inference_bias = None if key is None else (key, bias)
        return bias

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutput:
        hidden_states = inputs_embeds
        position_bias = None
        if self.reads_strided_bias:
            # SDPA reads the bias as a strided view of its offsets, keys in reverse order; padding stays a key mask
            # `(batch, 1, 1, length)`, reversed with the keys, so the bias is never expanded per item.
            position_bias = self.position_bias(hidden_states.shape[1], hidden_states.dtype, reversed_keys=True)
            attention_mask = None if attention_mask is None else attention_mask.flip(-1)
        elif self.relative_attention_bias is not None:
            # Eager attention: the padding mask is folded into a dense bias once, as in the original, not in every layer.
            position_bias = self.position_bias(hidden_states.shape[1], hidden_states.dtype)
            if attention_mask is not None and attention_mask.dtype == torch.bool:
                position_bias = position_bias.masked_fill(~attention_mask, torch.finfo(position_bias.dtype).min)
            elif attention_mask is not None:
                position_bias = position_bias + attention_mask
            attention_mask = None
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask, position_bias, **kwargs)
        return BaseModelOutput(last_hidden_state=self.dropout(self.final_layer_norm(hidden_states)))


# ----------------------------------------------------------------------------------------------------------------------
# Pre-trained model base
# ----------------------------------------------------------------------------------------------------------------------


class VattPreTrainedModel(PreTrainedModel):
    config: VattConfig
    base_model_prefix = "vatt"
    input_modalities = ("audio", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["VattAudioEmbeddings", "VattTextEmbeddings", "VattEncoderLayer"]
    _supports_sdpa = True
    _supports_attention_backend = False
    _can_record_outputs = {"hidden_states": VattEncoderLayer, "attentions": VattAttention}

    def _init_weights(self, module: nn.Module) -> None:
        """Original VATT initialisers: Glorot-uniform kernels, zero biases, truncated-normal tables and tokens."""
        super()._init_weights(module)
        # Modules can ask for a normal initialiser of a given std (`init_std`, set by the T5-style tower).
        init_std = getattr(module, "init_std", None)
        if isinstance(module, nn.Linear):
            if init_std is None:
                init.xavier_uniform_(module.weight)
            else:
                init.normal_(module.weight, std=init_std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding) and init_std is not None:
            init.normal_(module.weight, std=init_std)
        elif isinstance(module, (VattAudioEmbeddings, VattTextEmbeddings)):
            size = module.agg_token.shape[0]
            init.trunc_normal_(module.agg_token, std=size**-0.5)
            if hasattr(module, "position_embedding"):
                hidden = module.position_embedding.embedding_dim
                init.trunc_normal_(module.position_embedding.weight, std=hidden**-0.5)
            if isinstance(module, VattTextEmbeddings):
                init.normal_(module.word_embeddings.weight, std=module.word_embeddings.embedding_dim**-0.5)
        elif isinstance(module, VattRMSNorm):
            init.ones_(module.weight)
        elif isinstance(module, VattForContrastivePretraining):
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        # Loading re-creates parameters with `requires_grad=True`; re-apply the configured freezing.
        model = super().from_pretrained(*args, **kwargs)
        model.apply_parameter_freezing()
        return model

    def apply_parameter_freezing(self) -> None:
        """Freeze what the config says is frozen: the word table (unless trainable) and a fixed temperature."""
        for module in self.modules():
            if isinstance(module, VattTextEmbeddings):
                module.word_embeddings.weight.requires_grad_(module.config.trainable_word_embeddings)
            elif isinstance(module, VattForContrastivePretraining):
                module.logit_scale.requires_grad_(module.config.learnable_logit_scale)


def _check_finite(tensor: torch.Tensor, name: str) -> None:
    # A NaN or Inf makes the sum non-finite, so a finite sum proves the input finite without the full check's
    # temporaries; only a sum that overflowed (or a truly bad input) pays for the element-wise check.
    if not torch.isfinite(tensor.sum()) and not torch.isfinite(tensor).all():
        raise ValueError(f"`{name}` contains NaN or infinite values.")


# ----------------------------------------------------------------------------------------------------------------------
# Windowing for long inputs
# ----------------------------------------------------------------------------------------------------------------------


def check_windowed_outputs(config: VattAudioConfig | VattTextConfig, kwargs: dict) -> None:
    """Per-layer outputs are recorded per window batch, so they mean nothing for a windowed input: refuse them."""
    for name in ("output_hidden_states", "output_attentions"):
        if kwargs.get(name, getattr(config, name, False)):
            raise ValueError(
                f"`{name}` is not available for inputs encoded in windows (longer than the window); use "
                "`return_window_features=True` (audio) for per-step features, or shorter inputs."
            )


def window_layout(length: int, window: int, overlap: int) -> torch.Tensor:
    """`(num_windows, 2)` start/end (exclusive) of windows of `window` steps with `overlap`; the last may be short."""
    hop = window - overlap
    num_windows = max(1, math.ceil(max(length - window, 0) / hop) + 1)
    starts = torch.arange(num_windows) * hop
    return torch.stack([starts, (starts + window).clamp(max=length)], dim=1)


def owned_windows(lengths: torch.Tensor, num_windows: int, window: int, overlap: int) -> torch.Tensor:
    """
    `(batch, num_windows)` bool: the windows an item of `lengths` real steps has when encoded alone (its own
    `window_layout`), so a longer batch-mate never adds a window that only repeats the item's overlap.
    """
    hop = window - overlap
    count = 1 + torch.div((lengths - window).clamp(min=0) + hop - 1, hop, rounding_mode="floor")
    return torch.arange(num_windows, device=lengths.device) < count.unsqueeze(-1)


def pool_windows(window_pooled: torch.Tensor, window_weight: torch.Tensor) -> torch.Tensor:
    """Mean of window outputs `(batch, windows, hidden)` weighted by their real-content share `(batch, windows)`."""
    weight = window_weight.to(window_pooled.dtype).unsqueeze(-1)
    return (window_pooled * weight).sum(1) / weight.sum(1).clamp(min=1e-6)


def stitch_windows(
    window_states: torch.Tensor, window_real: torch.Tensor, spans: torch.Tensor, length: int, batch_size: int
) -> torch.Tensor:
    """
    Average per-step features `(batch * windows, window, hidden)` over the windows that hold each step as real
    content (`window_real`, same leading shape) into `(batch, length, hidden)`; steps no window holds are 0.
    """
    num_windows, window = spans.shape[0], window_states.shape[1]
    steps = (spans[:, :1] + torch.arange(window)).clamp(max=length)  # index `length` collects the tail padding
    steps = steps.to(window_states.device).repeat(batch_size, 1)
    offsets = (torch.arange(batch_size, device=steps.device) * (length + 1)).repeat_interleave(num_windows)
    flat_index = (steps + offsets[:, None]).flatten()
    hidden = window_states.shape[-1]
    weight = window_real.flatten().to(window_states.dtype)
    total = window_states.new_zeros(batch_size * (length + 1), hidden).index_add_(
        0, flat_index, window_states.flatten(0, 1) * weight.unsqueeze(-1)
    )
    counts = window_states.new_zeros(batch_size * (length + 1)).index_add_(0, flat_index, weight)
    stitched = total / counts.clamp(min=1).unsqueeze(-1)
    return stitched.view(batch_size, length + 1, hidden)[:, :length]


# ----------------------------------------------------------------------------------------------------------------------
# Towers
# ----------------------------------------------------------------------------------------------------------------------


class VattTowerModel(VattPreTrainedModel):
    """Embeddings -> encoder -> optional GELU post-projection; the AGG output (index 0) is the pooled output."""

    embeddings_class: type[nn.Module]

    def __init__(self, config: VattAudioConfig | VattTextConfig):
        super().__init__(config)
        self.embeddings = self.embeddings_class(config)
        self.encoder = VattEncoder(config)
        self.post_projection = (
            nn.Linear(config.hidden_size, config.post_projection_size) if config.post_projection_size else None
        )
        self.post_init()

    def _encode(
        self, inputs: torch.Tensor, mask: torch.Tensor | None, **kwargs: Unpack[TransformersKwargs]
    ) -> VattEncoderOutput:
        embeddings, token_mask = self.embeddings(inputs, mask)
        if token_mask is not None and bool(token_mask.all()):
            token_mask = None
        if token_mask is not None and self.encoder.reads_strided_bias:
            # A key mask: the 4-D mask would hold batch * length**2 values, the size the strided bias avoids.
            attention_mask = token_mask[:, None, None, :]
        else:
            attention_mask = create_bidirectional_mask(
                config=self.config, inputs_embeds=embeddings, attention_mask=token_mask
            )
        hidden_states = self.encoder(embeddings, attention_mask, **kwargs).last_hidden_state
        if self.post_projection is not None:
            hidden_states = F.gelu(self.post_projection(hidden_states))
        return VattEncoderOutput(
            last_hidden_state=hidden_states, pooler_output=hidden_states[:, 0], attention_mask=token_mask
        )


class VattAudioModel(VattTowerModel):
    """
    The VATT waveform transformer (WaT). Inputs are 48 kHz mono waveforms `(batch, samples)`; an optional
    sample-level `audio_attention_mask` marks real samples in a padded batch. Inputs longer than the position table
    are encoded window by window (see [`VattAudioConfig`]).
    """

    config: VattAudioConfig
    main_input_name = "input_values"
    input_modalities = ("audio",)
    base_model_prefix = "audio_model"
    embeddings_class = VattAudioEmbeddings

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embedding

    def _patch_mask(
        self, input_values: torch.Tensor, audio_attention_mask: torch.Tensor | None
    ) -> torch.Tensor | None:
        """Validate the waveform and turn the sample mask into a patch mask (a patch is real if any sample is)."""
        if input_values.dim() != 2:
            raise ValueError(
                f"`input_values` must have shape (batch, samples), got {tuple(input_values.shape)}; "
                "mix channels down and batch with `VattFeatureExtractor`."
            )
        if not input_values.is_floating_point():
            raise ValueError(f"`input_values` must be a float tensor, got {input_values.dtype}.")
        patch_size = self.config.patch_size
        if input_values.shape[1] < patch_size:
            raise ValueError(
                f"Audio must hold at least one patch of {patch_size} samples, got {input_values.shape[1]}."
            )
        _check_finite(input_values, "input_values")
        if audio_attention_mask is None:
            return None
        if audio_attention_mask.shape != input_values.shape:
            raise ValueError(
                f"`audio_attention_mask` {tuple(audio_attention_mask.shape)} must match `input_values` "
                f"{tuple(input_values.shape)}."
            )
        num_patches = input_values.shape[1] // patch_size
        patch_mask = audio_attention_mask[:, : num_patches * patch_size].reshape(-1, num_patches, patch_size).bool()
        patch_mask = patch_mask.any(-1)
        if not patch_mask.any(-1).all():
            raise ValueError("Every audio item needs at least one patch of real samples; got an empty item.")
        return None if patch_mask.all() else patch_mask

    def _encode_windows(
        self, input_values: torch.Tensor, patch_mask: torch.Tensor | None, return_window_features: bool
    ) -> VattEncoderOutput:
        """Encode a long input window by window, `windows_per_batch` windows at a time (memory bounded by that)."""
        config = self.config
        batch_size = input_values.shape[0]
        num_patches = input_values.shape[1] // config.patch_size
        window, hop = config.window_patches, config.window_patches - config.window_overlap
        spans = window_layout(num_patches, window, config.window_overlap)
        num_windows = spans.shape[0]
        num_full = (num_patches - window) // hop + 1
        patches = input_values[:, : num_patches * config.patch_size].view(batch_size, num_patches, -1)
        full_windows = patches.unfold(1, window, hop).transpose(2, 3)  # zero-copy (batch, windows, window, patch)
        tail_start = int(spans[-1, 0])
        tail_windows = F.pad(patches[:, tail_start:], (0, 0, 0, tail_start + window - num_patches))

        real = patch_mask if patch_mask is not None else patches.new_ones(batch_size, num_patches, dtype=torch.bool)
        window_real = F.pad(real, (0, tail_start + window - num_patches), value=False).unfold(1, window, hop)
        window_real = window_real & owned_windows(real.sum(1), num_windows, window, config.window_overlap)[..., None]
        window_weight = window_real.sum(-1).to(input_values.dtype) / window  # (batch, windows)

        pooled = input_values.new_zeros(batch_size * num_windows, config.output_size)
        states = None
        if return_window_features:
            states = input_values.new_zeros(batch_size * num_windows, window, config.output_size)
        flat_real = window_real.reshape(batch_size * num_windows, window)
        for chunk in window_weight.flatten().nonzero().squeeze(-1).split(config.windows_per_batch):
            item, index = chunk // num_windows, chunk % num_windows
            in_tail = index >= num_full
            waveform = input_values.new_empty(len(chunk), window, patches.shape[-1])
            waveform[~in_tail] = full_windows[item[~in_tail], index[~in_tail]]
            waveform[in_tail] = tail_windows[item[in_tail]]
            chunk_real = flat_real[chunk]
            output = self._encode(waveform.flatten(1), None if chunk_real.all() else chunk_real)
            pooled[chunk] = output.pooler_output
            if states is not None:
                states[chunk] = output.last_hidden_state[:, 1:]
        window_pooled = pooled.view(batch_size, num_windows, -1)
        recording = pool_windows(window_pooled, window_weight)
        last_hidden_state = None
        if states is not None:
            stitched = stitch_windows(states, flat_real, spans, num_patches, batch_size)
            last_hidden_state = torch.cat([recording.unsqueeze(1), stitched], dim=1)
        return VattEncoderOutput(
            last_hidden_state=last_hidden_state,
            pooler_output=recording,
            attention_mask=None if patch_mask is None else F.pad(patch_mask, (1, 0), value=True),
            window_pooler_output=window_pooled,
            window_spans=spans * config.patch_size,
            window_mask=window_weight,
        )

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        input_values: torch.Tensor,
        audio_attention_mask: torch.Tensor | None = None,
        return_window_features: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> VattEncoderOutput:
        r"""
        input_values (`torch.FloatTensor` of shape `(batch_size, num_samples)`):
            Raw 48 kHz waveforms, as returned by [`VattFeatureExtractor`].
        audio_attention_mask (`torch.Tensor` of shape `(batch_size, num_samples)`, *optional*):
            1 for real samples, 0 for padding.
        return_window_features (`bool`, *optional*, defaults to `False`):
            For windowed (long) inputs, also return the stitched per-patch features in `last_hidden_state`.
        """
        patch_mask = self._patch_mask(input_values, audio_attention_mask)
        num_patches = input_values.shape[1] // self.config.patch_size
        if num_patches > self.config.window_patches and self.config.long_input_mode == "window":
            check_windowed_outputs(self.config, kwargs)
            return self._encode_windows(input_values, patch_mask, return_window_features)
        return self._encode(input_values, patch_mask, **kwargs)


class VattTextModel(VattTowerModel):
    """
    The VATT text tower: the original T5-style encoder (`position_embedding_type="relative"`) or the text path of the
    modality-agnostic model (`"absolute"`). Id 0 is padding; `attention_mask` defaults to `input_ids != 0`.
    """

    config: VattTextConfig
    main_input_name = "input_ids"
    input_modalities = ("text",)
    base_model_prefix = "text_model"
    embeddings_class = VattTextEmbeddings

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    @property
    def window_tokens(self) -> int | None:
        """Tokens per window for long transcripts, or None when the whole transcript is encoded at once."""
        config = self.config
        if config.window_length is not None:
            return config.window_length
        if config.position_embedding_type == "absolute" and config.position_interpolation == "none":
            return config.max_position_embeddings
        return None

    def _validate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if input_ids.dim() != 2:
            raise ValueError(f"`input_ids` must have shape (batch, length), got {tuple(input_ids.shape)}.")
        if input_ids.is_floating_point() or input_ids.is_complex():
            raise ValueError(f"`input_ids` must be integer token ids, got {input_ids.dtype}.")
        if input_ids.numel():
            lowest, highest = (int(value) for value in torch.aminmax(input_ids))
            if lowest < 0 or highest >= self.config.vocab_size:
                raise ValueError(
                    f"Token ids must lie in [0, {self.config.vocab_size}); got ids in [{lowest}, {highest}]. "
                    "Is the tokenizer the model's own?"
                )
        if attention_mask is None:
            return input_ids != self.config.pad_token_id
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"`attention_mask` {tuple(attention_mask.shape)} must match `input_ids` {tuple(input_ids.shape)}."
            )
        return attention_mask.bool()

    def _encode_windows(self, input_ids: torch.Tensor, mask: torch.Tensor, window: int) -> VattEncoderOutput:
        """Encode a long transcript in windows of `window` tokens, `windows_per_batch` windows at a time."""
        batch_size, length = input_ids.shape
        spans = window_layout(length, window, self.config.window_overlap)
        hop, pad = window - self.config.window_overlap, int(spans[-1, 0]) + window - length
        window_ids = F.pad(input_ids, (0, pad)).unfold(1, window, hop).reshape(-1, window)
        window_real = F.pad(mask, (0, pad), value=False).unfold(1, window, hop)
        owned = owned_windows(mask.sum(1), spans.shape[0], window, self.config.window_overlap)
        window_real = (window_real & owned[..., None]).reshape(-1, window)
        window_weight = window_real.sum(-1).to(self.encoder.final_layer_norm.weight.dtype) / window
        pooled = window_weight.new_zeros(window_ids.shape[0], self.config.output_size)
        for chunk in window_weight.nonzero().squeeze(-1).split(self.config.windows_per_batch):
            pooled[chunk] = self._encode(window_ids[chunk], window_real[chunk]).pooler_output
        window_pooled = pooled.view(batch_size, spans.shape[0], -1)
        window_weight = window_weight.view(batch_size, -1)
        return VattEncoderOutput(
            pooler_output=pool_windows(window_pooled, window_weight),
            window_pooler_output=window_pooled,
            window_spans=spans,
            window_mask=window_weight,
        )

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> VattEncoderOutput:
        r"""
        input_ids (`torch.LongTensor` of shape `(batch_size, length)`):
            Word ids from [`VattTokenizer`]; 0 is padding.
        attention_mask (`torch.Tensor` of shape `(batch_size, length)`, *optional*):
            1 for real tokens; defaults to `input_ids != 0`.
        """
        mask = self._validate(input_ids, attention_mask)
        window = self.window_tokens
        if window is not None and input_ids.shape[1] > window:
            check_windowed_outputs(self.config, kwargs)
            return self._encode_windows(input_ids, mask, window)
        return self._encode(input_ids, mask, **kwargs)


# ----------------------------------------------------------------------------------------------------------------------
# Contrastive model
# ----------------------------------------------------------------------------------------------------------------------


class VattBridgeBlock(nn.Module):
    """The original `va_to_vat` block: ReLU -> bias-free Linear -> BatchNorm."""

    def __init__(self, in_features: int, out_features: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(in_features, out_features, bias=False)
        self.batch_norm = nn.BatchNorm1d(out_features, eps=eps, momentum=0.1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.batch_norm(self.dense(F.relu(hidden_states)))


class VattAudioBridgeProjection(nn.Module):
    """
    The original audio path into the text space: audio -> audio-video space (`audio_to_va`, the original `aud_to_va`)
    -> `va_to_vat` into the video-audio-text space shared with text.
    """

    def __init__(self, config: VattConfig):
        super().__init__()
        self.audio_to_va = nn.Linear(config.audio_config.output_size, config.audio_video_projection_dim)
        self.va_to_vat = VattBridgeBlock(
            config.audio_video_projection_dim, config.projection_dim, config.batch_norm_eps
        )

    def forward(self, audio_features: torch.Tensor) -> torch.Tensor:
        return self.va_to_vat(self.audio_to_va(audio_features))


def _gather_with_grad(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All-gather along the batch with gradients flowing back to every process; returns the tensor and this rank."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return tensor, 0
    if torch.distributed.get_world_size() == 1:
        return tensor, 0
    import torch.distributed.nn.functional as dist_fn

    return torch.cat(dist_fn.all_gather(tensor), dim=0), torch.distributed.get_rank()


def vatt_contrastive_loss(
    audio_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    loss_type: str = "nce",
    text_candidate_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """
    Audio-text contrastive loss over the global batch (negatives gathered from all processes, with gradients).

    `text_embeds` holds `K` candidate texts per clip (rows `i*K ... i*K+K-1` belong to clip `i`); `K > 1` gives
    MIL-NCE (the positive score is the log-sum-exp over a clip's valid candidates). `"nce"` is VATT's NCE: one softmax
    per clip over its similarities to every text and every audio's similarities to its texts. `"symmetric"` averages
    an audio->text and a text->audio softmax (CLIP). `text_candidate_mask` `(batch, K)` marks empty candidates.
    """
    num_audio = audio_embeds.shape[0]
    if num_audio == 0 or text_embeds.shape[0] % num_audio:
        raise ValueError(
            f"The loss needs the same number of texts for every clip: got {num_audio} clips and "
            f"{text_embeds.shape[0]} texts."
        )
    num_candidates = text_embeds.shape[0] // num_audio
    if text_candidate_mask is None:
        text_candidate_mask = torch.ones(num_audio, num_candidates, dtype=torch.bool, device=audio_embeds.device)
    elif text_candidate_mask.shape != (num_audio, num_candidates):
        raise ValueError(f"`text_candidate_mask` must have shape {(num_audio, num_candidates)}.")
    text_candidate_mask = text_candidate_mask.bool()
    if not text_candidate_mask.any(-1).all():
        raise ValueError("Every clip needs at least one valid text candidate.")

    audio = F.normalize(audio_embeds.float(), dim=-1)
    text = F.normalize(text_embeds.float(), dim=-1)
    all_audio, rank = _gather_with_grad(audio)
    all_text, _ = _gather_with_grad(text)
    all_valid, _ = _gather_with_grad(text_candidate_mask.float())
    all_valid = all_valid.bool().flatten()
    scale = logit_scale.float().clamp(max=math.log(100.0)).exp()
    neg_inf = torch.finfo(audio.dtype).min

    audio_to_text = (scale * audio @ all_text.T).masked_fill(~all_valid, neg_inf)  # (local, global * K)
    text_to_audio = scale * text @ all_audio.T  # (local * K, global)
    own = rank * num_audio + torch.arange(num_audio, device=audio.device)
    candidate_columns = own[:, None] * num_candidates + torch.arange(num_candidates, device=audio.device)
    positives = audio_to_text.gather(1, candidate_columns)  # (local, K), invalid ones are -inf
    positive_score = positives.logsumexp(-1)
    text_to_own_audio = text_to_audio.view(num_audio, num_candidates, -1)
    text_to_own_audio = text_to_own_audio.masked_fill(~text_candidate_mask.unsqueeze(-1), neg_inf)
    if loss_type == "nce":
        both_directions = torch.cat([audio_to_text, text_to_own_audio.flatten(1)], dim=1)
        return (both_directions.logsumexp(-1) - positive_score).mean()
    audio_loss = audio_to_text.logsumexp(-1) - positive_score
    text_scores = text_to_audio.view(num_audio, num_candidates, -1)
    text_loss = text_scores.logsumexp(-1) - text_scores.gather(
        2, own.view(-1, 1, 1).expand(-1, num_candidates, 1)
    ).squeeze(-1)
    text_loss = (text_loss * text_candidate_mask).sum() / text_candidate_mask.sum()
    return (audio_loss.mean() + text_loss) / 2


class VattForContrastivePretraining(VattPreTrainedModel):
    """
    VATT audio and text towers with projections into one audio-text space, cosine logits and the contrastive loss.
    `AutoModel` on a [`VattConfig`] returns this class.
    """

    config: VattConfig
    main_input_name = "input_ids"

    def __init__(self, config: VattConfig):
        super().__init__(config)
        self.audio_model = VattAudioModel._from_config(config.audio_config)
        self.text_model = VattTextModel._from_config(config.text_config)
        if config.modality_agnostic:
            # One encoder shared by both modalities; saved once, under `audio_model.encoder`.
            self.text_model.encoder = self.audio_model.encoder
            self._tied_weights_keys = {r"text_model\.encoder\.": "audio_model.encoder."}
        if config.projection_type == "bridge":
            self.audio_projection = VattAudioBridgeProjection(config)
        else:
            self.audio_projection = nn.Linear(config.audio_config.output_size, config.projection_dim)
        self.text_projection = nn.Linear(config.text_config.output_size, config.projection_dim)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        self.post_init()
        self.apply_parameter_freezing()

    def get_expanded_tied_weights_keys(self, all_submodels: bool = False) -> dict:
        if all_submodels or not self.config.modality_agnostic:
            return super().get_expanded_tied_weights_keys(all_submodels=all_submodels)
        names = [name for name, _ in self.audio_model.encoder.named_parameters(remove_duplicate=False)]
        return {f"text_model.encoder.{name}": f"audio_model.encoder.{name}" for name in names}

    def get_input_embeddings(self) -> nn.Module:
        return self.text_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.text_model.set_input_embeddings(value)

    def _project(self, projection: nn.Module, output: VattEncoderOutput) -> VattEncoderOutput:
        """Replace the tower's pooled (and per-window) outputs by their projections."""
        projected = projection(output.pooler_output)
        windows = output.window_pooler_output
        if windows is not None:
            windows = projection(windows.flatten(0, 1)).view(*windows.shape[:2], -1)
        return VattEncoderOutput(
            last_hidden_state=output.last_hidden_state,
            pooler_output=projected,
            hidden_states=output.hidden_states,
            attentions=output.attentions,
            attention_mask=output.attention_mask,
            window_pooler_output=windows,
            window_spans=output.window_spans,
            window_mask=output.window_mask,
        )

    @can_return_tuple
    def get_audio_features(
        self,
        input_values: torch.Tensor,
        audio_attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> VattEncoderOutput:
        """Audio tower output whose `pooler_output` (and `window_pooler_output`) are projected, not normalised."""
        output = self.audio_model(input_values=input_values, audio_attention_mask=audio_attention_mask, **kwargs)
        return self._project(self.audio_projection, output)

    @can_return_tuple
    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> VattEncoderOutput:
        """Text tower output whose `pooler_output` (and `window_pooler_output`) are projected, not normalised."""
        output = self.text_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return self._project(self.text_projection, output)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        input_values: torch.Tensor | None = None,
        audio_attention_mask: torch.Tensor | None = None,
        text_candidate_mask: torch.Tensor | None = None,
        return_loss: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> VattContrastiveOutput:
        r"""
        input_ids, attention_mask: text inputs of [`VattTextModel`]. For the loss, clip `i` owns texts
            `i*K ... i*K+K-1` (`K` texts per clip; `K > 1` gives MIL-NCE).
        input_values, audio_attention_mask: audio inputs of [`VattAudioModel`].
        text_candidate_mask (`torch.BoolTensor` of shape `(batch_size, K)`, *optional*): marks empty text candidates.
        return_loss (`bool`, *optional*): compute the contrastive loss.
        """
        if input_ids is None or input_values is None:
            raise ValueError("VattForContrastivePretraining needs both `input_values` (audio) and `input_ids` (text).")
        audio_output = self.get_audio_features(input_values, audio_attention_mask, **kwargs)
        text_output = self.get_text_features(input_ids, attention_mask, **kwargs)
        audio_embeds, text_embeds = audio_output.pooler_output, text_output.pooler_output
        scale = self.logit_scale.float().clamp(max=math.log(100.0)).exp()
        logits_per_audio = (
            scale * F.normalize(audio_embeds.float(), dim=-1) @ F.normalize(text_embeds.float(), dim=-1).T
        )
        loss = None
        if return_loss:
            loss = vatt_contrastive_loss(
                audio_embeds, text_embeds, self.logit_scale, self.config.loss_type, text_candidate_mask
            )
        return VattContrastiveOutput(
            loss=loss,
            logits_per_audio=logits_per_audio,
            logits_per_text=logits_per_audio.T,
            audio_embeds=audio_embeds,
            text_embeds=text_embeds,
            audio_model_output=audio_output,
            text_model_output=text_output,
        )


# ----------------------------------------------------------------------------------------------------------------------
# Audio classification
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class VattAudioClassifierOutput(ModelOutput):
    r"""
    Output of [`VattForAudioClassification`] (a `SequenceClassifierOutput` with the per-window logits).

    loss (`torch.FloatTensor` of shape `(1,)`, *optional*, returned when `labels` is provided):
        Cross-entropy (single-label), binary cross-entropy (multi-label) or mean squared error (regression).
    logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
        Recording-level scores before softmax/sigmoid; for windowed inputs the aggregated per-window logits.
    window_logits (`torch.FloatTensor` of shape `(batch_size, num_windows, num_labels)`, *optional*):
        Per-window logits (windowed inputs only).
    window_mask (`torch.FloatTensor` of shape `(batch_size, num_windows)`, *optional*):
        Share of real content in each window (windowed inputs only).
    hidden_states, attentions: as in [`VattAudioModel`] (inputs encoded at once only).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    window_logits: torch.FloatTensor | None = None
    window_mask: torch.FloatTensor | None = None


class VattForAudioClassification(VattPreTrainedModel):
    """
    The WaT audio tower with a classification head on its pooled (AGG) output. Long recordings are classified
    window by window and the window logits aggregated (`config.window_logits_aggregation`). Loads the audio tower of
    a [`VattForContrastivePretraining`] or [`VattAudioModel`] checkpoint; `config.classifier_head="original"` gives
    the head of the converted fine-tuned WaT checkpoints.
    """

    config: VattAudioConfig
    main_input_name = "input_values"
    input_modalities = ("audio",)
    base_model_prefix = "audio_model"

    def __init__(self, config: VattAudioConfig):
        super().__init__(config)
        if config.classifier_head == "original":
            if config.num_labels < 2:
                raise ValueError("The original classifier head needs `num_labels >= 2` (its bias is -log(n - 1)).")
            if config.problem_type is None:
                config.problem_type = "multi_label_classification"
        self.audio_model = VattAudioModel._from_config(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.output_size, config.num_labels)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if module is self.classifier and self.config.classifier_head == "original":
            init.constant_(module.bias, -math.log(self.config.num_labels - 1))

    def freeze_audio_model(self) -> None:
        """Freeze the audio tower so that only the classifier trains (linear probing)."""
        self.audio_model.requires_grad_(False)

    def classify_windows(self, window_features: torch.Tensor, window_mask: torch.Tensor) -> torch.Tensor:
        """
        Classify pooled features `(batch, windows, hidden)` and aggregate their logits over the windows whose
        real-content share `window_mask` `(batch, windows)` is positive; returns `(batch, num_labels)`.
        """
        return self.aggregate_window_logits(self.classifier(self.dropout(window_features)), window_mask)

    def aggregate_window_logits(self, window_logits: torch.Tensor, window_mask: torch.Tensor) -> torch.Tensor:
        """Weighted mean (by real-content share) or per-class max of `(batch, windows, num_labels)` logits."""
        if self.config.window_logits_aggregation == "mean":
            return pool_windows(window_logits, window_mask)
        real = (window_mask > 0).unsqueeze(-1)
        return window_logits.masked_fill(~real, torch.finfo(window_logits.dtype).min).amax(1)

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss for `config.problem_type` (inferred from `labels` as in transformers when unset)."""
        num_labels = self.config.num_labels
        problem_type = self.config.problem_type
        if problem_type is None:
            if num_labels == 1:
                problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int) and labels.dim() == 1:
                problem_type = "single_label_classification"
            else:
                problem_type = "multi_label_classification"
        if problem_type == "regression":
            return F.mse_loss(logits.squeeze(-1).float(), labels.float().view(-1))
        if problem_type == "single_label_classification":
            if labels.is_floating_point() or labels.shape != logits.shape[:1]:
                raise ValueError(
                    f"Single-label classification needs integer labels of shape ({logits.shape[0]},), got "
                    f"{labels.dtype} {tuple(labels.shape)}."
                )
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_labels):
                raise ValueError(f"Labels must lie in [0, {num_labels}), got {labels.tolist()}.")
            return F.cross_entropy(logits.float(), labels.long())
        if labels.shape != logits.shape:
            raise ValueError(
                f"Multi-label classification needs 0/1 label rows of shape {tuple(logits.shape)}, got "
                f"{tuple(labels.shape)}."
            )
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())

    @can_return_tuple
    def forward(
        self,
        input_values: torch.Tensor,
        audio_attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> VattAudioClassifierOutput:
        r"""
        input_values, audio_attention_mask: audio inputs of [`VattAudioModel`].
        labels (`torch.Tensor`, *optional*):
            Class indices `(batch_size,)` (single-label), multi-hot rows `(batch_size, num_labels)` (multi-label) or
            targets `(batch_size,)` (regression, `num_labels=1`).
        """
        output = self.audio_model(input_values=input_values, audio_attention_mask=audio_attention_mask, **kwargs)
        window_logits = None
        if output.window_pooler_output is None:
            logits = self.classifier(self.dropout(output.pooler_output))
        else:
            window_logits = self.classifier(self.dropout(output.window_pooler_output))
            logits = self.aggregate_window_logits(window_logits, output.window_mask)
        loss = None if labels is None else self.classification_loss(logits, labels)
        return VattAudioClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=output.hidden_states,
            attentions=output.attentions,
            window_logits=window_logits,
            window_mask=output.window_mask,
        )


__all__ = [
    "VattPreTrainedModel",
    "VattAudioModel",
    "VattTextModel",
    "VattForContrastivePretraining",
    "VattForAudioClassification",
    "vatt_contrastive_loss",
]
