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
def recordings(tmp_path):
    """16 kHz recordings of 10 s and 0.5 s with word timings, a broken file, an empty transcript and a recording whose
    timings are in milliseconds (all beyond its audio)."""
    import numpy as np
    import soundfile as sf
    from datasets import Audio, Dataset

    from tests.helpers import ENDS, STARTS, WORDS

    rng = np.random.default_rng(0)
    sf.write(tmp_path / "long.flac", rng.uniform(-0.5, 0.5, 160000), 16000)
    sf.write(tmp_path / "short.flac", rng.uniform(-0.5, 0.5, 8000), 16000)
    (tmp_path / "broken.flac").write_bytes(b"nope")
    names = ("long.flac", "broken.flac", "short.flac", "long.flac", "long.flac")
    dataset = Dataset.from_dict(
        {
            "audio": [str(tmp_path / name) for name in names],
            "text": [" ".join(WORDS), "w1", "w1 w2", "", " ".join(WORDS)],
            "words": [WORDS, ["w1"], ["w1", "w2"], [], WORDS],
            "word_starts": [STARTS, [0.0], [0.0, 0.2], [], [1000 * start for start in STARTS]],
            "word_ends": [ENDS, [0.1], [0.2, 0.4], [], [1000 * end for end in ENDS]],
        }
    )
    return dataset.cast_column("audio", Audio(decode=False))


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
