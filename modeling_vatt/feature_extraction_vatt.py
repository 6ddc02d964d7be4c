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
"""Feature extractor turning raw waveforms into patch-aligned VATT audio inputs."""

import math
import os
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
import soxr
import torch
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature
from transformers.utils import PaddingStrategy, TensorType, logging

logger = logging.get_logger(__name__)

BLOCK_FRAMES = 1 << 18
"""Frames converted, mixed down and resampled at a time; bounds the temporary memory of one item."""

RESAMPLE_QUALITY = "HQ"
PAD_MODES = ("zeros", "loop")
CROP_MODES = (None, "random", "center")
MAX_RESAMPLING_RATIO = 64
"""Largest accepted ratio between the input and the output sampling rates (either way), e.g. 750 Hz -> 48 kHz."""
_NORMALIZE_EPS = 1e-7
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def resampled_length(num_frames: int, sampling_rate: float, target_sampling_rate: float) -> int:
    """Number of frames soxr produces when resampling `num_frames` frames (same rounding as `soxr.resample`)."""
    if sampling_rate == target_sampling_rate:
        return num_frames
    return int(num_frames / (sampling_rate / target_sampling_rate) + 0.5)


def convert_blocks(
    blocks: Iterable[np.ndarray], sampling_rate: float, target_sampling_rate: float, mono: bool = True
) -> Iterator[np.ndarray]:
    """Mix down and resample consecutive float32 blocks of one recording, streaming.

    Each block is `(frames,)` or `(frames, channels)`. Mixdown is the plain mean of the channels. Resampling uses a
    soxr stream ("HQ"), whose output is identical to a one-shot `soxr.resample` of the whole recording; the total
    number of yielded frames is `resampled_length(total_frames, sampling_rate, target_sampling_rate)`.
    """
    stream = None
    for block in blocks:
        if mono and block.ndim == 2:
            block = block.mean(axis=1, dtype=np.float32)
        if sampling_rate == target_sampling_rate:
            yield block
            continue
        if stream is None:
            num_channels = 1 if block.ndim == 1 else block.shape[1]
            stream = soxr.ResampleStream(
                sampling_rate, target_sampling_rate, num_channels, dtype="float32", quality=RESAMPLE_QUALITY
            )
        yield stream.resample_chunk(np.ascontiguousarray(block))
    if stream is not None:
        yield stream.resample_chunk(np.zeros((0,) + block.shape[1:], dtype=np.float32), last=True)


def _to_numpy(audio) -> np.ndarray:
    """One clip (or a batch array) as a numeric numpy array, without copying numpy or CPU float32 torch input."""
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu()
        if audio.is_floating_point() and audio.dtype not in (torch.float32, torch.float64):
            audio = audio.float()
        return audio.numpy()
    if isinstance(audio, (str, bytes, dict)) or audio is None:
        raise TypeError(
            f"Audio must be a numpy array, a torch tensor or a list of numbers, got {type(audio).__name__}. "
            "Decode files first, e.g. with `modeling_vatt.audio_utils.load_audio`."
        )
    try:
        return np.asarray(audio)
    except ValueError as error:
        raise ValueError(f"Audio could not be converted to a numeric array: {error}") from None


def _pcm_to_float32(block: np.ndarray) -> np.ndarray:
    """Float samples as float32; integer PCM scaled to [-1, 1) (unsigned PCM is centred first)."""
    if block.dtype.kind == "f":
        return block.astype(np.float32, copy=False)
    full_scale = np.float32(2 ** (8 * block.dtype.itemsize - 1))
    samples = block.astype(np.float32)
    if block.dtype.kind == "u":
        samples -= full_scale
    samples /= full_scale
    return samples


def _time_blocks(audio: np.ndarray, time_axis: int) -> Iterator[np.ndarray]:
    """Views of `audio` along its time axis, as `(frames,)` or `(frames, channels)`."""
    for start in range(0, audio.shape[time_axis], BLOCK_FRAMES):
        if time_axis == 0:
            yield audio[start : start + BLOCK_FRAMES]
        else:
            yield audio[:, start : start + BLOCK_FRAMES].T


class _Clip:
    """A validated input clip; `blocks(...)` streams its mono float32 samples at the target rate."""

    def __init__(self, audio: np.ndarray, index: int):
        if audio.dtype == object or audio.dtype.kind not in "fiu":
            raise TypeError(f"Audio item {index} has dtype {audio.dtype}; expected float or integer PCM samples.")
        if audio.dtype.kind in "iu" and audio.dtype.itemsize > 4:
            raise TypeError(
                f"Audio item {index} has dtype {audio.dtype}, which is not a PCM format; pass float samples or "
                "8/16/32-bit integer PCM."
            )
        if audio.ndim not in (1, 2):
            raise ValueError(
                f"Audio item {index} has {audio.ndim} dimensions; expected (samples,) for mono or "
                "(channels, samples) / (samples, channels) for multi-channel audio."
            )
        if audio.size == 0:
            raise ValueError(f"Audio item {index} is empty.")
        if audio.ndim == 2 and audio.shape[0] == audio.shape[1]:
            raise ValueError(
                f"Audio item {index} has shape {audio.shape}: cannot tell the channel axis from the time axis."
            )
        self.audio = audio
        self.index = index
        self.time_axis = 0 if audio.ndim == 1 else int(np.argmax(audio.shape))
        if audio.dtype.kind == "f":
            for block in _time_blocks(audio, self.time_axis):
                if not np.isfinite(block).all():
                    raise ValueError(f"Audio item {index} contains NaN or infinite samples.")
                if audio.dtype.itemsize > 4 and np.abs(block).max() > _FLOAT32_MAX:
                    raise ValueError(
                        f"Audio item {index} has samples beyond the float32 range (|x| > {_FLOAT32_MAX:.3g}); "
                        "scale it to [-1, 1]."
                    )

    @property
    def num_frames(self) -> int:
        return self.audio.shape[self.time_axis]

    def blocks(self, sampling_rate: float, target_sampling_rate: float) -> Iterator[np.ndarray]:
        float_blocks = (_pcm_to_float32(block) for block in _time_blocks(self.audio, self.time_axis))
        for block in convert_blocks(float_blocks, sampling_rate, target_sampling_rate, mono=True):
            # Resampling overshoots near the float32 limit (3e38) into inf; the input itself was checked.
            if sampling_rate != target_sampling_rate and not np.isfinite(block).all():
                raise ValueError(
                    f"Audio item {self.index} overflows float32 when resampled to {target_sampling_rate} Hz "
                    f"(samples near the float32 limit {_FLOAT32_MAX:.3g}); scale it to [-1, 1]."
                )
            yield block


def _write_window(row: np.ndarray, blocks: Iterable[np.ndarray], start: int) -> None:
    """Fill `row` with samples `start .. start + len(row)` of the concatenated `blocks`."""
    position = written = 0
    for block in blocks:
        low = max(start - position, 0)
        high = min(len(block), start + len(row) - position)
        if high > low:
            row[written : written + high - low] = block[low:high]
            written += high - low
        position += len(block)
        if written == len(row):
            return


def _normalize_in_place(values: np.ndarray) -> None:
    """Zero mean, unit variance (statistics accumulated blockwise in float64, no full-size temporaries)."""
    mean = sum(float(values[i : i + BLOCK_FRAMES].sum(dtype=np.float64)) for i in range(0, len(values), BLOCK_FRAMES))
    mean /= len(values)
    squares = 0.0
    for i in range(0, len(values), BLOCK_FRAMES):
        centred = values[i : i + BLOCK_FRAMES].astype(np.float64) - mean
        squares += float(centred @ centred)
    values -= np.float32(mean)
    values /= np.float32(math.sqrt(squares / len(values) + _NORMALIZE_EPS))


def _tile_in_place(row: np.ndarray, period: int) -> None:
    """Repeat `row[:period]` over the whole row."""
    filled = period
    while filled < len(row):
        count = min(filled, len(row) - filled)
        row[filled : filled + count] = row[:count]
        filled += count


class VattFeatureExtractor(SequenceFeatureExtractor):
    r"""
    Prepares raw waveforms for the VATT audio tower, reproducing the original preprocessing (48 kHz mono samples fed
    as they are, no normalisation, short clips looped, random/centre crops for training).

    Every clip is converted to mono float32 at `sampling_rate`, then written into one `(batch, samples)` array whose
    length is the longest clip (or `max_length`) rounded up to a multiple of `patch_size`. Each clip is written
    straight into that array, in blocks, so a batch never costs more than one float32 copy of itself (plus the
    `int32` mask); an hour-long recording is fine.

    Input conventions:
        - one clip: a 1-D array/tensor/list of samples, or a 2-D array inside a list for multi-channel audio;
        - a batch: a list of clips, or a 2-D array/tensor `(batch, samples)` of mono clips;
        - multi-channel clips (`(channels, samples)` or `(samples, channels)`; the shorter axis holds the channels)
          are mixed down to the mean of their channels;
        - integer PCM (`int8/16/32`, `uint8`) is scaled to [-1, 1); float input is used as is;
        - NaN/inf samples, float samples beyond the float32 range (or that resampling pushes past it) and non-numeric
          dtypes are errors, so `input_values` is always finite float32 (the model does not check it again).

    Args:
        feature_size (`int`, *optional*, defaults to 1):
            Values per time step (raw mono waveform).
        sampling_rate (`int`, *optional*, defaults to 48000):
            Rate the model expects; other input rates are resampled with soxr ("HQ").
        padding_value (`float`, *optional*, defaults to 0.0):
            Value of zero-padded samples.
        patch_size (`int`, *optional*, defaults to 128):
            Samples per audio patch; outputs are padded to a multiple of it.
        do_normalize (`bool`, *optional*, defaults to `False`):
            Zero-mean, unit-variance normalise each clip over its real samples (the original does not).
        pad_mode (`str`, *optional*, defaults to `"zeros"`):
            How clips shorter than the output are filled: `"zeros"` pads with `padding_value` and marks the padding
            in `audio_attention_mask`; `"loop"` tiles the clip (as the original did) and marks everything as real.
        return_attention_mask (`bool`, *optional*, defaults to `True`):
            Whether to return the sample-level `audio_attention_mask` (1 = real sample, 0 = padding).
    """

    model_input_names = ["input_values", "audio_attention_mask"]

    def __init__(
        self,
        feature_size: int = 1,
        sampling_rate: int = 48000,
        padding_value: float = 0.0,
        patch_size: int = 128,
        do_normalize: bool = False,
        pad_mode: str = "zeros",
        return_attention_mask: bool = True,
        **kwargs,
    ):
        super().__init__(
            feature_size=feature_size,
            sampling_rate=sampling_rate,
            padding_value=padding_value,
            return_attention_mask=return_attention_mask,
            **kwargs,
        )
        _check_sampling_rate(sampling_rate)
        _check_bool("return_attention_mask", return_attention_mask)
        _check_bool("do_normalize", do_normalize)
        if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f"`patch_size` must be a positive integer, got {patch_size!r}.")
        if pad_mode not in PAD_MODES:
            raise ValueError(f"`pad_mode` must be one of {PAD_MODES}, got {pad_mode!r}.")
        if self.padding_side != "right":
            raise ValueError(
                f"{self.__class__.__name__} only pads on the right, got padding_side={self.padding_side!r}."
            )
        self.patch_size = patch_size
        self.do_normalize = do_normalize
        self.pad_mode = pad_mode

    def __call__(
        self,
        raw_audio,
        sampling_rate: float | None = None,
        padding: bool | str | PaddingStrategy = "longest",
        max_length: int | None = None,
        truncation: bool = True,
        pad_to_multiple_of: int | None = None,
        crop: str | None = None,
        pad_mode: str | None = None,
        do_normalize: bool | None = None,
        generator: np.random.Generator | int | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | TensorType | None = None,
    ) -> BatchFeature:
        """
        Turn one clip or a batch of clips into `input_values` `(batch, samples)` float32 and `audio_attention_mask`.

        Args:
            raw_audio (`np.ndarray`, `torch.Tensor`, `list[float]` or a list of those):
                One clip or a batch (see the class docstring for the accepted layouts).
            sampling_rate (`float`, *optional*):
                Rate of `raw_audio`; resampled to `self.sampling_rate` when different. If omitted, the input is
                assumed to be at `self.sampling_rate` and a warning is logged.
            padding (`bool` or `str`, *optional*, defaults to `"longest"`):
                `"longest"`/`True`: pad to the longest clip (capped at `max_length`); `"max_length"`: always produce
                `max_length` samples. Outputs are always rounded up to a multiple of `patch_size`.
            max_length (`int`, *optional*):
                Output length in samples (a multiple of `patch_size`). Longer clips are cut to this window: with
                `crop=None` the first `max_length` samples are kept and a warning says so.
            truncation (`bool`, *optional*, defaults to `True`):
                Cut clips longer than `max_length` (see `crop`); `False` makes such a clip an error instead.
            pad_to_multiple_of (`int`, *optional*):
                Also round the output length up to a multiple of this.
            crop (`str`, *optional*):
                Which window of a clip longer than `max_length` is kept: `"random"` (uniform start, training) or
                `"center"` (evaluation). Requires `max_length`.
            pad_mode (`str`, *optional*):
                Overrides `self.pad_mode` (`"zeros"` or `"loop"`).
            do_normalize (`bool`, *optional*):
                Overrides `self.do_normalize`.
            generator (`np.random.Generator` or `int`, *optional*):
                Random source (or seed) for `crop="random"`; fresh entropy when omitted.
            return_attention_mask (`bool`, *optional*):
                Overrides `self.return_attention_mask`.
            return_tensors (`str` or [`~utils.TensorType`], *optional*):
                `"pt"` for torch tensors (sharing memory with the arrays), `"np"` or `None` for numpy arrays.
        """
        if sampling_rate is None:
            logger.warning(
                f"It is strongly recommended to pass the `sampling_rate` argument to `{self.__class__.__name__}()`. "
                f"Assuming {self.sampling_rate} Hz; failing to pass it can result in silent errors."
            )
            sampling_rate = self.sampling_rate
        _check_sampling_rate(sampling_rate)
        ratio = max(sampling_rate / self.sampling_rate, self.sampling_rate / sampling_rate)
        if ratio > MAX_RESAMPLING_RATIO:
            raise ValueError(
                f"`sampling_rate={sampling_rate}` is {ratio:.3g} times away from the feature extractor's "
                f"{self.sampling_rate} Hz (at most {MAX_RESAMPLING_RATIO} is resampled); is it in Hz?"
            )
        _check_bool("truncation", truncation)
        _check_bool("return_attention_mask", return_attention_mask, optional=True)
        _check_bool("do_normalize", do_normalize, optional=True)
        pad_mode = self.pad_mode if pad_mode is None else pad_mode
        if pad_mode not in PAD_MODES:
            raise ValueError(f"`pad_mode` must be one of {PAD_MODES}, got {pad_mode!r}.")
        if crop not in CROP_MODES:
            raise ValueError(f"`crop` must be one of {CROP_MODES}, got {crop!r}.")
        if crop is not None and max_length is None:
            raise ValueError(f"`crop={crop!r}` needs `max_length` (the window length in samples).")
        padding = PaddingStrategy({True: "longest", False: "do_not_pad"}.get(padding, padding))
        if padding == PaddingStrategy.DO_NOT_PAD:
            raise ValueError("Clips are always padded into one array; use padding='longest' or 'max_length'.")
        if padding == PaddingStrategy.MAX_LENGTH and max_length is None:
            raise ValueError("`padding='max_length'` needs `max_length`.")
        self._check_max_length(max_length)
        _check_multiple(pad_to_multiple_of)
        multiple = math.lcm(self.patch_size, pad_to_multiple_of or 1)

        clips = [_Clip(_to_numpy(item), index) for index, item in enumerate(self._split_batch(raw_audio))]
        lengths = [resampled_length(clip.num_frames, sampling_rate, self.sampling_rate) for clip in clips]
        for clip, length in zip(clips, lengths):
            if length < self.patch_size:
                raise ValueError(
                    f"Audio item {clip.index} has {length} samples at {self.sampling_rate} Hz, shorter than one patch "
                    f"({self.patch_size} samples). A 2-D array is read as a (batch, samples) batch of mono clips; put "
                    "a multi-channel clip inside a list."
                )

        if padding == PaddingStrategy.MAX_LENGTH:
            output_length = -(-max_length // multiple) * multiple
        else:
            longest = max(lengths) if max_length is None else min(max(lengths), max_length)
            output_length = -(-longest // multiple) * multiple
        if not truncation and max(lengths) > output_length:
            longer = [clip.index for clip, length in zip(clips, lengths) if length > output_length]
            raise ValueError(
                f"Audio item(s) {longer} are longer than max_length={output_length} samples; pass truncation=True "
                "(optionally with crop='center' or crop='random') to cut them."
            )
        if crop is None and max(lengths) > output_length:
            logger.warning(
                f"{sum(length > output_length for length in lengths)} audio item(s) are longer than max_length="
                f"{output_length} samples and were truncated to their first {output_length} samples; pass "
                "crop='center' or crop='random' to choose the window."
            )

        return_attention_mask = self.return_attention_mask if return_attention_mask is None else return_attention_mask
        do_normalize = self.do_normalize if do_normalize is None else do_normalize
        rng = np.random.default_rng(generator)
        _check_output_memory(len(clips), output_length, return_attention_mask)
        input_values = np.empty((len(clips), output_length), dtype=np.float32)
        attention_mask = np.zeros((len(clips), output_length), dtype=np.int32) if return_attention_mask else None
        for row, (clip, length) in enumerate(zip(clips, lengths)):
            start = 0
            if length > output_length and crop == "center":
                start = (length - output_length) // 2
            elif length > output_length and crop == "random":
                start = int(rng.integers(0, length - output_length + 1))
            real = min(length, output_length)
            values = input_values[row]
            _write_window(values[:real], clip.blocks(sampling_rate, self.sampling_rate), start)
            if do_normalize:
                _normalize_in_place(values[:real])
            if pad_mode == "loop":
                _tile_in_place(values, real)
                real = output_length
            else:
                values[real:] = self.padding_value
            if attention_mask is not None:
                attention_mask[row, :real] = 1

        data = {"input_values": input_values}
        if attention_mask is not None:
            data["audio_attention_mask"] = attention_mask
        return BatchFeature(data, tensor_type=return_tensors)

    def pad(
        self,
        processed_features: BatchFeature | Mapping | list[Mapping],
        padding: bool | str | PaddingStrategy = True,
        max_length: int | None = None,
        truncation: bool = False,
        pad_to_multiple_of: int | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | TensorType | None = None,
    ) -> BatchFeature:
        """
        Pad extracted `input_values` (in a data collator, say) the way `__call__` does: lengths are rounded up to a
        multiple of `patch_size` (and of `pad_to_multiple_of`), and the mask is `audio_attention_mask` (padded along
        when given). `processed_features` is a dict of lists or a list of dicts; `padding=False` returns the clips
        unpadded, as lists. Otherwise as [`~SequenceFeatureExtractor.pad`].
        """
        mask_name = self.model_input_names[1]
        if isinstance(processed_features, (list, tuple)) and processed_features:
            if isinstance(processed_features[0], Mapping):
                processed_features = {key: [item[key] for item in processed_features] for key in processed_features[0]}
        features = dict(processed_features)
        if "attention_mask" in features:
            raise ValueError(f"`attention_mask` is the text tower's mask; pass the audio mask as `{mask_name}`.")
        if mask_name in features:
            features["attention_mask"] = features.pop(mask_name)
        self._check_max_length(max_length)
        _check_bool("truncation", truncation)
        _check_bool("return_attention_mask", return_attention_mask, optional=True)
        _check_multiple(pad_to_multiple_of)
        padded = super().pad(
            BatchFeature(features),
            padding=padding,
            max_length=max_length,
            truncation=truncation,
            pad_to_multiple_of=math.lcm(pad_to_multiple_of or 1, self.patch_size),
            return_attention_mask=return_attention_mask,
            return_tensors=return_tensors,
        )
        if "attention_mask" in padded:
            padded[mask_name] = padded.pop("attention_mask")
        return padded

    def _check_max_length(self, max_length) -> None:
        if max_length is not None and (
            isinstance(max_length, bool)
            or not isinstance(max_length, int)
            or max_length < self.patch_size
            or max_length % self.patch_size
        ):
            raise ValueError(
                f"`max_length` must be a positive multiple of patch_size={self.patch_size}, got {max_length!r}."
            )

    @staticmethod
    def _split_batch(raw_audio) -> list:
        """The clips of `raw_audio`: a list/tuple of clips, a 2-D array/tensor of mono rows, or one clip."""
        if isinstance(raw_audio, (list, tuple)):
            if len(raw_audio) == 0:
                raise ValueError("Received an empty batch of audio.")
            is_single_clip = all(isinstance(item, (int, float, np.number)) for item in raw_audio[:1])
            return [raw_audio] if is_single_clip else list(raw_audio)
        if isinstance(raw_audio, (np.ndarray, torch.Tensor)):
            if raw_audio.ndim > 2:
                raise ValueError(
                    f"Got a {raw_audio.ndim}-D audio array; pass one clip as 1-D, a batch of mono clips as "
                    "(batch, samples), or a list of (channels, samples) arrays for multi-channel clips."
                )
            return list(raw_audio) if raw_audio.ndim == 2 else [raw_audio]
        return [raw_audio]


def _check_bool(name: str, value, optional: bool = False) -> None:
    if not (isinstance(value, (bool, np.bool_)) or (optional and value is None)):
        raise ValueError(f"`{name}` must be True or False, got {value!r}.")


def _check_multiple(pad_to_multiple_of) -> None:
    if pad_to_multiple_of is not None and (
        isinstance(pad_to_multiple_of, bool) or not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 1
    ):
        raise ValueError(f"`pad_to_multiple_of` must be a positive integer, got {pad_to_multiple_of!r}.")


def _check_output_memory(num_items: int, length: int, with_mask: bool) -> None:
    """Refuse a batch whose output arrays alone would not fit into this machine's memory."""
    needed = num_items * length * (8 if with_mask else 4)
    try:
        available = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): let numpy report it
        return
    if needed > available:
        raise ValueError(
            f"The batch needs {needed / 2**30:.1f} GiB ({num_items} clip(s) of {length} samples), more than this "
            f"machine's {available / 2**30:.1f} GiB of memory; pass `max_length`, or check `sampling_rate`."
        )


def _check_sampling_rate(sampling_rate) -> None:
    if (
        isinstance(sampling_rate, bool)
        or not isinstance(sampling_rate, (int, float, np.integer, np.floating))
        or not math.isfinite(sampling_rate)
        or sampling_rate <= 0
    ):
        raise ValueError(f"`sampling_rate` must be a positive number of Hz, got {sampling_rate!r}.")


__all__ = ["VattFeatureExtractor"]
