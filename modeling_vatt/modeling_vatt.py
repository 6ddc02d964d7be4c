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
from torch.nn.attention.flex_attention import create_block_mask, flex_attention
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface, PreTrainedModel
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, can_return_tuple
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_vatt import VattAudioConfig, VattConfig, VattTextConfig

# Data-dependent input checks run only where `reads_for_free`; the feature extractor, tokenizer and processor validate
# inputs everywhere.
from .windowing_vatt import WindowLayout, encode_in_windows, pool_windows, reads_for_free

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
        The AGG token output; for windowed inputs the mean of the windows' AGG outputs weighted by `window_weights`.
    attention_mask (`torch.BoolTensor` of shape `(batch_size, 1 + sequence_length)`):
        Which positions of `last_hidden_state` are real (not padding); all `True` for an unpadded batch.
    window_pooler_output (`torch.FloatTensor` of shape `(batch_size, num_windows, hidden_size)`, *optional*):
        Per-window AGG outputs (windowed inputs only).
    window_spans (`torch.LongTensor` of shape `(num_windows, 2)`, *optional*):
        Start and end (exclusive) of each window, in samples (audio) or tokens (text).
    window_weights (`torch.FloatTensor` of shape `(batch_size, num_windows)`, *optional*):
        Share of each window that holds real content (0 for windows that lie entirely in padding).
    """

    attention_mask: torch.Tensor | None = None
    window_pooler_output: torch.FloatTensor | None = None
    window_spans: torch.LongTensor | None = None
    window_weights: torch.FloatTensor | None = None


@dataclass
class VattContrastiveOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `(1,)`, *optional*, returned when `return_loss=True`):
        Contrastive loss of this batch (NCE, or MIL-NCE when several texts belong to each clip).
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
def polyharmonic_spline_coefficients(num_rows: int) -> np.ndarray:
    """
    `(num_rows + 2, num_rows)` float64 map from a `num_rows`-row table to the weights of the original VATT's
    resampling spline (order 3 with an affine term, knots `i / num_rows`), solved in float64 instead of the original's
    ill-conditioned float32. Evaluate it with [`spline_basis`].
    """
    knots = np.arange(num_rows, dtype=np.float64) / num_rows
    affine = np.stack([knots, np.ones_like(knots)], axis=1)
    system = np.zeros((num_rows + 2, num_rows + 2))
    system[:num_rows, :num_rows] = np.maximum((knots[:, None] - knots[None, :]) ** 2, 1e-10) ** 1.5
    system[:num_rows, num_rows:] = affine
    system[num_rows:, :num_rows] = affine.T
    # Weights [w; v] = system^-1 [table; 0], so only the first num_rows columns of the inverse matter.
    return np.linalg.solve(system, np.eye(num_rows + 2)[:, :num_rows])


def spline_basis(queries: torch.Tensor, num_rows: int) -> torch.Tensor:
    """`(..., num_rows + 2)` spline basis (kernel to every knot, then the affine terms) at float64 `queries`."""
    knots = torch.arange(num_rows, dtype=torch.float64, device=queries.device) / num_rows
    kernel = ((queries.unsqueeze(-1) - knots) ** 2).clamp(min=1e-10) ** 1.5
    return torch.cat([kernel, queries.unsqueeze(-1), torch.ones_like(queries).unsqueeze(-1)], dim=-1)


def resampling_matrix(num_rows: int, length: int, targets: torch.Tensor, mode: str) -> torch.Tensor:
    """
    `(batch, length, num_rows)` float64 matrices that resample a `num_rows`-row table to each item's `targets` rows
    over the fractional grid `j / target` (`"spline"` or `"linear"`); rows at or past an item's target are 0.
    """
    steps = torch.arange(length, dtype=torch.float64, device=targets.device)
    targets = targets.to(torch.float64).clamp(min=1).unsqueeze(-1)
    if mode == "spline":
        coefficients = torch.from_numpy(polyharmonic_spline_coefficients(num_rows)).to(targets.device)
        matrix = spline_basis(steps / targets, num_rows) @ coefficients
    else:
        coordinates = (steps * num_rows / targets).clamp(max=num_rows - 1)
        lower = coordinates.floor().long()
        fraction = (coordinates - lower).unsqueeze(-1)
        upper = (lower + 1).clamp(max=num_rows - 1)
        matrix = F.one_hot(lower, num_rows) * (1 - fraction) + F.one_hot(upper, num_rows) * fraction
    return matrix * (steps < targets).unsqueeze(-1)


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
    count: to each item's unpadded length (`valid_lengths`) or, with `position_interpolation_length="padded"` (or
    without padding), to the padded `length` as the original code did; at the table's own length that is the table.
    """
    num_rows = table.num_embeddings
    mode = config.position_interpolation
    if mode == "none":
        if length > num_rows:
            raise ValueError(
                f"{length} positions exceed the {num_rows}-row position table; use windowed encoding or a "
                "`position_interpolation` of 'spline' or 'linear'."
            )
        return layernorm(table.weight[:length]).unsqueeze(0)
    if valid_lengths is None or config.position_interpolation_length == "padded":
        if length == num_rows:
            return layernorm(table.weight).unsqueeze(0)
        valid_lengths = torch.full((1,), length, device=table.weight.device)
    matrix = resampling_matrix(num_rows, length, valid_lengths, mode)
    return layernorm((matrix @ table.weight.double()).to(table.weight.dtype))


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


def prepend_agg_token(
    embeddings: torch.Tensor, agg_token: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Put the AGG token in front of every item; it is always real."""
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
        return prepend_agg_token(embeddings, self.agg_token, patch_mask)


class VattTextEmbeddings(nn.Module):
    """
    Text path of the modality-agnostic model: word table lookup (frozen unless `trainable_word_embeddings`), GELU
    pre-projection, LayerNorm'ed learned positions, then the AGG token in model space.
    """

    def __init__(self, config: VattTextConfig):
        super().__init__()
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, config.embedding_size)
        self.word_embeddings.weight.requires_grad_(config.trainable_word_embeddings)
        self.pre_projection = nn.Linear(config.embedding_size, config.hidden_size)
        self.position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.position_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.agg_token = nn.Parameter(torch.zeros(config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embeddings = F.gelu(self.pre_projection(self.word_embeddings(input_ids)))
        positions = learned_position_embeddings(
            self.position_embedding, self.position_layernorm, self.config, input_ids.shape[1], mask.sum(1)
        )
        embeddings = self.dropout(embeddings + positions)
        return prepend_agg_token(embeddings, self.agg_token, mask)


class VattT5TextEmbeddings(nn.Module):
    """
    Text path of the original T5-style tower: word table lookup (frozen unless `trainable_word_embeddings`), the AGG
    token in word-embedding space, then a bias-free GELU pre-projection. Positions enter through the relative bias.
    """

    def __init__(self, config: VattTextConfig):
        super().__init__()
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, config.embedding_size)
        self.word_embeddings.weight.requires_grad_(config.trainable_word_embeddings)
        self.pre_projection = nn.Linear(config.embedding_size, config.hidden_size, bias=False)
        self.agg_token = nn.Parameter(torch.zeros(config.embedding_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        words, mask = prepend_agg_token(self.word_embeddings(input_ids), self.agg_token, mask)
        return self.dropout(F.gelu(self.pre_projection(words))), mask


# ----------------------------------------------------------------------------------------------------------------------
# Relative position bias (original text tower)
# ----------------------------------------------------------------------------------------------------------------------


def relative_position_bucket(offsets: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    """T5 bidirectional bucket of each `key - query` offset: exact below `num_buckets / 4`, log-spaced above."""
    half = num_buckets // 2
    buckets = (offsets > 0).long() * half
    distance = offsets.abs()
    max_exact = half // 2
    log_ratio = torch.log(distance.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact)
    large = (max_exact + (log_ratio * (half - max_exact)).long()).clamp(max=half - 1)
    return buckets + torch.where(distance < max_exact, distance, large)


class VattRelativePositionBias(nn.Module):
    """
    T5's bucketed bidirectional relative position bias: one `(num_buckets, heads)` table shared by every layer.

    `forward(length)` returns the bias of every `key - query` offset, `(heads, 2 * length - 1)` for offsets
    `1 - length ... length - 1`, which is all attention needs (O(length) values). The attention functions lay it out:
    [`dense`] as the `(1, heads, length, length)` bias eager attention adds to its scores, [`reversed_key_view`] as
    the same bias for the keys taken in reverse order, a Hankel matrix (entry `(q, j)` depends on `q + j` only) that
    is a strided view of the offsets and that SDPA reads in place.
    """

    def __init__(self, config: VattTextConfig):
        super().__init__()
        self.num_buckets = config.relative_attention_num_buckets
        self.max_distance = config.relative_attention_max_distance
        self.weight = nn.Parameter(torch.zeros(config.relative_attention_num_buckets, config.num_attention_heads))

    def forward(self, length: int, dtype: torch.dtype) -> torch.Tensor:
        offsets = torch.arange(1 - length, length, device=self.weight.device)
        buckets = relative_position_bucket(offsets, self.num_buckets, self.max_distance)
        # Contiguous per head, so that the layouts below read each head's offsets sequentially.
        return F.embedding(buckets, self.weight).to(dtype).T.contiguous()

    @staticmethod
    def dense(per_offset: torch.Tensor) -> torch.Tensor:
        """`(1, heads, length, length)` bias: row `q` holds offsets `-q ... length - 1 - q` (an unfolded view)."""
        length = (per_offset.shape[1] + 1) // 2
        return per_offset.unfold(1, length, 1).flip(1).unsqueeze(0)

    @staticmethod
    def reversed_key_view(per_offset: torch.Tensor) -> torch.Tensor:
        """`(1, heads, length, length)` bias for keys in reverse order: column `j` is key `length - 1 - j`."""
        length = (per_offset.shape[1] + 1) // 2
        # Entry (q, j) holds offset (length - 1 - j) - q, which is index q + j of the reversed offsets.
        reversed_offsets = per_offset.flip(1).contiguous()
        return reversed_offsets.as_strided(
            (1, per_offset.shape[0], length, length), (0, reversed_offsets.stride(0), 1, 1)
        )


# ----------------------------------------------------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------------------------------------------------


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
    """
    Plain attention math. `attention_mask` is boolean (broadcastable to the scores, `True` = attend) or additive;
    `position_bias` is the per-offset relative bias of [`VattRelativePositionBias`] (keys in their own order).
    """
    scores = torch.matmul(query, key.transpose(-1, -2))
    if scaling != 1.0:
        scores = scores * scaling
    if position_bias is not None:
        scores = scores + VattRelativePositionBias.dense(position_bias)
    return _masked_softmax_attention(module, scores, value, attention_mask, dropout)


class _ReversedKeyBias(torch.autograd.Function):
    """
    [`VattRelativePositionBias.reversed_key_view`] whose backward adds each row of the score gradient to the run of
    offsets the row read (row `q` holds reversed offsets `q ... q + length - 1`): one pass over the gradient, about 5x
    faster on CPU than autograd's `as_strided` backward, which scatters the scores one index at a time.
    """

    @staticmethod
    def forward(ctx, per_offset: torch.Tensor) -> torch.Tensor:
        return VattRelativePositionBias.reversed_key_view(per_offset)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad[0]  # the view has one batch row; autograd has already summed the scores' batch into it
        length = grad.shape[-1]
        reversed_offsets = grad.new_zeros(grad.shape[0], 2 * length - 1)
        for query in range(length):
            reversed_offsets[:, query : query + length] += grad[:, query]
        return reversed_offsets.flip(1)


def _masked_softmax_attention(
    module: nn.Module, scores: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None, dropout: float
) -> tuple[torch.Tensor, torch.Tensor]:
    if attention_mask is not None and attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    elif attention_mask is not None:
        scores = scores + attention_mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def _dense_bias_sdpa(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float,
    position_bias: torch.Tensor,
) -> tuple[torch.Tensor, None]:
    """SDPA with the relative bias laid out dense, padding folded in: a mask the fused CUDA kernels differentiate."""
    bias = VattRelativePositionBias.dense(position_bias.to(query.dtype)).expand(query.shape[0], -1, -1, -1)
    if attention_mask is not None:
        bias = bias.masked_fill(~attention_mask, torch.finfo(query.dtype).min)
    output = F.scaled_dot_product_attention(
        query, key, value, attn_mask=bias.contiguous(), dropout_p=dropout, scale=scaling
    )
    return output.transpose(1, 2).contiguous(), None


def sdpa_relative_bias_attention_forward(
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
    SDPA with the relative bias of [`VattRelativePositionBias`] as its additive mask, in O(length) memory: the keys
    (and values, and the boolean key mask `(batch, 1, 1, length)`) are taken in reverse order, so the bias is the
    strided [`VattRelativePositionBias.reversed_key_view`] of the offsets, read in place.

    A bias that needs a gradient (training) is handled by device. On an accelerator it becomes a dense
    `(batch, heads, length, length)` additive mask, padding folded in, whose gradient SDPA's memory-efficient kernel
    returns (faster on an H200 than FlexAttention, whose bias gradient adds into a few shared entries). On CPU it gets
    plain attention math on the reversed layout: SDPA's fused CPU kernels return no gradient for an additive mask,
    and their fallback adds a fully-masked-row check over every score. Under `torch.compile` it gets eager
    attention's dense layout. Otherwise padding becomes one extra head dimension (queries 1, values 0, keys a huge
    negative number where padded), so one strided bias serves the whole batch on the fused kernel.
    """
    trained_bias = position_bias.requires_grad and torch.is_grad_enabled()
    if trained_bias and query.device.type != "cpu" and not torch.compiler.is_compiling():
        return _dense_bias_sdpa(query, key, value, attention_mask, scaling, dropout, position_bias)
    if trained_bias and torch.compiler.is_compiling():
        # Inductor (torch 2.13, CPU) corrupts the heap training through the strided view; the dense layout compiles.
        return eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout, position_bias)
    key, value = key.flip(2), value.flip(2)
    attention_mask = None if attention_mask is None else attention_mask.flip(-1)
    if trained_bias:
        query = query if scaling == 1.0 else query * scaling  # O(length), not a pass over the scores
        # On CPU the bias gradient adds score rows (one small op per query); accelerators keep the one scatter.
        on_cpu = query.device.type == "cpu"
        bias = (_ReversedKeyBias.apply if on_cpu else VattRelativePositionBias.reversed_key_view)(position_bias)
        scores = torch.matmul(query, key.transpose(-1, -2)) + bias
        output, _ = _masked_softmax_attention(module, scores, value, attention_mask, dropout)
        return output, None
    bias = VattRelativePositionBias.reversed_key_view(position_bias)
    head_dim = value.shape[-1]
    if attention_mask is not None:
        padded = torch.zeros_like(key[..., :1]).masked_fill(
            ~attention_mask.transpose(-1, -2), torch.finfo(key.dtype).min / 4
        )
        query, key, value = F.pad(query, (0, 1), value=1.0), torch.cat([key, padded], -1), F.pad(value, (0, 1))
    output = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, dropout_p=dropout, scale=scaling)
    return output[..., :head_dim].transpose(1, 2).contiguous(), None


@functools.cache
def _compiled_flex_attention() -> Callable:
    """
    FlexAttention compiled (it only runs fused when compiled) for static shapes, once per length: inductor's CPU code
    for dynamic shapes fails to build in torch 2.13. Inside a compiled model the raw op is used.
    """
    return torch.compile(flex_attention, dynamic=False)


def flex_relative_bias_attention_forward(
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
    FlexAttention with a `score_mod` that reads the per-offset relative bias of [`VattRelativePositionBias`] (O(length)
    memory; its gradient comes from the fused backward) and the boolean key mask `(batch, 1, 1, length)` as a block
    mask. FlexAttention has no attention dropout, and in torch 2.13 no backward on CPU.
    """
    if dropout > 0.0:
        raise ValueError(
            "FlexAttention has no attention dropout: set `attention_dropout=0` or use attn_implementation='sdpa'."
        )

    def add_bias(
        score: torch.Tensor, batch: torch.Tensor, head: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor
    ) -> torch.Tensor:
        return score + position_bias[head, kv_idx - q_idx + position_bias.shape[1] // 2]

    block_mask = None
    if attention_mask is not None:
        key_mask = attention_mask[:, 0, 0]

        def real_key(
            batch: torch.Tensor, head: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor
        ) -> torch.Tensor:
            return key_mask[batch, kv_idx]

        block_mask = create_block_mask(
            real_key, key_mask.shape[0], None, query.shape[2], key.shape[2], device=query.device
        )
    attend = flex_attention if torch.compiler.is_compiling() else _compiled_flex_attention()
    output = attend(query, key, value, score_mod=add_bias, block_mask=block_mask, scale=scaling)
    return output.transpose(1, 2).contiguous(), None


# Attention functions that take the relative bias: SDPA gets its own in-place layout; eager is the default.
# `"flex_attention"` selects FlexAttention (no attention dropout; no training on CPU in torch 2.13).
RELATIVE_BIAS_ATTENTION_FUNCTIONS = AttentionInterface()
RELATIVE_BIAS_ATTENTION_FUNCTIONS["sdpa"] = sdpa_relative_bias_attention_forward
RELATIVE_BIAS_ATTENTION_FUNCTIONS["flex_attention"] = flex_relative_bias_attention_forward


class VattAttention(nn.Module):
    """Multi-head self-attention with biased projections and `1 / sqrt(head_dim)` scaling (WaT, modality-agnostic)."""

    projection_bias = True

    def __init__(self, config: VattAudioConfig | VattTextConfig):
        super().__init__()
        self.config = config
        self.head_dim = config.head_dim
        self.scaling = config.head_dim**-0.5
        self.dropout = config.attention_dropout
        self.is_causal = False
        inner_size = config.num_attention_heads * config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, inner_size, bias=self.projection_bias)
        self.k_proj = nn.Linear(config.hidden_size, inner_size, bias=self.projection_bias)
        self.v_proj = nn.Linear(config.hidden_size, inner_size, bias=self.projection_bias)
        self.out_proj = nn.Linear(inner_size, config.hidden_size, bias=self.projection_bias)

    def attend(
        self, attention_interface: Callable, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Project, run `attention_interface` over the heads and project back."""
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            is_causal=False,
            scaling=self.scaling,
            dropout=0.0 if not self.training else self.dropout,
            **kwargs,
        )
        return self.out_proj(attn_output.reshape(*input_shape, -1)), attn_weights

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        return self.attend(attention_interface, hidden_states, attention_mask, **kwargs)


class VattT5Attention(VattAttention):
    """
    Attention of the original T5-style text tower: bias-free projections, no `1 / sqrt(head_dim)` scaling, and the
    shared relative position bias added to the scores.
    """

    projection_bias = False

    def __init__(self, config: VattTextConfig):
        super().__init__(config)
        self.scaling = 1.0

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_bias: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attention_interface = RELATIVE_BIAS_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        return self.attend(attention_interface, hidden_states, attention_mask, position_bias=position_bias, **kwargs)


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


class VattMLP(nn.Module):
    def __init__(self, config: VattAudioConfig | VattTextConfig, bias: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size, bias=bias)
        self.activation_fn = ACT2FN[config.hidden_act]
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.activation_fn(self.fc1(hidden_states))))


class VattEncoderLayer(GradientCheckpointingLayer):
    """Pre-norm transformer layer: LayerNorm -> attention -> residual, LayerNorm -> MLP -> residual."""

    attention_class: type[VattAttention] = VattAttention
    attention_norm_class: type[nn.Module] = nn.LayerNorm
    mlp_bias = True

    def __init__(self, config: VattAudioConfig | VattTextConfig):
        super().__init__()
        self.layer_norm1 = self.attention_norm_class(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = self.attention_class(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = VattMLP(config, bias=self.mlp_bias)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_bias: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        # The shared relative bias (T5-style layers) is positional: reentrant checkpointing only re-enters the graph
        # of positional tensors, so as a keyword every layer would backpropagate through the bias graph again.
        if position_bias is not None:
            kwargs["position_bias"] = position_bias
        attn_output, _ = self.self_attn(self.layer_norm1(hidden_states), attention_mask, **kwargs)
        hidden_states = hidden_states + self.dropout(attn_output)
        return hidden_states + self.dropout(self.mlp(self.layer_norm2(hidden_states)))


class VattT5EncoderLayer(VattEncoderLayer):
    """Layer of the original text tower: RMSNorm before the T5-style attention, LayerNorm before a bias-free MLP."""

    attention_class = VattT5Attention
    attention_norm_class = VattRMSNorm
    mlp_bias = False


class VattEncoder(nn.Module):
    """Stack of [`VattEncoderLayer`] and the final LayerNorm (WaT and the modality-agnostic encoder)."""

    layer_class: type[VattEncoderLayer] = VattEncoderLayer
    final_norm_class: type[nn.Module] = nn.LayerNorm

    def __init__(self, config: VattAudioConfig | VattTextConfig):
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList([self.layer_class(config) for _ in range(config.num_hidden_layers)])
        self.final_layer_norm = self.final_norm_class(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.gradient_checkpointing = False

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_bias: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutput:
        hidden_states = inputs_embeds
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask, position_bias, **kwargs)
        return BaseModelOutput(last_hidden_state=self.dropout(self.final_layer_norm(hidden_states)))


class VattT5Encoder(VattEncoder):
    """The original T5-style text encoder: [`VattT5EncoderLayer`]s sharing one relative position bias, final RMSNorm."""

    layer_class = VattT5EncoderLayer
    final_norm_class = VattRMSNorm

    def __init__(self, config: VattTextConfig):
        super().__init__(config)
        self.relative_attention_bias = VattRelativePositionBias(config)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutput:
        position_bias = self.relative_attention_bias(inputs_embeds.shape[1], inputs_embeds.dtype)
        return super().forward(inputs_embeds, attention_mask, position_bias, **kwargs)


# ----------------------------------------------------------------------------------------------------------------------
# Pre-trained model base
# ----------------------------------------------------------------------------------------------------------------------


class VattPreTrainedModel(PreTrainedModel):
    config: VattConfig
    base_model_prefix = "vatt"
    input_modalities = ("audio", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = [
        "VattAudioEmbeddings",
        "VattTextEmbeddings",
        "VattT5TextEmbeddings",
        "VattEncoderLayer",
        "VattT5EncoderLayer",
    ]
    _supports_sdpa = True
    _supports_attention_backend = False
    _can_record_outputs = {"hidden_states": VattEncoderLayer, "attentions": VattAttention}

    def _init_weights(self, module: nn.Module) -> None:
        """
        The original initialisers: Glorot-uniform kernels, zero biases, truncated-normal tables and tokens; the
        T5-style attention and relative bias take T5's normal initialisers instead.
        """
        super()._init_weights(module)
        if isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, VattT5Attention):
            # Unscaled attention: query-key logits start with unit variance (Glorot kernels would give them a
            # variance of `head_dim`, i.e. near one-hot attention that barely passes gradients).
            hidden_size, inner_size = module.q_proj.in_features, module.q_proj.out_features
            init.normal_(module.q_proj.weight, std=(hidden_size * module.head_dim) ** -0.5)
            init.normal_(module.k_proj.weight, std=hidden_size**-0.5)
            init.normal_(module.v_proj.weight, std=hidden_size**-0.5)
            init.normal_(module.out_proj.weight, std=inner_size**-0.5)
        elif isinstance(module, VattRelativePositionBias):
            init.normal_(module.weight, std=self.config.hidden_size**-0.5)
        elif isinstance(module, (VattAudioEmbeddings, VattTextEmbeddings, VattT5TextEmbeddings)):
            init.trunc_normal_(module.agg_token, std=module.agg_token.shape[0] ** -0.5)
            if hasattr(module, "position_embedding"):
                init.trunc_normal_(module.position_embedding.weight, std=module.position_embedding.embedding_dim**-0.5)
            if hasattr(module, "word_embeddings"):
                init.normal_(module.word_embeddings.weight, std=module.word_embeddings.embedding_dim**-0.5)
        elif isinstance(module, VattRMSNorm):
            init.ones_(module.weight)
        elif isinstance(module, VattForContrastivePretraining):
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)

    def _initialize_weights(self, module: nn.Module, is_custom_code: bool = False) -> None:
        # For custom code, transformers skips modules without parameters of their own, in case `_init_weights` writes
        # tensors in place. Ours only uses `transformers.initialization`, which leaves loaded tensors alone, and sets
        # the T5-style attention's projections from the attention module.
        super()._initialize_weights(module, is_custom_code=False)

    @property
    def _output_capturing_hooks_installed(self) -> bool:
        # Every module whose outputs are recorded lives in the encoder, so "hooked" is a property of the encoder: an
        # encoder shared by two towers (modality-agnostic model) is hooked once, not once per tower.
        encoder = getattr(self, "encoder", None)
        return getattr(self if encoder is None else encoder, "_vatt_output_hooks", False)

    @_output_capturing_hooks_installed.setter
    def _output_capturing_hooks_installed(self, value: bool) -> None:
        encoder = getattr(self, "encoder", None)
        object.__setattr__(self if encoder is None else encoder, "_vatt_output_hooks", value)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        # Loading re-creates parameters with `requires_grad=True`; re-apply the configured freezing.
        loaded = super().from_pretrained(*args, **kwargs)
        (loaded[0] if isinstance(loaded, tuple) else loaded).apply_parameter_freezing()
        return loaded

    def apply_parameter_freezing(self) -> None:
        """Freeze what the config says is frozen: the word table (unless trainable) and a fixed temperature."""
        for module in self.modules():
            if isinstance(module, (VattTextEmbeddings, VattT5TextEmbeddings)):
                module.word_embeddings.weight.requires_grad_(module.config.trainable_word_embeddings)
            elif isinstance(module, VattForContrastivePretraining):
                module.logit_scale.requires_grad_(module.config.learnable_logit_scale)


def _all_real_as_none(mask: torch.Tensor | None) -> torch.Tensor | None:
    """Drop a mask with nothing masked, so SDPA can take its unmasked kernel, when that costs no device sync."""
    if mask is not None and reads_for_free(mask) and bool(mask.all()):
        return None
    return mask


def check_windowed_outputs(config: VattAudioConfig | VattTextConfig, kwargs: dict) -> None:
    """Per-layer outputs are recorded per window batch, so they mean nothing for a windowed input: refuse them."""
    for name in ("output_hidden_states", "output_attentions"):
        if kwargs.get(name, getattr(config, name, False)):
            raise ValueError(
                f"`{name}` is not available for inputs encoded in windows (longer than the window); use "
                "`return_window_features=True` (audio) for per-step features, or shorter inputs."
            )


# ----------------------------------------------------------------------------------------------------------------------
# Towers
# ----------------------------------------------------------------------------------------------------------------------


class VattTowerModel(VattPreTrainedModel):
    """Embeddings -> encoder -> optional GELU post-projection; the AGG output (index 0) is the pooled output."""

    def __init__(self, config: VattAudioConfig | VattTextConfig, embeddings: nn.Module, encoder: VattEncoder):
        super().__init__(config)
        self.embeddings = embeddings
        self.encoder = encoder
        self.post_projection = (
            nn.Linear(config.hidden_size, config.post_projection_size) if config.post_projection_size else None
        )
        self.post_init()

    def _encode(
        self, inputs: torch.Tensor, step_mask: torch.Tensor | None, **kwargs: Unpack[TransformersKwargs]
    ) -> VattEncoderOutput:
        """Encode inputs that fit the tower at once; `step_mask` marks real patches (tokens)."""
        embeddings, token_mask = self.embeddings(inputs, step_mask)
        # A boolean key mask `(batch, 1, 1, length)`: the attention functions broadcast it over queries and heads.
        key_mask = _all_real_as_none(token_mask)
        key_mask = None if key_mask is None else key_mask[:, None, None, :]
        hidden_states = self.encoder(embeddings, key_mask, **kwargs).last_hidden_state
        if self.post_projection is not None:
            hidden_states = F.gelu(self.post_projection(hidden_states))
        if token_mask is None:
            token_mask = torch.ones(hidden_states.shape[:2], dtype=torch.bool, device=hidden_states.device)
        return VattEncoderOutput(
            last_hidden_state=hidden_states, pooler_output=hidden_states[:, 0], attention_mask=token_mask
        )

    def _encode_in_windows(
        self,
        steps: torch.Tensor,
        step_mask: torch.Tensor | None,
        windows_per_batch: int,
        return_window_features: bool,
        step_size: int,
    ) -> VattEncoderOutput:
        """Encode `(batch, length, ...)` steps window by window (see `windowing_vatt`); spans are in `step_size` units."""
        config = self.config

        def encode(windows: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
            output = self._encode(windows.flatten(1) if windows.dim() > 2 else windows, real)
            return output.pooler_output, output.last_hidden_state[:, 1:] if return_window_features else None

        if step_mask is None:
            step_mask = torch.ones(steps.shape[:2], dtype=torch.bool, device=steps.device)
        layout = WindowLayout(steps.shape[1], config.window_length, config.window_overlap)
        encoded = encode_in_windows(
            encode,
            steps,
            step_mask,
            layout,
            config.output_size,
            windows_per_batch,
            self.dtype,
            return_step_features=return_window_features,
        )
        last_hidden_state = None
        if encoded.step_features is not None:
            last_hidden_state = torch.cat([encoded.pooled.unsqueeze(1), encoded.step_features], dim=1)
        return VattEncoderOutput(
            last_hidden_state=last_hidden_state,
            pooler_output=encoded.pooled,
            attention_mask=F.pad(step_mask, (1, 0), value=True),
            window_pooler_output=encoded.window_pooled,
            window_spans=encoded.spans * step_size,
            window_weights=encoded.window_weights,
        )


class VattAudioModel(VattTowerModel):
    """
    The VATT waveform transformer (WaT). Inputs are 48 kHz mono waveforms `(batch, samples)`; an optional
    sample-level `audio_attention_mask` marks real samples in a padded batch. Inputs longer than the window
    (`config.window_length` patches) are encoded window by window.
    """

    config: VattAudioConfig
    main_input_name = "input_values"
    input_modalities = ("audio",)
    base_model_prefix = "audio_model"

    def __init__(self, config: VattAudioConfig):
        super().__init__(config, VattAudioEmbeddings(config), VattEncoder(config))

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embedding

    def _patch_mask(
        self, input_values: torch.Tensor, audio_attention_mask: torch.Tensor | None
    ) -> torch.Tensor | None:
        """Check the waveform's shape and turn the sample mask into a patch mask (a patch is real if any sample is)."""
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
        if reads_for_free(input_values) and not torch.isfinite(input_values.sum()):
            if not torch.isfinite(input_values).all():
                raise ValueError("`input_values` contains NaN or infinite values.")
        if audio_attention_mask is None:
            return None
        if audio_attention_mask.shape != input_values.shape:
            raise ValueError(
                f"`audio_attention_mask` {tuple(audio_attention_mask.shape)} must match `input_values` "
                f"{tuple(input_values.shape)}."
            )
        num_patches = input_values.shape[1] // patch_size
        patch_mask = audio_attention_mask[:, : num_patches * patch_size].reshape(-1, num_patches, patch_size)
        patch_mask = patch_mask.bool().any(-1)
        if reads_for_free(patch_mask) and not bool(patch_mask.any(-1).all()):
            raise ValueError("Every audio item needs at least one patch of real samples; got an empty item.")
        return patch_mask

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        input_values: torch.Tensor,
        audio_attention_mask: torch.Tensor | None = None,
        return_window_features: bool = False,
        windows_per_batch: int = 16,
        **kwargs: Unpack[TransformersKwargs],
    ) -> VattEncoderOutput:
        r"""
        input_values (`torch.FloatTensor` of shape `(batch_size, num_samples)`):
            Raw 48 kHz waveforms, as returned by [`VattFeatureExtractor`].
        audio_attention_mask (`torch.Tensor` of shape `(batch_size, num_samples)`, *optional*):
            1 for real samples, 0 for padding.
        return_window_features (`bool`, *optional*, defaults to `False`):
            For windowed (long) inputs, also return the stitched per-patch features in `last_hidden_state`.
        windows_per_batch (`int`, *optional*, defaults to 16):
            Windows of a long input encoded at once; bounds peak memory and never changes the outputs.
        """
        patch_mask = self._patch_mask(input_values, audio_attention_mask)
        config = self.config
        num_patches = input_values.shape[1] // config.patch_size
        if num_patches > config.window_length and config.long_input_mode == "window":
            check_windowed_outputs(config, kwargs)
            patches = input_values[:, : num_patches * config.patch_size].view(input_values.shape[0], num_patches, -1)
            return self._encode_in_windows(
                patches, patch_mask, windows_per_batch, return_window_features, config.patch_size
            )
        return self._encode(input_values, patch_mask, **kwargs)


class VattTextModel(VattTowerModel):
    """
    The VATT text tower: the original T5-style encoder (`position_embedding_type="relative"`) or the text path of the
    modality-agnostic model (`"absolute"`). Without an `attention_mask`, text is masked as `input_ids !=
    config.pad_token_id` (0, as in the original).
    Transcripts longer than `config.window_length` tokens (when set) are encoded window by window.
    """

    config: VattTextConfig
    main_input_name = "input_ids"
    input_modalities = ("text",)
    base_model_prefix = "text_model"

    def __init__(self, config: VattTextConfig):
        if config.position_embedding_type == "relative":
            super().__init__(config, VattT5TextEmbeddings(config), VattT5Encoder(config))
        else:
            super().__init__(config, VattTextEmbeddings(config), VattEncoder(config))

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def _token_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Check the ids' shape and range (where that is free) and return the boolean token mask."""
        if input_ids.dim() != 2:
            raise ValueError(f"`input_ids` must have shape (batch, length), got {tuple(input_ids.shape)}.")
        if input_ids.is_floating_point() or input_ids.is_complex():
            raise ValueError(f"`input_ids` must be integer token ids, got {input_ids.dtype}.")
        if input_ids.numel() and reads_for_free(input_ids):
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

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        windows_per_batch: int = 16,
        **kwargs: Unpack[TransformersKwargs],
    ) -> VattEncoderOutput:
        r"""
        input_ids (`torch.LongTensor` of shape `(batch_size, length)`):
            Word ids from [`VattTokenizer`].
        attention_mask (`torch.Tensor` of shape `(batch_size, length)`, *optional*):
            1 for real tokens; defaults to `input_ids != config.pad_token_id`.
        windows_per_batch (`int`, *optional*, defaults to 16):
            Windows of a long transcript encoded at once; bounds peak memory and never changes the outputs.
        """
        mask = self._token_mask(input_ids, attention_mask)
        window_length = self.config.window_length
        if window_length is not None and input_ids.shape[1] > window_length:
            check_windowed_outputs(self.config, kwargs)
            return self._encode_in_windows(input_ids, mask, windows_per_batch, False, 1)
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


def gather_with_grad(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All-gather along the batch with gradients flowing back to every process; returns the tensor and this rank."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        raise RuntimeError("Gathering the contrastive loss's negatives needs an initialised torch.distributed group.")
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
    gather: bool = False,
) -> torch.Tensor:
    """
    Audio-text contrastive loss of this process's batch, or with `gather=True` over the global batch: negatives are
    gathered from every process of the initialised `torch.distributed` group, with gradients (every process must call
    it, with the same batch size). [`VattForContrastivePretraining`] computes the local loss; training scripts ask
    for the gathered one explicitly.

    `text_embeds` holds `K` candidate texts per clip (rows `i*K ... i*K+K-1` belong to clip `i`); `K > 1` gives
    MIL-NCE (the positive score is the log-sum-exp over a clip's valid candidates). `"nce"` is VATT's NCE: one softmax
    per clip over its similarities to every text and every audio's similarities to its texts. `"symmetric"` averages
    an audio->text and a text->audio softmax (CLIP). `text_candidate_mask` `(batch, K)` marks empty candidates; every
    clip needs at least one valid candidate.
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
    if reads_for_free(text_candidate_mask) and not bool(text_candidate_mask.any(-1).all()):
        raise ValueError("Every clip needs at least one valid text candidate.")

    audio = F.normalize(audio_embeds.float(), dim=-1)
    text = F.normalize(text_embeds.float(), dim=-1)
    all_audio, all_text, all_valid, rank = audio, text, text_candidate_mask, 0
    if gather:
        all_audio, rank = gather_with_grad(audio)
        all_text, _ = gather_with_grad(text)
        all_valid = gather_with_grad(text_candidate_mask.float())[0].bool()
    all_valid = all_valid.flatten()
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
            # One encoder module shared by both modalities. Saving keeps its tensors once, under `audio_model.encoder`
            # (the names this pattern matches are the aliases dropped); loading fills both names from those.
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
        # The shared encoder is one module, not parameters tied after loading: declaring its text names as tied would
        # make the loader skip a shared tensor missing from the checkpoint (left on the meta device, unreported).
        # Without, a loaded tensor fills both names and a missing one is reported and initialised.
        if self.config.modality_agnostic:
            return {}
        return super().get_expanded_tied_weights_keys(all_submodels=all_submodels)

    def get_input_embeddings(self) -> nn.Module:
        return self.text_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.text_model.set_input_embeddings(value)

    def _project(self, projection: nn.Module, output: VattEncoderOutput) -> VattEncoderOutput:
        """Replace the tower's pooled (and per-window) outputs by their projections."""
        output.pooler_output = projection(output.pooler_output)
        windows = output.window_pooler_output
        if windows is not None:
            output.window_pooler_output = projection(windows.flatten(0, 1)).view(*windows.shape[:2], -1)
        return output

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
        return_loss (`bool`, *optional*): compute the contrastive loss of this batch (never across processes; see
            [`vatt_contrastive_loss`] with `gather=True`).
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
    window_weights (`torch.FloatTensor` of shape `(batch_size, num_windows)`, *optional*):
        Share of each window that holds real content (windowed inputs only).
    hidden_states, attentions: as in [`VattAudioModel`] (inputs encoded at once only).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    window_logits: torch.FloatTensor | None = None
    window_weights: torch.FloatTensor | None = None


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

    def classify_windows(self, window_features: torch.Tensor, window_weights: torch.Tensor) -> torch.Tensor:
        """
        Classify pooled features `(batch, windows, hidden)` and aggregate their logits over the windows whose
        real-content share `window_weights` `(batch, windows)` is positive; returns `(batch, num_labels)`.
        """
        return self.aggregate_window_logits(self.classifier(self.dropout(window_features)), window_weights)

    def aggregate_window_logits(self, window_logits: torch.Tensor, window_weights: torch.Tensor) -> torch.Tensor:
        """Weighted mean (by real-content share) or per-class max of `(batch, windows, num_labels)` logits."""
        if self.config.window_logits_aggregation == "mean":
            return pool_windows(window_logits, window_weights)
        real = (window_weights > 0).unsqueeze(-1)
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
            if (
                labels.numel()
                and reads_for_free(labels)
                and (int(labels.min()) < 0 or int(labels.max()) >= num_labels)
            ):
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
            logits = self.aggregate_window_logits(window_logits, output.window_weights)
        loss = None if labels is None else self.classification_loss(logits, labels)
        return VattAudioClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=output.hidden_states,
            attentions=output.attentions,
            window_logits=window_logits,
            window_weights=output.window_weights,
        )


__all__ = [
    "VattPreTrainedModel",
    "VattAudioModel",
    "VattTextModel",
    "VattForContrastivePretraining",
    "VattForAudioClassification",
    "vatt_contrastive_loss",
]
