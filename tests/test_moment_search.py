"""Finding moments in a long recording: streamed window embeddings, the on-disk cache, search and the CLI."""

import re
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torch.nn.functional as F

from modeling_vatt import VattConfig, VattForContrastivePretraining
from modeling_vatt.audio_utils import load_audio
from modeling_vatt.feature_extraction_vatt import VattFeatureExtractor
from modeling_vatt.moment_search import LongAudioIndex, format_timestamp
from modeling_vatt.processing_vatt import VattProcessor
from modeling_vatt.tokenization_vatt import VattTokenizer

SPEECH = Path(__file__).parent / "fixtures" / "speech"
PASSAGES = ["sense_and_sensibility_0870", "sense_and_sensibility_0880", "cards_005", "sense_and_sensibility_0930"]
TIMESTAMP = re.compile(r"\d\d:\d\d:\d\d\.\d\d\d")
RATE = 48000


def _model(overlap: int = 10, seed: int = 0) -> VattForContrastivePretraining:
    torch.manual_seed(seed)
    config = VattConfig.from_preset("tiny", audio_config={"window_overlap": overlap})
    return VattForContrastivePretraining(config).eval()


@pytest.fixture(scope="module")
def model() -> VattForContrastivePretraining:
    return _model()


def speech_tokenizer() -> VattTokenizer:
    """A word-level tokenizer of the speech fixtures' transcripts."""
    transcripts = [
        line.split("\t")[1] for line in (SPEECH / "transcripts.tsv").read_text().splitlines() if "\t" in line
    ]
    return VattTokenizer.from_corpus(transcripts, vocab_size=1000)


@pytest.fixture(scope="module")
def tokenizer() -> VattTokenizer:
    return speech_tokenizer()


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    """Four spoken passages (16 kHz) with 0.5 s of silence between them, as a stereo FLAC of about 19 s."""
    silence = np.zeros(8000, dtype=np.float32)
    parts = []
    for name in PASSAGES:
        speech, rate = soundfile.read(SPEECH / f"{name}.flac", dtype="float32")
        assert rate == 16000
        parts += [speech, silence]
    mono = np.concatenate(parts[:-1])
    path = tmp_path_factory.mktemp("long") / "passages.flac"
    soundfile.write(path, np.stack([mono, 0.5 * mono], axis=1), 16000)
    return path


def _whole_recording_windows(model, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """Normalised window embeddings, real shares and spans of `audio` encoded at once by the model."""
    inputs = VattFeatureExtractor()(audio, sampling_rate=RATE, return_tensors="pt")
    with torch.no_grad():
        output = model.get_audio_features(**inputs)
    embeddings = F.normalize(output.window_pooler_output[0], dim=-1).numpy()
    return embeddings, output.window_weights[0].numpy(), output.window_spans


def test_streamed_index_equals_encoding_the_whole_recording_at_once(model, recording):
    index = LongAudioIndex.build(model, VattFeatureExtractor(), recording, batch_windows=7, progress=False)
    audio = load_audio(recording)  # mixed down and resampled to 48 kHz in one go
    embeddings, window_weights, spans = _whole_recording_windows(model, audio)

    assert len(index) == len(embeddings) > 100
    np.testing.assert_allclose(index.embeddings, embeddings, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(index.embeddings, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(index.window_weights, window_weights, atol=1e-6)
    np.testing.assert_allclose(index.starts, spans[:, 0].numpy() / RATE)
    np.testing.assert_allclose(index.ends, np.minimum(spans[:, 1].numpy(), len(audio)) / RATE)
    assert index.duration == pytest.approx(len(audio) / RATE)
    assert index.ends[-1] == pytest.approx(index.duration)
    assert index.metadata["audio_fingerprint"] and index.metadata["model_name"]
    assert (index.metadata["window_length"], index.metadata["hop_length"]) == (50, 40)


def test_arrays_custom_windows_and_a_recording_shorter_than_one_window(model, recording):
    audio_16k, _ = soundfile.read(recording, dtype="float32")
    from_file = LongAudioIndex.build(model, None, recording, progress=False)
    from_array = LongAudioIndex.build(model, None, audio_16k.T, sampling_rate=16000, progress=False)
    np.testing.assert_allclose(from_array.embeddings, from_file.embeddings, atol=1e-6)

    # Whole-recording normalisation (`do_normalize=True`) is streamed too: statistics first, then the windows.
    normalizing = VattFeatureExtractor(do_normalize=True)
    normalized = LongAudioIndex.build(model, normalizing, recording, progress=False)
    inputs = normalizing(load_audio(recording), sampling_rate=RATE, return_tensors="pt")
    with torch.no_grad():
        expected = F.normalize(model.get_audio_features(**inputs).window_pooler_output[0], dim=-1).numpy()
    np.testing.assert_allclose(normalized.embeddings, expected, atol=5e-5)
    assert np.abs(normalized.embeddings - from_file.embeddings).max() > 1e-3

    # A custom layout equals the model's own windowing with that window length and overlap.
    custom = LongAudioIndex.build(
        model, None, recording, window_seconds=30 * 128 / RATE, hop_seconds=20 * 128 / RATE, progress=False
    )
    reference = _model(overlap=10)
    reference.config.audio_config.window_length = 30
    embeddings, _, _ = _whole_recording_windows(reference, load_audio(recording))
    np.testing.assert_allclose(custom.embeddings, embeddings, atol=2e-5)

    short = load_audio(recording)[: 30 * 128 + 50]
    index = LongAudioIndex.build(model, None, short, sampling_rate=RATE, progress=False)
    inputs = VattFeatureExtractor()(short, sampling_rate=RATE, return_tensors="pt")
    with torch.no_grad():
        expected = F.normalize(model.get_audio_features(**inputs).pooler_output, dim=-1).numpy()
    assert len(index) == 1 and index.window_weights[0] == pytest.approx(31 / 50)
    np.testing.assert_allclose(index.embeddings, expected, atol=2e-5)

    # A model left in training mode is encoded in evaluation mode (no dropout, no DropToken), then left as it was.
    training = _model().train()
    from_training = LongAudioIndex.build(training, None, recording, progress=False)
    assert training.training
    np.testing.assert_allclose(from_training.embeddings, from_file.embeddings, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"window_seconds": 1.0}, "window_seconds"),
        ({"hop_seconds": 1.0}, "hop_seconds"),
        ({"batch_windows": 0}, "batch_windows"),
    ],
)
def test_bad_build_arguments_raise(model, recording, kwargs, message):
    with pytest.raises(ValueError, match=message):
        LongAudioIndex.build(model, None, recording, progress=False, **kwargs)


def test_cache_round_trip_and_reuse_without_recomputation(model, recording, tmp_path):
    calls = []
    hook = model.audio_model.register_forward_hook(lambda *_: calls.append(1))
    try:
        built = LongAudioIndex.build(model, None, recording, cache_dir=tmp_path, progress=False)
        assert calls and not built.from_cache
        calls.clear()
        reused = LongAudioIndex.build(model, None, recording, cache_dir=tmp_path, progress=False)
    finally:
        hook.remove()
    assert reused.from_cache and not calls
    for name in ("embeddings", "starts", "ends", "window_weights"):
        np.testing.assert_array_equal(getattr(reused, name), getattr(built, name))
    assert reused.metadata == built.metadata
    assert [path.suffix for path in tmp_path.iterdir()] == [".safetensors"]  # the atomic write left no temporary file

    saved = built.save(tmp_path / "copy" / "index.safetensors")
    np.testing.assert_array_equal(LongAudioIndex.load(saved).embeddings, built.embeddings)

    # Another layout or other weights never reuse these embeddings.
    other_layout = LongAudioIndex.build(model, None, recording, hop_seconds=0.1, cache_dir=tmp_path, progress=False)
    other_model = LongAudioIndex.build(_model(seed=1), None, recording, cache_dir=tmp_path, progress=False)
    assert not other_layout.from_cache and not other_model.from_cache
    assert len(list(tmp_path.glob("*.safetensors"))) == 3


def test_search_returns_sorted_moments_inside_the_recording(model, tokenizer, recording):
    index = LongAudioIndex.build(model, None, recording, progress=False)
    queries = ["he was not an ill disposed young man", "the ace of spades"]
    results = index.search(model, tokenizer, queries, top_k=4)
    scores = index.scores(model, tokenizer, queries)
    assert len(results) == 2
    for moments, row in zip(results, scores):
        assert 1 <= len(moments) <= 4
        assert [moment.score for moment in moments] == sorted((moment.score for moment in moments), reverse=True)
        chosen = [window for moment in moments for window in moment.window_indices]
        assert len(chosen) == len(set(chosen))
        # The moments cover exactly the four best-scoring windows, in runs of consecutive windows.
        assert set(chosen) == set(np.argsort(-row, kind="stable")[:4].tolist())
        for moment in moments:
            run = list(moment.window_indices)
            assert run == list(range(run[0], run[-1] + 1))
            assert moment.score == pytest.approx(float(row[run].max()))
            assert 0 <= moment.start < moment.end <= index.duration + 1e-9
            assert (moment.start, moment.end) == (index.starts[run[0]], index.ends[run[-1]])
            assert TIMESTAMP.fullmatch(format_timestamp(moment.start))

    processor = VattProcessor(VattFeatureExtractor(), tokenizer)  # a processor works wherever a tokenizer does
    assert index.search(model, processor, queries, top_k=4) == results
    unmerged = index.search(model, tokenizer, queries[0], top_k=4, merge_adjacent=False)
    assert [moment.window_indices for moment in unmerged] == [(int(i),) for i in np.argsort(-scores[0])[:4]]
    assert format_timestamp(3725.5) == "01:02:05.500" and format_timestamp(0.0004) == "00:00:00.000"

    with pytest.raises(ValueError, match="different model"):
        index.search(_model(seed=1), tokenizer, queries[0])
    with pytest.raises(ValueError, match="non-empty"):
        index.search(model, tokenizer, "  ")
    with pytest.raises(ValueError, match="'!!!' has no tokens"):  # not a score against an empty text
        index.search(model, tokenizer, ["the ace of spades", "!!!"])


def test_cli_prints_timestamps_and_reuses_the_cache(model, tokenizer, recording, tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    try:
        import search_long_audio
    finally:
        sys.path.pop(0)
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    VattFeatureExtractor().save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    argv = ["--model", str(model_dir), "--audio", str(recording), "--query", "the ace of spades"]
    argv += ["--query", "young man", "--top_k", "3", "--cache_dir", str(tmp_path / "cache")]

    search_long_audio.main(argv)
    first = capsys.readouterr().out
    search_long_audio.main(argv)
    second = capsys.readouterr().out
    assert "embedded in" in first and "reused the cached embeddings" in second
    assert first.count("Query:") == 2
    ranked = re.findall(rf"^  \d\. ({TIMESTAMP.pattern}) - ({TIMESTAMP.pattern})  score", first, flags=re.M)
    assert 2 <= len(ranked) <= 6
    assert first.split("Query:", 1)[1] == second.split("Query:", 1)[1]  # same moments from the cache


def _synthetic_file(path: Path, minutes: int) -> Path:
    """A 16 kHz noise recording written in 10 s blocks, so writing it costs no more memory than reading it."""
    rng = np.random.default_rng(minutes)
    with soundfile.SoundFile(path, "w", 16000, 1, format="FLAC") as handle:
        for _ in range(minutes * 6):
            handle.write((rng.standard_normal(160000) * 0.1).astype(np.float32))
    return path


def test_building_an_index_keeps_memory_bounded_independent_of_length(tmp_path):
    """
    Python-heap peak (tracemalloc sees numpy buffers: decoded blocks, resampled audio, window batches) while indexing
    2 and 10 minutes: 10 minutes decoded at 48 kHz would take 115 MB; the index may only grow by its embeddings.
    """
    model = _model(overlap=0)
    peaks = {}
    for minutes in (2, 10):
        path = _synthetic_file(tmp_path / f"noise_{minutes}.flac", minutes)
        tracemalloc.start()
        index = LongAudioIndex.build(model, None, path, batch_windows=32, progress=False)
        peaks[minutes] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert len(index) == minutes * 60 * RATE // (50 * 128)
    embedding_growth = (peaks[10] - peaks[2]) - 8 * 32 * 4 * 60 * RATE // (50 * 128)  # 8 extra minutes of embeddings
    assert peaks[10] < 20e6, peaks
    assert embedding_growth < 1e6, peaks


def test_adjacent_top_windows_merge_into_one_moment(model, tokenizer, recording):
    """An index whose window embeddings have known cosine scores against a query: `a q + sqrt(1 - a^2) u`, u ⟂ q."""
    built = LongAudioIndex.build(model, None, recording, progress=False)
    query = "he might even have been made amiable himself"
    tokens = tokenizer([query], return_tensors="pt")
    with torch.no_grad():
        direction = F.normalize(model.get_text_features(**tokens).pooler_output, dim=-1)[0].numpy()
    orthogonal = np.random.default_rng(0).standard_normal(direction.shape).astype(np.float32)
    orthogonal -= (orthogonal @ direction) * direction
    orthogonal /= np.linalg.norm(orthogonal)
    wanted = np.array([0.1, 0.9, 0.8, 0.2, 0.7, 0.3, 0.85, 0.0], dtype=np.float32)
    embeddings = wanted[:, None] * direction + np.sqrt(1 - wanted[:, None] ** 2) * orthogonal
    starts = np.arange(8) * 0.5
    index = LongAudioIndex(embeddings, starts, starts + 0.5, np.ones(8, dtype=np.float32), built.metadata)

    merged = index.search(model, tokenizer, query, top_k=4)
    assert [(m.window_indices, m.start, m.end) for m in merged] == [
        ((1, 2), 0.5, 1.5),
        ((6,), 3.0, 3.5),
        ((4,), 2.0, 2.5),
    ]
    assert [m.score for m in merged] == pytest.approx([0.9, 0.85, 0.7], abs=1e-5)
    separate = index.search(model, tokenizer, query, top_k=4, merge_adjacent=False)
    assert [m.window_indices for m in separate] == [(1,), (6,), (2,), (4,)]
