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
"""Compare a converted VATT model with outputs of the original TensorFlow model (`inputs.npz` / `outputs.npz`).

Input and output names follow the reference fixture (`shared/fixtures/vatt_tf_reference`): audio cases `audio`,
`audio_interp` (`[B, samples, 1]`, TF layout), text cases `text_ids`, `text_interp_ids`. For a case whose position
table is resampled, the `..._f64spline` reference (the original with its spline evaluated in float64) is used, since
the model computes the spline exactly.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np
import torch

AUDIO_CASES = ("audio", "audio_interp")
TEXT_CASES = {"text": "text_ids", "text_interp": "text_interp_ids"}
INPUT_KEYS = {*AUDIO_CASES, *TEXT_CASES.values()}


def _npz_keys(path: str | os.PathLike) -> set[str]:
    try:
        with np.load(path) as archive:
            return set(archive.files)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise ValueError(f"{path} is not a readable .npz archive ({' '.join(str(error).split())}).") from error


def reference_inputs(outputs_npz: str | os.PathLike, inputs_npz: str | os.PathLike) -> set[str]:
    """The input cases of a reference pair; a ValueError for unreadable files or a pair given in the wrong order."""
    output_keys, input_keys = _npz_keys(outputs_npz), _npz_keys(inputs_npz)
    if output_keys & INPUT_KEYS and not input_keys & INPUT_KEYS:
        raise ValueError(
            f"the reference files look swapped: {outputs_npz} holds inputs ({', '.join(sorted(output_keys & INPUT_KEYS))}); "
            "pass the outputs first: --verify_against OUTPUTS_NPZ INPUTS_NPZ."
        )
    if not input_keys & INPUT_KEYS:
        raise ValueError(f"{inputs_npz} holds none of the reference inputs {sorted(INPUT_KEYS)}.")
    return input_keys & INPUT_KEYS


def _reference_key(expected: np.lib.npyio.NpzFile, key: str) -> str | None:
    for candidate in (f"{key}_f64spline", key):
        if candidate in expected.files:
            return candidate
    return None


@torch.no_grad()
def verify(model: torch.nn.Module, inputs_npz: str | os.PathLike, outputs_npz: str | os.PathLike) -> dict[str, float]:
    """Run a converted model on reference inputs; return the max abs error per output.

    `model` is a `VattForContrastivePretraining`, or any model with an `audio_model` tower (or an audio tower itself).

    Compared, where the reference has them: the audio tower's `pooler_output` / `last_hidden_state[:, 1:]`
    (`<case>_features_pooled` / `<case>_features`), the audio-video-space projection
    `audio_projection.audio_to_va(pooler_output)` (`<case>_head_tovid`), the audio embedding of `get_audio_features`
    (`<case>_head_tovat_derived`), the same two for text (`text_model` with `attention_mask = ids != 0`,
    `get_text_features` for `<case>_head_tovid`).
    """
    inputs, expected = np.load(inputs_npz), np.load(outputs_npz)
    model.eval()
    audio_model = getattr(model, "audio_model", model)
    computed: dict[str, torch.Tensor] = {}
    for case in AUDIO_CASES:
        if case not in inputs.files:
            continue
        input_values = torch.from_numpy(inputs[case][..., 0])
        output = audio_model(input_values=input_values)
        computed[f"{case}_features_pooled"] = output.pooler_output
        computed[f"{case}_features"] = output.last_hidden_state[:, 1:]
        if hasattr(model, "audio_projection"):
            if hasattr(model.audio_projection, "audio_to_va"):  # the original FAC bridge
                computed[f"{case}_head_tovid"] = model.audio_projection.audio_to_va(output.pooler_output)
            computed[f"{case}_head_tovat_derived"] = model.get_audio_features(input_values=input_values).pooler_output
    for case, ids_key in TEXT_CASES.items():
        if ids_key not in inputs.files or not hasattr(model, "text_model"):
            continue
        input_ids = torch.from_numpy(inputs[ids_key].astype(np.int64))
        attention_mask = (input_ids != 0).long()
        output = model.text_model(input_ids=input_ids, attention_mask=attention_mask)
        computed[f"{case}_features_pooled"] = output.pooler_output
        computed[f"{case}_features"] = output.last_hidden_state[:, 1:]
        computed[f"{case}_head_tovid"] = model.get_text_features(
            input_ids=input_ids, attention_mask=attention_mask
        ).pooler_output

    errors = {}
    for key, value in computed.items():
        reference_key = _reference_key(expected, key)
        if reference_key is None:
            continue
        reference = expected[reference_key]
        if tuple(value.shape) != reference.shape:
            raise ValueError(f"{reference_key}: model gives shape {tuple(value.shape)}, reference {reference.shape}.")
        errors[reference_key] = float(np.abs(value.float().numpy() - reference).max())
    if not errors:
        raise ValueError(f"{outputs_npz} holds none of the outputs this model produces ({sorted(computed)}).")
    return errors
