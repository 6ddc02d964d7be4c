"""Archive search and the shared embedding cache: indexing real speech, incremental updates, queries, corrupt files."""

import json
import logging
import shutil
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile
import torch
from test_moment_search import _model, speech_tokenizer

from modeling_vatt import VattForContrastivePretraining
from modeling_vatt.archive import ArchiveIndex, build_archive_index, list_recordings, shard_recordings
from modeling_vatt.audio_utils import load_audio
from modeling_vatt.classification_data import with_undecoded_audio
from modeling_vatt.embedding_cache import CorruptCacheError, load_arrays, save_arrays
from modeling_vatt.feature_extraction_vatt import VattFeatureExtractor
from modeling_vatt.linear_probe import cached_window_features
from modeling_vatt.moment_search import LongAudioIndex
from modeling_vatt.tokenization_vatt import VattTokenizer

SPEECH = Path(__file__).parent / "fixtures" / "speech"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def model() -> VattForContrastivePretraining:
    return _model()


@pytest.fixture(scope="module")
def tokenizer() -> VattTokenizer:
    return speech_tokenizer()


def make_archive(folder: Path) -> Path:
    """The ten spoken fixture recordings in two sub-folders, plus a text file and a `.flac` that is not audio."""
    for path in sorted(SPEECH.glob("*.flac")):
        target = folder / ("cards" if path.name.startswith("cards") else "novel") / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    (folder / "notes.txt").write_text("not audio")
    (folder / "novel" / "broken.flac").write_bytes(b"fLaC but not really" * 10)
    return folder


class ForwardCounter:
    """Counts audio-tower forward calls (windows batches encoded) while active."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __enter__(self):
        self.hook = self.model.audio_model.register_forward_hook(lambda *_: setattr(self, "calls", self.calls + 1))
        return self

    def __exit__(self, *exc):
        self.hook.remove()


def _windows(index_dir: Path) -> list[tuple]:
    archive = ArchiveIndex.load(index_dir)
    return archive.connection.execute("SELECT * FROM windows ORDER BY id").fetchall()


def test_archive_holds_every_window_of_every_readable_recording(model, tmp_path):
    folder = make_archive(tmp_path / "archive")
    summary = build_archive_index(model, VattFeatureExtractor(), folder, tmp_path / "index", progress=False)
    assert (summary.recordings, summary.embedded, summary.reused) == (10, 10, 0)
    assert summary.skips.counts == {"not an audio file": 1, "unreadable audio": 1}

    archive = ArchiveIndex.load(tmp_path / "index")
    assert sorted(archive.skipped()) == [("notes.txt", "not an audio file"), ("novel/broken.flac", "unreadable audio")]
    rows, vectors = _windows(tmp_path / "index"), archive.index.reconstruct_n(0, len(archive))
    assert len(rows) == len(archive) == summary.windows
    first = 0
    for name, content_hash, duration, count in archive.recordings():
        single = LongAudioIndex.build(model, None, folder / name, progress=False)
        assert count == len(single) and duration == pytest.approx(single.duration)
        block = rows[first : first + count]
        assert [row[0] for row in block] == list(range(first, first + count))  # FAISS id = row id, no gaps
        assert {row[1:3] for row in block} == {(name, content_hash)}
        np.testing.assert_array_equal([row[3] for row in block], single.starts)
        np.testing.assert_array_equal([row[4] for row in block], single.ends)
        np.testing.assert_array_equal(vectors[first : first + count], single.embeddings)
        first += count
    assert first == len(rows)


def test_sharding_balances_sizes_and_covers_every_recording_once(tmp_path):
    recordings, _ = list_recordings(make_archive(tmp_path / "archive"))
    shards = shard_recordings(recordings, 3)
    assert sorted(item.name for shard in shards for item in shard) == [item.name for item in recordings]
    loads = [sum(item.path.stat().st_size for item in shard) for shard in shards]
    assert max(loads) - min(loads) <= max(item.path.stat().st_size for item in recordings)


def test_incremental_runs_embed_only_new_and_changed_recordings(model, tmp_path):
    folder, index_dir = make_archive(tmp_path / "archive"), tmp_path / "index"
    build_archive_index(model, None, folder, index_dir, progress=False)
    with ForwardCounter(model) as unchanged:
        summary = build_archive_index(model, None, folder, index_dir, progress=False)
    assert unchanged.calls == 0 and (summary.embedded, summary.reused) == (0, 10)

    (folder / "cards" / "cards_001.flac").unlink()  # removed
    speech, rate = soundfile.read(SPEECH / "cards_002.flac", dtype="float32")
    soundfile.write(folder / "cards" / "cards_003.flac", speech[::-1].copy(), rate)  # changed
    shutil.copyfile(SPEECH / "cards_004.flac", folder / "added.flac")  # new, same content as cards/cards_004.flac
    soundfile.write(folder / "new.wav", speech[: rate // 2], rate)  # new
    with ForwardCounter(model) as changed:
        summary = build_archive_index(model, None, folder, index_dir, progress=False)
    assert (summary.recordings, summary.embedded, summary.reused) == (11, 3, 8)  # the changed and the new ones
    assert changed.calls > 0

    archive = ArchiveIndex.load(index_dir)
    files = {row[0]: row[1] for row in archive.recordings()}
    assert "cards/cards_001.flac" not in files and {"added.flac", "new.wav"} <= set(files)
    assert files["added.flac"] == files["cards/cards_004.flac"]
    # The store keeps one file per indexed recording; those of the removed and of the old changed one are gone.
    assert len(list((index_dir / "store").iterdir())) == len(files) == 11
    assert [path.name for path in index_dir.iterdir() if path.name.startswith(".")] == []
    assert len(_windows(index_dir)) == sum(row[3] for row in archive.recordings())


def test_text_and_audio_queries_return_merged_moments_across_the_archive(model, tokenizer, tmp_path):
    folder, index_dir = make_archive(tmp_path / "archive"), tmp_path / "index"
    build_archive_index(model, None, folder, index_dir, progress=False)
    archive = ArchiveIndex.load(index_dir)
    rows, vectors = _windows(index_dir), archive.index.reconstruct_n(0, len(archive))
    queries = ["the ace of spades", "he was not an ill disposed young man"]
    for query, moments in zip(queries, archive.search(model, tokenizer, queries, top_k=6)):
        brute = vectors @ archive_query(model, tokenizer, query)  # exact scores of every window
        best = set(np.argsort(-brute)[:6].tolist())
        assert {window for moment in moments for window in moment.window_indices} == best
        assert [m.score for m in moments] == sorted((m.score for m in moments), reverse=True)
        for moment in moments:
            run = list(moment.window_indices)
            assert run == list(range(run[0], run[-1] + 1)) and {rows[i][1] for i in run} == {moment.file}
            assert (moment.start, moment.end) == (rows[run[0]][3], rows[run[-1]][4])
            assert moment.score == pytest.approx(float(brute[run].max()), abs=1e-5)
    unmerged = archive.search(model, tokenizer, queries[0], top_k=6, merge_adjacent=False)
    assert [len(moment.window_indices) for moment in unmerged] == [1] * 6
    # FAISS's own flat search and an approximate index (float16 storage, every list probed) agree with it.
    query = archive_query(model, tokenizer, queries[0])[None]
    faiss_ids = archive.index.search(query, 6)[1][0]
    assert [moment.window_indices for moment in unmerged] == [(int(i),) for i in faiss_ids]
    build_archive_index(model, None, folder, tmp_path / "approximate", faiss_factory="IVF4,SQfp16", progress=False)
    approximate = ArchiveIndex.load(tmp_path / "approximate", search_parameters="nprobe=4")
    assert approximate.info["faiss_factory"] == "IVF4,SQfp16" and len(approximate) == len(archive)
    found = approximate.search(model, tokenizer, queries[0], top_k=6, merge_adjacent=False)
    assert [(m.window_indices, m.file) for m in found] == [(m.window_indices, m.file) for m in unmerged]
    assert [m.score for m in found] == pytest.approx([m.score for m in unmerged], abs=1e-3)

    # A clip that is exactly the first window of a recording finds that window first, with cosine 1.
    audio = load_audio(folder / "novel" / "sense_and_sensibility_0880.flac")
    clip = audio[: model.config.audio_config.window_length * model.config.audio_config.patch_size]
    best = archive.search_audio(model, None, clip, sampling_rate=48000, top_k=3)[0]
    assert (best.file, best.start) == ("novel/sense_and_sensibility_0880.flac", 0.0)
    assert best.score == pytest.approx(1.0, abs=1e-4)

    with pytest.raises(ValueError, match="different model"):
        archive.search(_model(seed=1), tokenizer, queries[0])
    with pytest.raises(ValueError, match="'!!!' has no tokens"):
        archive.search(model, tokenizer, "!!!")


def archive_query(model, tokenizer, query: str) -> np.ndarray:
    """A query's normalised text embedding, computed directly with the model."""
    with torch.no_grad():
        text = model.get_text_features(**tokenizer([query], return_tensors="pt")).pooler_output[0]
    return torch.nn.functional.normalize(text, dim=-1).numpy()


def _corrupt(path: Path, how: str, donor: Path | None = None) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "garbage":
        path.write_bytes(b"\x00garbage" * 50)
    elif how == "other content":  # a well-formed cache file of another recording under this name
        shutil.copyfile(donor, path)
    else:  # "edited": one embedding changed, the header (and its checksum) kept
        arrays, metadata = load_arrays(path)
        arrays["embeddings"][0, 0] += 0.5
        header = path.read_bytes()[: 8 + int.from_bytes(path.read_bytes()[:8], "little")]
        save_arrays(path, arrays, metadata)
        path.write_bytes(header + path.read_bytes()[len(header) :])


@pytest.mark.parametrize("how", ["truncated", "garbage", "other content", "edited"])
def test_a_corrupt_long_audio_cache_is_named_and_rebuilt(model, tmp_path, caplog, how):
    recording, donor = SPEECH / "cards_003.flac", SPEECH / "cards_002.flac"
    built = LongAudioIndex.build(model, None, recording, cache_dir=tmp_path, progress=False)
    donor_path = LongAudioIndex.build(model, None, donor, cache_dir=tmp_path / "donor", progress=False).cache_path
    _corrupt(built.cache_path, how, donor_path)
    if how != "other content":  # a valid index of another recording loads; only `build` knows what it expects
        with pytest.raises(CorruptCacheError, match=str(built.cache_path)):
            LongAudioIndex.load(built.cache_path)

    with ForwardCounter(model) as counter, caplog.at_level(logging.WARNING):
        rebuilt = LongAudioIndex.build(model, None, recording, cache_dir=tmp_path, progress=False)
    assert not rebuilt.from_cache and counter.calls > 0
    assert f"{built.cache_path}" in caplog.text and "Rebuilding it" in caplog.text
    np.testing.assert_array_equal(rebuilt.embeddings, built.embeddings)
    assert LongAudioIndex.build(model, None, recording, cache_dir=tmp_path, progress=False).from_cache


def test_an_unwritable_cache_folder_fails_before_any_embedding(model, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with ForwardCounter(model) as counter:
        with pytest.raises(PermissionError, match="Cannot write cache files in .*a_file"):
            LongAudioIndex.build(model, None, SPEECH / "cards_001.flac", cache_dir=blocker / "cache", progress=False)
        with pytest.raises(PermissionError, match="Cannot write cache files in .*a_file"):
            build_archive_index(model, None, SPEECH, blocker / "index", progress=False)
    assert counter.calls == 0


def test_index_files_of_different_versions_are_never_mixed(model, tmp_path):
    folder, index_dir = make_archive(tmp_path / "archive"), tmp_path / "index"
    build_archive_index(model, None, folder, index_dir, progress=False)
    old_version = json.loads((index_dir / "current.json").read_text())["version"]
    old_table = (index_dir / old_version / "windows.sqlite").read_bytes()
    shutil.copyfile(SPEECH / "cards_002.flac", folder / "extra.flac")
    build_archive_index(model, None, folder, index_dir, progress=False)
    version = json.loads((index_dir / "current.json").read_text())["version"]
    assert version != old_version and not (index_dir / old_version).exists()  # the old version is deleted

    # A crash that left the old table beside the new FAISS index (or a stale pointer) is detected, not searched.
    (index_dir / version / "windows.sqlite").write_bytes(old_table)
    with pytest.raises(ValueError, match="disagree"):
        ArchiveIndex.load(index_dir)
    # Leftovers of a killed merge (a half-written version folder) are ignored and cleaned by the next run.
    (index_dir / f".{'0' * 32}.tmp").mkdir()
    summary = build_archive_index(model, None, folder, index_dir, progress=False)
    assert summary.embedded == 0 and len(ArchiveIndex.load(index_dir)) == summary.windows
    assert sorted(path.name for path in index_dir.iterdir()) == sorted(
        ["current.json", "shards", "store", json.loads((index_dir / "current.json").read_text())["version"]]
    )


def test_manifest_source_and_clear_errors(model, tmp_path):
    folder = make_archive(tmp_path / "archive")
    manifest = folder / "files.jsonl"
    lines = [{"audio": "cards/cards_001.flac"}, {"audio": "missing.flac"}, {"audio": str(SPEECH / "cards_002.flac")}]
    manifest.write_text("\n".join(json.dumps(line) for line in lines))
    recordings, skipped = list_recordings(manifest)
    assert [item.name for item in recordings] == [str(SPEECH / "cards_002.flac"), "cards/cards_001.flac"]
    assert skipped == [("row 2 (missing.flac)", "missing audio file")]
    with pytest.raises(ValueError, match="No audio column 'path'"):
        list_recordings(manifest, audio_column="path")
    dataset = datasets.Dataset.from_dict({"audio": [str(folder / "cards" / "cards_001.flac"), str(tmp_path / "no")]})
    from_dataset, skipped = list_recordings(with_undecoded_audio(dataset, "audio"))
    assert [item.path for item in from_dataset] == [folder / "cards" / "cards_001.flac"] and len(skipped) == 1
    with pytest.raises(FileNotFoundError, match="neither a folder"):
        list_recordings(tmp_path / "nothing.csv")
    with pytest.raises(FileNotFoundError, match="No archive index"):
        ArchiveIndex.load(tmp_path)


def test_retrieve_example_keeps_one_cache_file_and_skips_unreadable_files(tmp_path, capsys):
    model_dir = tmp_path / "model"
    _model().save_pretrained(model_dir)
    VattFeatureExtractor().save_pretrained(model_dir)
    folder = make_archive(tmp_path / "archive")
    sys.path.insert(0, str(EXAMPLES))
    try:
        import retrieve
    finally:
        sys.path.remove(str(EXAMPLES))
    argv = ["--model_name_or_path", str(model_dir), "--audio_dir", str(folder), "--index_dir", str(tmp_path / "cache")]
    first = retrieve.main([*argv, "--similar_to", str(folder / "cards" / "cards_001.flac")])
    output = capsys.readouterr().out
    assert "Indexed 10 recordings (10 encoded, 0 from the cache)." in output and "1 x unreadable audio" in output
    (cache_file,) = (tmp_path / "cache").iterdir()
    _corrupt(cache_file, "truncated")
    again = retrieve.main([*argv, "--similar_to", str(folder / "cards" / "cards_001.flac")])
    output = capsys.readouterr().out
    assert f"{cache_file}" in output and "Indexed 10 recordings (10 encoded, 0 from the cache)." in output
    assert again == first
    retrieve.main([*argv, "--similar_to", str(folder / "cards" / "cards_001.flac")])
    assert "Indexed 10 recordings (0 encoded, 10 from the cache)." in capsys.readouterr().out


def test_probe_feature_cache_rebuilds_a_corrupt_file_and_checks_its_folder_first(model, tmp_path, caplog):
    feature_extractor = VattFeatureExtractor()
    clips = [load_audio(path)[:20_000] for path in sorted(SPEECH.glob("cards_*.flac"))]
    calls = []

    def batches():
        calls.append(1)
        return [feature_extractor(clips, sampling_rate=48000, return_tensors="pt")]

    def features():
        return cached_window_features(model.audio_model, batches, tmp_path / "cache", "speech", {"crop": None})

    first, path, hit = features()
    assert not hit and len(calls) == 1 and first.features.shape[:2] == (5, 4)
    path.write_bytes(path.read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        again, again_path, hit = features()
    assert not hit and again_path == path and len(calls) == 2 and f"{path}" in caplog.text
    assert torch.equal(again.features, first.features) and features()[2]

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(PermissionError, match="a_file"):
        cached_window_features(model.audio_model, batches, blocker / "cache", "speech")
    assert len(calls) == 2  # nothing was computed for the unwritable folder
