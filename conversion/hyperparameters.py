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
"""Where each hyperparameter of a converted model comes from: the checkpoint, the original config, a flag or a default.

The original config is the original code's model config as JSON, in the form `params.as_dict()` gives (e.g.
`models.tx_fac.model_config_as_dict` of the reference fixture's `config.json`). Its backbones are named presets
(`wat_base`, `t5_small`, `ut_medium`, ...) whose fields the `*_model_kwargs` override, as the original model factory
does; the preset values below are the original `vatt/configs` defaults that matter for conversion.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The sizes of every `*_base` preset and the intrinsic values shared by all of them
_BASE_ENCODER = {
    "d_model": 768,
    "d_kv": 64,
    "d_ff": 3072,
    "num_layers": 12,
    "num_heads": 12,
    "activation": "gelu",
    "layer_norm_epsilon": 1e-6,
}
_WAT_BASE = {
    **_BASE_ENCODER,
    "temporal_patch_size": 128,
    "temporal_patch_stride": 128,
    "max_temporal_buckets": 1200,
    "pre_projection": False,
    "post_projection": False,
    "d_post_proj": 1024,
    "pre_norm": True,
}
_T5_BASE = {
    **_BASE_ENCODER,
    "d_embedding": 300,
    "vocab_size": 2**16,
    "num_relative_buckets": 32,
    "max_relative_distance": 64,
}
_UT_BASE = {
    **_BASE_ENCODER,
    "aud_temporal_patch_size": 128,
    "txt_vocab_size": 2**16,
    "txt_embedding_dim": 300,
    "max_aud_temporal_buckets": 1200,
    "max_txt_temporal_buckets": 16,
    "pre_norm": True,
    "d_post_proj": 1024,
}
_LARGER = {"d_model": 1024, "d_ff": 4096, "num_heads": 16}
PRESETS = {
    "wat_base": _WAT_BASE,
    "wat_medium": {**_WAT_BASE, **_LARGER},
    "wat_large": {**_WAT_BASE, **_LARGER, "num_layers": 24},
    "t5_base": _T5_BASE,
    "t5_small": {**_T5_BASE, "d_model": 512, "d_ff": 2048, "num_layers": 6, "num_heads": 8},
    "ut_base": _UT_BASE,
    "ut_medium": {**_UT_BASE, **_LARGER},
    "ut_large": {**_UT_BASE, **_LARGER, "num_layers": 24},
}
BRIDGE_DEFAULTS = {"name": "mlp_fac", "bn_config": {"epsilon": 1e-5}}

# Where each section lives in the original config, per checkpoint kind (a fine-tuned WaT config is the audio config).
SECTION_PATHS = {
    "tx_fac": {
        "audio": "backbone_config.audio_model_kwargs",
        "text": "backbone_config.text_model_kwargs",
        "head": "head_config.bridge[0]",
    },
    "ut_fac": {
        "audio": "backbone_config.unified_model_kwargs",
        "text": "backbone_config.unified_model_kwargs",
        "head": "head_config.bridge[0]",
    },
    "wat_finetuned": {"audio": ""},
}
# The released defaults assumed for values a checkpoint does not store.
RELEASED = {
    "tx_fac": {"audio": PRESETS["wat_base"], "text": PRESETS["t5_small"], "head": BRIDGE_DEFAULTS},
    "ut_fac": {"audio": PRESETS["ut_medium"], "text": PRESETS["ut_medium"], "head": BRIDGE_DEFAULTS},
    "wat_finetuned": {"audio": PRESETS["wat_base"]},
}

Key = tuple[str, str]  # (section, dotted field), e.g. ("text", "max_relative_distance")


class ConversionError(ValueError):
    """A checkpoint, config, vocabulary or output folder the converter cannot use (the message is one line)."""


def _field(section: dict, field: str) -> Any:
    value = section
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(field)
        value = value[part]
    return value


def _preset(name: Any, kwargs: Any, family: str, where: str, path: Path) -> dict:
    """A named original preset (`wat_base`, ...) with the config's overrides applied, as the original factory does."""
    if not isinstance(name, str) or name not in PRESETS or not name.startswith(family):
        names = sorted(preset for preset in PRESETS if preset.startswith(family))
        raise ConversionError(f"original config {path} names {where} {name!r}; the converter handles {names}.")
    if not isinstance(kwargs, dict):
        raise ConversionError(f"original config {path}: the overrides of {where} {name!r} are not a JSON object.")
    return {**PRESETS[name], **kwargs}


def _backbone(backbone: dict, modality: str, family: str, path: Path) -> dict:
    name, kwargs = backbone.get(f"{modality}_backbone"), backbone.get(f"{modality}_model_kwargs") or {}
    return _preset(name, kwargs, family, f"backbone_config.{modality}_backbone", path)


def load_original_config(path: str | os.PathLike, kind: str) -> dict[str, dict]:
    """Read an original `as_dict()` config and resolve its backbones for a `kind` checkpoint: `{section: fields}`."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConversionError(f"cannot read original config {path}: {' '.join(str(error).split())}") from error
    if not isinstance(raw, dict):
        raise ConversionError(f"original config {path} is not a JSON object.")
    if "models" in raw:
        raise ConversionError(f"{path} holds several models: pass one model's `model_config_as_dict` as its own file.")
    if kind == "wat_finetuned":
        return {"audio": _preset(raw.get("name"), raw, "wat_", "the audio model (`name`)", path)}
    backbone, heads = raw.get("backbone_config"), (raw.get("head_config") or {}).get("bridge")
    if not isinstance(backbone, dict) or not isinstance(heads, list) or len(heads) != 1:
        raise ConversionError(
            f"original config {path} is not a VATT pre-training config: it needs `backbone_config` and one "
            "`head_config.bridge` head."
        )
    if heads[0].get("name") != "mlp_fac":
        raise ConversionError(f"{path} has bridge head {heads[0].get('name')!r}; the converter handles 'mlp_fac'.")
    expected = "unified_backbone" if kind == "ut_fac" else "audio_backbone"
    if expected not in backbone:
        raise ConversionError(
            f"original config {path} has no backbone_config.{expected}, but the checkpoint is {kind}."
        )
    if kind == "ut_fac":
        unified = _backbone(backbone, "unified", "ut_", path)
        return {"audio": unified, "text": unified, "head": heads[0]}
    return {
        "audio": _backbone(backbone, "audio", "wat_", path),
        "text": _backbone(backbone, "text", "t5_", path),
        "head": heads[0],
    }


@dataclass
class Setting:
    value: Any
    source: str  # "checkpoint", "original config", "command line" or "assumed"
    note: str = ""


class Settings:
    """Collects every hyperparameter of a conversion with its source, checking the checkpoint against the config."""

    def __init__(self, kind: str, original_config: str | os.PathLike | None, flags: dict[str, Any]):
        self.kind = kind
        self.config_path = original_config
        self.original = None if original_config is None else load_original_config(original_config, kind)
        self.flags = {name: value for name, value in flags.items() if value is not None}
        self.recorded: dict[str, Setting] = {}

    def key_path(self, key: Key) -> str:
        section, field = key
        prefix = SECTION_PATHS[self.kind][section]
        return f"{prefix}.{field}" if prefix else field

    def original_value(self, key: Key) -> Any:
        try:
            return _field(self.original[key[0]], key[1])
        except KeyError:
            raise ConversionError(f"original config {self.config_path} has no {self.key_path(key)}.") from None

    def record(self, name: str, value: Any, source: str, note: str = "") -> Any:
        self.recorded[name] = Setting(value, source, note)
        return value

    def read(self, name: str, value: Any, key: Key) -> Any:
        """A value read from the checkpoint's shapes; it must agree with the original config when one is given."""
        if self.original is not None and self.original_value(key) != value:
            raise ConversionError(
                f"the checkpoint gives {name} = {value!r} but original config {self.config_path} sets "
                f"{self.key_path(key)} = {self.original_value(key)!r}."
            )
        return self.record(name, value, "checkpoint")

    def override_hint(self, key: Key, flag: str | None) -> str:
        config = f"--original_config ({self.key_path(key)})"
        return f"override with --{flag} or {config}" if flag else f"override with {config}"

    def given(
        self, name: str, key: Key, flag: str | None = None, supported: tuple | None = None, default: Any = None
    ) -> Any:
        """A value the checkpoint does not store: the flag, else the original config, else the released default.

        `supported` lists the only values the converted model can represent; `default` replaces the released one.
        """
        released = _field(RELEASED[self.kind][key[0]], key[1]) if default is None else default
        if flag in self.flags:
            value, source = self.flags[flag], "command line"
            if self.original is not None and self.original_value(key) != value:
                raise ConversionError(
                    f"--{flag} {value} contradicts original config {self.config_path}: "
                    f"{self.key_path(key)} = {self.original_value(key)!r}."
                )
        elif self.original is not None:
            value, source = self.original_value(key), "original config"
        else:
            value, source = released, "assumed"
        if supported is not None and value not in supported:
            raise ConversionError(
                f"{self.key_path(key)} = {value!r} ({source}) cannot be converted: the converted model supports "
                f"only {', '.join(map(repr, supported))}."
            )
        note = f"not stored in the checkpoint; the released default; {self.override_hint(key, flag)}"
        return self.record(name, value, source, note if source == "assumed" else "")

    def attention_heads(self, tower: str, width: int, key: Key, fallback: int | None) -> int:
        """Heads of a generic encoder, whose checkpoint stores only their total width (`num_heads * d_kv`); records
        `{tower}.num_attention_heads` and `{tower}.head_dim`."""
        name, heads = f"{tower}.num_attention_heads", self.flags.get("audio_num_heads")
        hint = self.override_hint(key, "audio_num_heads")
        if self.original is not None:
            heads = self.given(name, key, flag="audio_num_heads")
            d_kv = self.original_value((key[0], "d_kv"))
            if not (isinstance(heads, int) and isinstance(d_kv, int)) or heads * d_kv != width:
                raise ConversionError(
                    f"the checkpoint's attention width is {width} but original config {self.config_path} sets "
                    f"num_heads * d_kv = {heads} * {d_kv} ({self.key_path(key)})."
                )
        elif heads is not None:
            self.record(name, heads, "command line")
        elif width >= 256 and width % 64 == 0:
            heads = self.record(name, width // 64, "assumed", f"64-wide heads (d_kv of every released model); {hint}")
        elif fallback is not None:
            heads = self.record(name, fallback, "assumed", f"the text tower's head count; {hint}")
        else:
            raise ConversionError(
                f"cannot infer the audio encoder's number of attention heads (attention width {width} is not stored "
                "per head); pass --audio_num_heads or --original_config."
            )
        if heads <= 0 or width % heads:
            raise ConversionError(f"{heads} attention heads do not divide the attention width {width}.")
        heads_setting = self.recorded[name]
        note = heads_setting.note and f"attention width {width} / the assumed head count; {hint}"
        self.record(f"{tower}.head_dim", width // heads, heads_setting.source, note)
        return heads

    def by_source(self) -> dict[str, dict[str, Any]]:
        """`{source: {name: value}}` for the model card."""
        groups: dict[str, dict[str, Any]] = {}
        for name, setting in self.recorded.items():
            groups.setdefault(setting.source, {})[name] = setting.value
        return groups

    def assumptions(self) -> list[str]:
        """One line per assumed value, naming what overrides it."""
        return [
            f"assumed {name} = {setting.value!r}: {setting.note}"
            for name, setting in self.recorded.items()
            if setting.source == "assumed"
        ]
