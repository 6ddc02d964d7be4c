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
The one on-disk cache for embeddings computed by a model (not used by the model files): the long-audio index, the
linear probe's features, the archive index and the retrieval example all store their arrays through it.

A cache file is a safetensors file of named arrays whose header records the cache format, the caller's
metadata (which must include what the file is keyed on, e.g. the model fingerprint) and a checksum of every array.
Files are written beside their target and renamed into place, so a reader sees a whole file or none. Reading checks
the checksum and the expected metadata: a truncated or garbage file, or a well-formed file holding something else,
raises [`CorruptCacheError`] naming the file, and [`cached_arrays`] rebuilds it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save_file
from torch import nn

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
_HEADER = "vatt_cache"


class CorruptCacheError(ValueError):
    """A cache file that cannot be read, fails its checksum or does not hold what it is expected to hold."""


def hash_json(*parts: Any) -> str:
    """Short stable hash of JSON-serialisable parts (a cache key)."""
    return hashlib.blake2b(json.dumps(parts, sort_keys=True, default=str).encode(), digest_size=12).hexdigest()


def model_fingerprint(*modules: nn.Module) -> str:
    """
    BLAKE2b of what decides the modules' outputs: the architecture in each module's `config` (if it has one) and the
    name, dtype, shape and bytes of every tensor of their state dicts. Any change invalidates cached embeddings.
    """
    digest = hashlib.blake2b(digest_size=16)
    for module in modules:
        config = getattr(module, "config", None)
        if config is not None:
            settings = {key: value for key, value in config.to_dict().items() if not key.startswith("_")}
            settings.pop("transformers_version", None)
            digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
        for name, tensor in module.state_dict().items():
            tensor = tensor.detach().cpu().contiguous()
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def file_fingerprint(path: str | os.PathLike) -> str:
    """BLAKE2b of a file's bytes (its content hash)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
        digest.update(array.data)
    return digest.hexdigest()


def ensure_writable(directory: str | os.PathLike) -> Path:
    """Create `directory` and check that files can be written and renamed in it, before any work is done."""
    directory = Path(directory).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test.", suffix=".tmp"):
            pass
    except OSError as error:
        raise PermissionError(f"Cannot write cache files in {directory}: {error.strerror or error}.") from error
    return directory


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """
    Yield a temporary path beside `path`; once the block succeeds, its file is flushed to disk and renamed to `path`.
    A failed or killed write leaves `path` as it was (and at most a hidden `.tmp` file that later writes ignore).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    temporary = Path(temporary)
    try:
        yield temporary
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())
        os.chmod(temporary, 0o644)  # temporary files are private; a cache file is an ordinary file
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def save_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray], metadata: dict[str, Any]) -> Path:
    """Write `arrays` and `metadata` (JSON-serialisable) to the cache file `path`, atomically, with a checksum."""
    arrays = {name: np.ascontiguousarray(array) for name, array in arrays.items()}
    header = {"cache_format": CACHE_FORMAT, "checksum": _checksum(arrays), "metadata": metadata}
    with atomic_write(path) as temporary:
        save_file(arrays, temporary, metadata={_HEADER: json.dumps(header)})
    return Path(path)


def load_arrays(
    path: str | os.PathLike, expected: dict[str, Any] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """
    Read a file written by [`save_arrays`]: its arrays and metadata. Raises [`CorruptCacheError`] (naming the file)
    if it cannot be read, fails its checksum, or its metadata differs from `expected` in any of `expected`'s keys.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"No cache file at {path}.")
    try:
        with safe_open(path, framework="numpy") as handle:
            arrays = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (not a dict)
            header = json.loads(handle.metadata()[_HEADER])
        metadata, checksum, version = header["metadata"], header["checksum"], header["cache_format"]
    except Exception as error:  # safetensors and json raise several types for truncated or foreign files
        raise CorruptCacheError(f"{path}: not a readable cache file ({type(error).__name__}: {error}).") from error
    if version != CACHE_FORMAT:
        raise CorruptCacheError(f"{path}: cache format {version}, but this version reads format {CACHE_FORMAT}.")
    if _checksum(arrays) != checksum:
        raise CorruptCacheError(f"{path}: the arrays do not match their checksum.")
    for key, value in (expected or {}).items():
        if metadata.get(key) != value:
            raise CorruptCacheError(f"{path}: holds {key}={metadata.get(key)!r}, expected {value!r}.")
    return arrays, metadata


def cached_arrays(
    path: str | os.PathLike,
    expected: dict[str, Any],
    compute: Callable[[], dict[str, np.ndarray]],
    metadata: dict[str, Any] | None = None,
    write: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, Any], bool]:
    """
    The arrays cached at `path` if it holds a valid file whose metadata includes `expected`; otherwise `compute()`
    them and (with `write`) save them with `metadata` and `expected` as metadata. A corrupt file is reported and
    rebuilt. Returns the arrays, the metadata and whether the cache was used. Check the folder with
    [`ensure_writable`] before computing anything.
    """
    path = Path(path)
    if path.is_file():
        try:
            arrays, metadata = load_arrays(path, expected)
            return arrays, metadata, True
        except CorruptCacheError as error:
            logger.warning("%s Rebuilding it.", error)
    arrays, metadata = compute(), {**(metadata or {}), **expected}
    if write:
        save_arrays(path, arrays, metadata)
    return arrays, metadata, False


__all__ = [
    "CorruptCacheError",
    "atomic_write",
    "cached_arrays",
    "ensure_writable",
    "file_fingerprint",
    "hash_json",
    "load_arrays",
    "model_fingerprint",
    "save_arrays",
]
