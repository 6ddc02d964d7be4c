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
"""Decoding audio files for examples, tests and data pipelines (not used by the model files)."""

import os

import numpy as np
import soundfile

from .feature_extraction_vatt import BLOCK_FRAMES, convert_blocks, resampled_length


def load_audio(path: str | os.PathLike, sampling_rate: int = 48000, mono: bool = True) -> np.ndarray:
    """
    Decode an audio file (WAV, FLAC, OGG, MP3, ... via libsndfile) to float32 at `sampling_rate`.

    Returns `(samples,)` when `mono` (channels averaged) or `(channels, samples)` otherwise. The file is decoded,
    mixed down and resampled (soxr "HQ") block by block into one preallocated array, so long recordings cost about
    one copy of the output.
    """
    with soundfile.SoundFile(path) as source:
        num_samples = resampled_length(source.frames, source.samplerate, sampling_rate)
        waveform = np.empty((num_samples,) if mono else (num_samples, source.channels), dtype=np.float32)
        blocks = source.blocks(blocksize=BLOCK_FRAMES, dtype="float32", always_2d=True)
        position = 0
        for block in convert_blocks(blocks, source.samplerate, sampling_rate, mono=mono):
            waveform[position : position + len(block)] = block
            position += len(block)
    if position != num_samples:
        raise RuntimeError(f"{path}: decoded {position} samples, but the header announced {num_samples}.")
    return waveform if mono else waveform.T
