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
"""Processor pairing the VATT feature extractor and tokenizer."""

import numpy as np
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import AudioKwargs, ProcessingKwargs, ProcessorMixin, Unpack


class VattAudioKwargs(AudioKwargs, total=False):
    """
    crop (`str`, *optional*):
        Window of a clip longer than `max_length`: `"random"` or `"center"` (see [`VattFeatureExtractor`]).
    pad_mode (`str`, *optional*):
        `"zeros"` or `"loop"`.
    do_normalize (`bool`, *optional*):
        Zero-mean, unit-variance normalise each clip.
    generator (`np.random.Generator` or `int`, *optional*):
        Random source (or seed) for `crop="random"`.
    """

    crop: str | None
    pad_mode: str | None
    do_normalize: bool | None
    generator: np.random.Generator | int | None


class VattProcessorKwargs(ProcessingKwargs, total=False):
    audio_kwargs: VattAudioKwargs
    _defaults = {"text_kwargs": {"padding": True, "truncation": True}}


class VattProcessor(ProcessorMixin):
    r"""
    Wraps a [`VattFeatureExtractor`] and a [`VattTokenizer`] into one processor whose output
    (`input_ids`, `attention_mask`, `input_values`, `audio_attention_mask`) goes straight into
    `VattForContrastivePretraining`. `decode`/`batch_decode` forward to the tokenizer.

    Keyword arguments follow transformers' typed processor kwargs: flat (`max_length=...`, applied to every
    component that takes it), per modality (`text_kwargs={...}`, `audio_kwargs={...}`) or shared
    (`return_tensors`). Text defaults to `padding=True, truncation=True` (to `model_max_length`).

    Args:
        feature_extractor ([`VattFeatureExtractor`]):
            Turns raw audio into `input_values` and `audio_attention_mask`.
        tokenizer ([`VattTokenizer`]):
            Turns transcripts into `input_ids` and `attention_mask`.
    """

    valid_processor_kwargs = VattProcessorKwargs

    def __init__(self, feature_extractor, tokenizer):
        super().__init__(feature_extractor, tokenizer)

    def __call__(
        self,
        text: str | list[str] | None = None,
        audio=None,
        **kwargs: Unpack[VattProcessorKwargs],
    ) -> BatchFeature:
        """
        Tokenize `text` and/or featurize `audio` into one [`BatchFeature`]; outputs are always batched.

        When both are given, their batch sizes must match (pair `i` = clip `i` with text `i`), except that a batch of
        one on either side is allowed (one clip scored against several texts, or one text against several clips).

        Args:
            text (`str` or `list[str]`, *optional*):
                One transcript or a batch of transcripts.
            audio (*optional*):
                One clip or a batch of clips, in any layout [`VattFeatureExtractor`] accepts; pass its
                `sampling_rate` (resampled to the feature extractor's rate when different).
            kwargs ([`VattProcessorKwargs`]):
                Tokenizer and feature-extractor options, e.g. `max_length`, `crop`, `return_tensors="pt"`.
        """
        if text is None and audio is None:
            raise ValueError("Pass `text`, `audio` or both.")
        if text is not None and not (
            isinstance(text, str) or (isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text))
        ):
            raise TypeError(f"`text` must be a string or a list of strings, got {_describe(text)}.")
        if isinstance(text, str):
            text = [text]
        if text is not None and len(text) == 0:
            raise ValueError("`text` is an empty list.")
        text_kwargs = self._merge_kwargs(
            VattProcessorKwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs
        )["text_kwargs"]
        # Without the tokenizer's saved defaults: its `max_length`/`pad_to_multiple_of` count tokens, not samples.
        audio_kwargs = self._merge_kwargs(VattProcessorKwargs, **kwargs)["audio_kwargs"]
        return_tensors = audio_kwargs.get("return_tensors") or text_kwargs.get("return_tensors")

        data = {}
        if audio is not None:
            data.update(self.feature_extractor(audio, **audio_kwargs))
        if text is not None:
            num_texts = len(text)
            num_clips = len(data["input_values"]) if audio is not None else num_texts
            if num_texts != num_clips and 1 not in (num_texts, num_clips):
                raise ValueError(
                    f"Got {num_clips} audio clips and {num_texts} texts; contrastive pairs need equal counts "
                    "(or a single clip or a single text)."
                )
            data.update(self.tokenizer(text, **text_kwargs))
        return BatchFeature(data, tensor_type=return_tensors)


def _describe(value) -> str:
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} containing {sorted({type(item).__name__ for item in value})}"
    return type(value).__name__


__all__ = ["VattProcessor", "VattProcessorKwargs"]
