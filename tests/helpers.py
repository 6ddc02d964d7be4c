"""Utilities shared by the tests."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Timed transcript of the synthetic recordings of the `recordings` fixture (conftest.py).
WORDS = [f"w{i}" for i in range(10)]
STARTS = [float(i) for i in range(10)]  # word i is spoken in [i, i + 0.8) s, midpoint i + 0.4
ENDS = [i + 0.8 for i in range(10)]

# Festival is a system package (the `festival` voice set of the corpus); .ci/run installs it where apt can.
requires_festival = pytest.mark.skipif(
    shutil.which("festival") is None, reason="needs Festival: apt-get install festival festvox-kdlpc16k"
)

BLOCK_PACKAGE = "import sys; sys.modules['modeling_vatt'] = None  # the package is not importable here\n"


def run_without_package(code: str, cwd: Path, timeout: int = 300) -> str:
    """Run `code` in a fresh Python that cannot import `modeling_vatt`, offline; return stdout or fail loudly."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONPATH"] = ""
    script = BLOCK_PACKAGE + textwrap.dedent(code)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise AssertionError(f"subprocess failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout


def hub_cache_snapshot(hf_home: Path, repo_id: str, revision: str = "0" * 40) -> Path:
    """Create the Hub cache layout `models--org--name/snapshots/<rev>/` (+ `refs/main`) and return the snapshot dir."""
    repo_dir = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(revision)
    return snapshot
