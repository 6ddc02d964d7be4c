"""Shared test set-up: offline Hub, a private HF cache, small thread counts and tiny configs."""

import os
import sys
import tempfile
from pathlib import Path

_HF_HOME = tempfile.mkdtemp(prefix="vatt-tests-hf-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = _HF_HOME
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# Tiny test models gain nothing from intra-op threads, and subprocess tests (2-process launches) would oversubscribe.
torch.set_num_threads(1)


@pytest.fixture
def tiny_config():
    from modeling_vatt import VattConfig

    return VattConfig.from_preset("tiny")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def tf_reference_dir() -> Path:
    path = SHARED_FIXTURES / "vatt_tf_reference"
    if not path.is_dir():
        raise FileNotFoundError(f"The TensorFlow reference fixtures are missing: expected {path}.")
    return path


def pytest_configure(config):
    # Marks used by transformers' common test mixins (tests/test_common_*.py).
    marks = ("torch_compile_test", "flash_attn_test", "flash_attn_3_test", "flash_attn_4_test", "accelerate_tests")
    for mark in marks:
        config.addinivalue_line("markers", f"{mark}: transformers' common test mark")
