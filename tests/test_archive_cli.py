"""The archive scripts end to end: two `accelerate` processes, a killed run resumed, and the search CLI."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from test_archive import make_archive
from test_moment_search import SPEECH, _model, speech_tokenizer

from modeling_vatt.archive import ArchiveIndex
from modeling_vatt.feature_extraction_vatt import VattFeatureExtractor

REPO_ROOT = Path(__file__).resolve().parents[1]
INDEX_SCRIPT = REPO_ROOT / "examples" / "index_archive.py"
sys.path.insert(0, str(REPO_ROOT / "examples"))
import index_archive  # noqa: E402
import search_archive  # noqa: E402

sys.path.remove(str(REPO_ROOT / "examples"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    _model().save_pretrained(folder)
    VattFeatureExtractor().save_pretrained(folder)
    speech_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """The speech fixtures, broken files, and 20 longer recordings (each fixture followed by a reversed other one)."""
    folder = make_archive(tmp_path_factory.mktemp("archive"))
    fixtures = sorted(SPEECH.glob("*.flac"))
    (folder / "long").mkdir()
    for index, first in enumerate(fixtures * 2):
        second = fixtures[(index + 3) % len(fixtures)]
        audio = np.concatenate([soundfile.read(path, dtype="float32")[0] for path in (first, second)])
        soundfile.write(folder / "long" / f"{index:02d}.flac", audio if index < 10 else audio[::-1].copy(), 16000)
    return folder


def _environment() -> dict[str, str]:
    environment = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="true")
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), environment.get("PYTHONPATH")]))
    return environment


def _index_command(num_processes: int) -> list[str]:
    if num_processes == 1:
        return [sys.executable, str(INDEX_SCRIPT)]
    launch = ["--multi_gpu", "--num_processes", str(num_processes), "--num_machines", "1", "--mixed_precision", "no"]
    return [sys.executable, "-m", "accelerate.commands.launch", *launch, "--dynamo_backend", "no", str(INDEX_SCRIPT)]


def _contents(index_dir: Path) -> tuple[dict, list[tuple], np.ndarray, list[tuple]]:
    """Everything an index holds except its random version id."""
    archive = ArchiveIndex.load(index_dir)
    info = {key: value for key, value in archive.info.items() if key != "version"}
    rows = archive.connection.execute("SELECT * FROM windows ORDER BY id").fetchall()
    return info, rows, archive.index.reconstruct_n(0, len(archive)), sorted(archive.skipped())


@pytest.fixture(scope="module")
def one_process_index(model_dir, archive, tmp_path_factory) -> Path:
    index_dir = tmp_path_factory.mktemp("one") / "index"
    index_archive.main(["--model", str(model_dir), "--audio_dir", str(archive), "--index_dir", str(index_dir)])
    return index_dir


def _assert_same_index(first: Path, second: Path, atol: float) -> None:
    info, rows, vectors, skipped = _contents(first)
    other_info, other_rows, other_vectors, other_skipped = _contents(second)
    assert (info, rows, skipped) == (other_info, other_rows, other_skipped)
    np.testing.assert_allclose(vectors, other_vectors, rtol=0, atol=atol)


def test_two_processes_build_the_index_one_process_builds(model_dir, archive, one_process_index, tmp_path):
    index_dir = tmp_path / "index"
    command = [
        *_index_command(2),
        "--model",
        str(model_dir),
        "--audio_dir",
        str(archive),
        "--index_dir",
        str(index_dir),
    ]
    result = subprocess.run(command, env=_environment(), capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Indexed 30 recordings (30 embedded, 0 reused)" in result.stdout
    assert "1 x not an audio file" in result.stdout and "1 x unreadable audio" in result.stdout
    assert "Recordings (process 1 of 2)" in result.stderr and "Hours (process 1 of 2)" in result.stderr
    shards = [json.loads((index_dir / "shards" / f"process-{i}.json").read_text()) for i in (0, 1)]
    assert all(shard["recordings"] for shard in shards)  # both processes embedded recordings
    # The launched processes run with their own thread counts, so some CPUs round a matrix product differently in the
    # last bit (seen: 6e-8 in 0.3 % of the values); anything else, a wrong window or recording, moves values by far more.
    _assert_same_index(index_dir, one_process_index, atol=1e-6)


def test_a_killed_run_resumes_without_lost_or_repeated_windows(
    model_dir, archive, one_process_index, tmp_path, capsys
):
    index_dir = tmp_path / "index"
    arguments = ["--model", str(model_dir), "--audio_dir", str(archive), "--index_dir", str(index_dir)]
    process = subprocess.Popen(
        [*_index_command(1), *arguments, "--batch_windows", "1", "--no_progress"],
        env=_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store, deadline = index_dir / "store", time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if store.is_dir() and len([path for path in store.iterdir() if path.suffix == ".safetensors"]) >= 5:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (index_dir / "current.json").exists()
    done = len([path for path in store.iterdir() if path.suffix == ".safetensors"])
    assert 5 <= done < 30

    index_archive.main([*arguments, "--no_progress"])
    assert f"Indexed 30 recordings ({30 - done} embedded, {done} reused)" in capsys.readouterr().out
    _assert_same_index(index_dir, one_process_index, atol=1e-6)  # the killed run encoded 1 window at a time, not 8


def test_search_cli_prints_moments_and_json(model_dir, one_process_index, capsys):
    common = ["--model", str(model_dir), "--index_dir", str(one_process_index), "--top_k", "4"]
    clip = SPEECH / "cards_005.flac"
    results = search_archive.main([*common, "--query", "the ace of spades", "--audio", str(clip), "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(results)) and list(printed) == ["the ace of spades", str(clip)]
    for moments in printed.values():
        assert 1 <= len(moments) <= 4
        assert [m["score"] for m in moments] == sorted((m["score"] for m in moments), reverse=True)
        for moment in moments:
            assert moment["file"].endswith(".flac") and moment["window_indices"]
            assert 0 <= moment["start"] < moment["end"]

    search_archive.main([*common, "--query", "young man"])
    table = capsys.readouterr().out.strip().splitlines()
    assert table[0] == "'young man'" and 1 <= len(table) - 1 <= 4
    assert all(
        re.fullmatch(r"  \d\. \S+\.flac  \d\d:\d\d:\d\d\.\d{3} - \S+  score [+-]\d\.\d{4}", line) for line in table[1:]
    )
    with pytest.raises(ValueError, match="no tokens"):
        search_archive.main([*common, "--query", "!!!"])


def test_indexing_from_a_manifest(model_dir, archive, tmp_path):
    manifest = tmp_path / "files.csv"
    shutil.copytree(archive / "cards", tmp_path / "cards")
    manifest.write_text("audio\ncards/cards_001.flac\ncards/cards_002.flac\nmissing.flac\n")
    index_dir = tmp_path / "index"
    index_archive.main(["--model", str(model_dir), "--manifest", str(manifest), "--index_dir", str(index_dir)])
    archive_index = ArchiveIndex.load(index_dir)
    assert [row[0] for row in archive_index.recordings()] == ["cards/cards_001.flac", "cards/cards_002.flac"]
    assert archive_index.skipped() == [("row 3 (missing.flac)", "missing audio file")]
