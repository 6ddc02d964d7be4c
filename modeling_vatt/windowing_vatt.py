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
Encoding inputs longer than a tower's window: where the windows lie, which of them an item owns, how they are encoded
a bounded number at a time, pooled into one output and stitched back into per-step features.

A *step* is what a tower attends over: a patch of samples (audio) or a token (text). Every window holds
`window_length` steps; consecutive windows share `window_overlap` steps; the last window is zero-padded past the end.
An item's *window weights* are the share of each window that holds its real (unpadded) steps; they weight the pooled
output and are 0 for windows that lie wholly in padding.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

# Encodes `(n, window_length, ...)` windows with their `(n, window_length)` real-step mask into
# (pooled `(n, hidden)`, per-step features `(n, window_length, hidden)` or None).
WindowEncoder = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


def reads_for_free(tensor: torch.Tensor) -> bool:
    """
    Whether a data-dependent read of `tensor` costs nothing: it lives on the CPU and nothing is being compiled. Reads
    that would make an accelerator wait for the host, or break a compiled graph, happen only then.
    """
    return tensor.device.type == "cpu" and not torch.compiler.is_compiling()


@dataclass(frozen=True)
class WindowLayout:
    """Windows of `window_length` steps, `window_overlap` of them shared by neighbours, over `length` steps."""

    length: int
    window_length: int
    window_overlap: int = 0

    def __post_init__(self):
        if not 0 <= self.window_overlap < self.window_length:
            raise ValueError(
                f"`window_overlap` ({self.window_overlap}) must lie in [0, window_length={self.window_length})."
            )

    @property
    def hop(self) -> int:
        return self.window_length - self.window_overlap

    @property
    def num_windows(self) -> int:
        return windows_for_length(self.length, self.window_length, self.window_overlap)

    def spans(self) -> torch.Tensor:
        """`(num_windows, 2)` start and end (exclusive) steps of each window; the last may end early."""
        starts = torch.arange(self.num_windows) * self.hop
        return torch.stack([starts, (starts + self.window_length).clamp(max=self.length)], dim=1)

    def step_indices(self, windows: torch.Tensor) -> torch.Tensor:
        """`(n, window_length)` step index of every position of the given windows (may run past `length`)."""
        return windows.unsqueeze(-1) * self.hop + torch.arange(self.window_length, device=windows.device)

    def gather(self, steps: torch.Tensor, items: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        """
        Windows `windows` of items `items` from `steps` `(batch, length, ...)`, zero past the end: `(n, window_length,
        ...)`. Only the requested windows are copied, never the whole input.
        """
        indices = self.step_indices(windows)
        inside = indices < self.length
        gathered = steps[items.unsqueeze(-1), indices.clamp(max=self.length - 1)]
        inside = inside.view(*inside.shape, *([1] * (gathered.dim() - 2)))
        return torch.where(inside, gathered, torch.zeros((), dtype=gathered.dtype, device=gathered.device))

    def owned(self, real_lengths: torch.Tensor) -> torch.Tensor:
        """
        `(batch, num_windows)` bool: the windows an item of `real_lengths` steps has when encoded alone, so that a
        longer batch-mate never adds a window that only repeats the item's overlap.
        """
        count = 1 + torch.div(
            (real_lengths - self.window_length).clamp(min=0) + self.hop - 1, self.hop, rounding_mode="floor"
        )
        return torch.arange(self.num_windows, device=real_lengths.device) < count.unsqueeze(-1)

    def real_steps(self, step_mask: torch.Tensor) -> torch.Tensor:
        """`(batch, num_windows, window_length)` bool: the real steps each window holds for its item."""
        batch_size = step_mask.shape[0]
        windows = torch.arange(self.num_windows, device=step_mask.device)
        items = torch.arange(batch_size, device=step_mask.device).repeat_interleave(self.num_windows)
        real = self.gather(step_mask, items, windows.repeat(batch_size)).view(batch_size, self.num_windows, -1)
        return real & self.owned(step_mask.sum(1)).unsqueeze(-1)


def windows_for_length(length: int, window_length: int, window_overlap: int = 0) -> int:
    """How many windows cover `length` steps (at least one)."""
    hop = window_length - window_overlap
    return max(1, math.ceil(max(length - window_length, 0) / hop) + 1)


def pool_windows(window_outputs: torch.Tensor, window_weights: torch.Tensor) -> torch.Tensor:
    """Mean of `(batch, windows, ...)` window outputs weighted by their `(batch, windows)` real-content share."""
    weights = window_weights.to(window_outputs.dtype)
    weights = weights.view(*weights.shape, *([1] * (window_outputs.dim() - 2)))
    return (window_outputs * weights).sum(1) / weights.sum(1).clamp(min=1e-6)


def stitch_windows(layout: WindowLayout, window_states: torch.Tensor, window_real: torch.Tensor) -> torch.Tensor:
    """
    Average per-step features `(batch, windows, window_length, hidden)` over the windows that hold each step as real
    content (`window_real`, `(batch, windows, window_length)`) into `(batch, length, hidden)`; steps no window holds
    are 0.
    """
    batch_size, num_windows, _, hidden = window_states.shape
    steps = layout.step_indices(torch.arange(num_windows, device=window_states.device)).clamp(max=layout.length)
    # Index `length` of each item collects the tail padding and is dropped.
    offsets = torch.arange(batch_size, device=steps.device) * (layout.length + 1)
    flat_index = (steps.unsqueeze(0) + offsets.view(-1, 1, 1)).flatten()
    weight = window_real.flatten().to(window_states.dtype)
    total = window_states.new_zeros(batch_size * (layout.length + 1), hidden)
    total.index_add_(0, flat_index, window_states.flatten(0, 2) * weight.unsqueeze(-1))
    counts = window_states.new_zeros(batch_size * (layout.length + 1)).index_add_(0, flat_index, weight)
    stitched = total / counts.clamp(min=1).unsqueeze(-1)
    return stitched.view(batch_size, layout.length + 1, hidden)[:, : layout.length]


@dataclass
class WindowedEncoding:
    """What [`encode_in_windows`] returns; shapes are per batch item."""

    pooled: torch.Tensor  # (batch, hidden): windows' pooled outputs weighted by `window_weights`
    window_pooled: torch.Tensor  # (batch, windows, hidden)
    window_weights: torch.Tensor  # (batch, windows)
    spans: torch.Tensor  # (windows, 2) in steps
    step_features: torch.Tensor | None  # (batch, length, hidden) stitched per-step features, when asked for


def encode_in_windows(
    encode: WindowEncoder,
    steps: torch.Tensor,
    step_mask: torch.Tensor,
    layout: WindowLayout,
    output_size: int,
    windows_per_batch: int,
    dtype: torch.dtype,
    return_step_features: bool = False,
) -> WindowedEncoding:
    """
    Encode `steps` `(batch, length, ...)`, whose real steps `step_mask` `(batch, length)` marks, window by window,
    `windows_per_batch` windows per call of `encode`, into outputs of `output_size` features in `dtype`. Peak memory is
    bounded by that, never by the input length. Windows that lie wholly in padding are skipped when their positions
    can be read for free ([`reads_for_free`]); elsewhere they are encoded and weighted 0, so the forward pass never
    waits on the device.
    """
    batch_size = steps.shape[0]
    window_real = layout.real_steps(step_mask)
    window_weights = window_real.sum(-1).to(torch.float32) / layout.window_length
    flat_real = window_real.flatten(0, 1)
    if reads_for_free(window_weights):
        selected = window_weights.flatten().nonzero().squeeze(-1)
    else:
        selected = torch.arange(batch_size * layout.num_windows, device=steps.device)

    pooled = torch.zeros(batch_size * layout.num_windows, output_size, dtype=dtype, device=steps.device)
    states = None
    if return_step_features:
        states = pooled.new_zeros(batch_size * layout.num_windows, layout.window_length, output_size)
    for chunk in selected.split(windows_per_batch):
        items, windows = chunk // layout.num_windows, chunk % layout.num_windows
        chunk_pooled, chunk_states = encode(layout.gather(steps, items, windows), flat_real[chunk])
        pooled[chunk] = chunk_pooled.to(dtype)
        if states is not None:
            states[chunk] = chunk_states.to(dtype)

    window_pooled = pooled.view(batch_size, layout.num_windows, -1)
    step_features = None
    if states is not None:
        step_features = stitch_windows(
            layout, states.view(batch_size, layout.num_windows, *states.shape[1:]), window_real
        )
    return WindowedEncoding(
        pooled=pool_windows(window_pooled, window_weights),
        window_pooled=window_pooled,
        window_weights=window_weights.to(dtype),
        spans=layout.spans(),
        step_features=step_features,
    )


__all__ = [
    "reads_for_free",
    "WindowLayout",
    "WindowedEncoding",
    "encode_in_windows",
    "pool_windows",
    "stitch_windows",
    "windows_for_length",
]
