"""
transformers' own common test mixins for the installed transformers version, fetched from PyPI and cached.

The source distribution of `transformers==<installed version>` ships `tests/test_*_common.py` (the mixins every model
in transformers must pass), but not the few helper modules they import from sub-folders of its repository
(`tests/exporters`, `tests/generation`, `tests/utils`, `utils/fetch_hub_objects_for_ci.py`). This module downloads the
sdist once with pip, keeps its top-level `tests/*.py` in a cache folder (`$VATT_TESTS_CACHE`, else
`$XDG_CACHE_HOME/vatt-tests`, else `~/.cache/vatt-tests`) as the package `transformers_common_tests`, and stands in for
the missing helpers (see `_install_stand_ins` and `SAMPLE_TEXT`). Nothing of transformers' test code is committed to this repository.
"""

import fcntl
import importlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
from pathlib import Path

import transformers

PACKAGE = "transformers_common_tests"
COMPLETE_MARKER = ".complete"
# Stand-in for `tests/fixtures/sample_text.txt` (not in the sdist), which `TokenizerTesterMixin` reads.
SAMPLE_TEXT = """The tokenizer tests read a few lines of plain text.
They split it into words, encode them and decode them again.

Numbers such as 1984 and 42, punctuation, and UPPER case letters are part of it.
"""


def cache_root() -> Path:
    if os.environ.get("VATT_TESTS_CACHE"):
        return Path(os.environ["VATT_TESTS_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vatt-tests"


def _download_sdist(version: str, destination: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet"]
    command += ["--dest", str(destination), f"transformers=={version}"]
    result = subprocess.run(command, capture_output=True, text=True)
    archives = list(destination.glob(f"transformers-{version}.tar.gz"))
    if result.returncode != 0 or len(archives) != 1:
        raise RuntimeError(
            f"Could not download the transformers {version} source distribution from PyPI (needed for transformers' "
            f"common tests): {' '.join(command)} exited with {result.returncode}:\n{result.stderr[-2000:]}"
        )
    return archives[0]


def _extract_tests(archive: Path, version: str, package_dir: Path) -> None:
    """Copy the top-level `tests/*.py` of the sdist into `package_dir`."""
    prefix = f"transformers-{version}/tests/"
    package_dir.mkdir(parents=True)
    with tarfile.open(archive) as sdist:
        members = [
            member
            for member in sdist.getmembers()
            if member.isfile() and member.name.startswith(prefix) and "/" not in member.name[len(prefix) :]
        ]
        for member in members:
            if member.name.endswith(".py"):
                (package_dir / Path(member.name).name).write_bytes(sdist.extractfile(member).read())
    if not (package_dir / "test_modeling_common.py").is_file():
        raise RuntimeError(f"{archive} has no {prefix}test_modeling_common.py.")
    (package_dir / "__init__.py").touch()
    (package_dir / "fixtures").mkdir()
    (package_dir / "fixtures" / "sample_text.txt").write_text(SAMPLE_TEXT, encoding="utf-8")


def common_tests_dir(version: str = transformers.__version__) -> Path:
    """The cached folder holding `transformers_common_tests/` for `version`, downloaded on first use."""
    root = cache_root()
    target = root / f"transformers-{version}"
    if (target / COMPLETE_MARKER).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".transformers-{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent test runs download once
        if (target / COMPLETE_MARKER).is_file():
            return target
        with tempfile.TemporaryDirectory(dir=root) as scratch:
            staging = Path(scratch) / "staging"
            archive = _download_sdist(version, Path(scratch))
            _extract_tests(archive, version, staging / PACKAGE)
            (staging / COMPLETE_MARKER).touch()
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
    return target


class ExportTesterMixin:
    """Stand-in: the `torch.export` tests live in transformers' `tests/exporters/`, which the sdist does not ship."""


class GenerationTesterMixin:
    """Stand-in: transformers' `tests/generation/`; no Vatt model generates, so only `issubclass` checks see it."""


# Every attribute of `PreTrainedConfig` set to a non-default value, for `ConfigTester.check_config_arguments_init`
# (transformers' own table lives in `tests/utils/`, which the sdist does not ship).
CONFIG_COMMON_KWARGS = {
    "output_hidden_states": True,
    "return_dict": False,
    "dtype": "float16",
    "chunk_size_feed_forward": 5,
    "is_encoder_decoder": True,
    "architectures": ["VattTestModel"],
    "id2label": {0: "first", 1: "second"},
    "label2id": {"first": 0, "second": 1},
    "problem_type": "multi_label_classification",
}


def _local_path(url: str) -> str:
    """Stand-in for `fetch_hub_objects_for_ci.url_to_local_path`: tests that read Hub files need the Hub anyway."""
    return url


def _install_stand_ins() -> None:
    modules = {
        f"{PACKAGE}.exporters": {},
        f"{PACKAGE}.exporters.test_export": {"ExportTesterMixin": ExportTesterMixin},
        f"{PACKAGE}.generation": {},
        f"{PACKAGE}.generation.test_utils": {"GenerationTesterMixin": GenerationTesterMixin},
        f"{PACKAGE}.utils": {},
        f"{PACKAGE}.utils.test_configuration_utils": {"config_common_kwargs": CONFIG_COMMON_KWARGS},
        "fetch_hub_objects_for_ci": {"url_to_local_path": _local_path},
    }
    for name, attributes in modules.items():
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__dict__.update(attributes)
            sys.modules[name] = module


def load(module: str) -> types.ModuleType:
    """Import one of transformers' common test modules, e.g. `load("test_modeling_common")`."""
    directory = str(common_tests_dir())
    if directory not in sys.path:
        sys.path.append(directory)
    _install_stand_ins()
    return importlib.import_module(f"{PACKAGE}.{module}")
