"""Windowed encoding of long recordings and transcripts: windows, chunking, padding masks, stitching, projections."""

import pytest
import torch
from transformers import pipeline

from modeling_vatt import VattAudioModel, VattConfig, VattForContrastivePretraining, VattTextConfig, VattTextModel
from modeling_vatt.feature_extraction_vatt import VattFeatureExtractor
from modeling_vatt.tokenization_vatt import VattTokenizer

PATCH = 128  # samples per patch; the tiny preset's table is 50 patches, so a window is 6,400 samples
WINDOW = 50


def _audio(batch: int, samples: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, samples, generator=generator) - 0.5) * 0.5


def _audio_model(overlap: int = 0) -> VattAudioModel:
    torch.manual_seed(0)
    config = VattConfig.from_preset("tiny").audio_config
    config.window_overlap = overlap
    return VattAudioModel(config).eval()


def _text_model(window: int = 16, overlap: int = 0, **kwargs) -> VattTextModel:
    torch.manual_seed(0)
    config = VattTextConfig(**{**VattTextConfig.PRESETS["tiny"], **kwargs})
    if window:
        config.window_length, config.window_overlap = window, overlap
    return VattTextModel(config).eval()


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, atol=2e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------------------
# Audio
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlap", [0, 10])
def test_audio_windows_equal_encoding_each_window_alone(overlap):
    model = _audio_model(overlap)
    num_patches = 170
    audio = _audio(1, num_patches * PATCH + 57)  # a trailing partial patch is dropped, as in unwindowed encoding
    with torch.no_grad():
        output = model(audio)
        hop = WINDOW - overlap
        starts = list(range(0, num_patches - WINDOW + hop, hop))
        expected_spans = [[start * PATCH, min(start + WINDOW, num_patches) * PATCH] for start in starts]
        assert output.window_spans.tolist() == expected_spans
        assert output.window_pooler_output.shape == (1, len(starts), 64)
        for index, (start, end) in enumerate(expected_spans):
            alone = model(audio[:, start:end]).pooler_output  # the tail window is shorter: encoded without padding
            _close(output.window_pooler_output[0, index], alone[0])
    tail_share = (num_patches - starts[-1]) / WINDOW
    _close(output.window_weights, torch.tensor([[1.0] * (len(starts) - 1) + [tail_share]]))


@pytest.mark.parametrize("overlap", [0, 10])
@pytest.mark.parametrize("windows_per_batch", [1, 2])
def test_chunked_windows_equal_all_windows_at_once(overlap, windows_per_batch):
    audio = _audio(2, 230 * PATCH)
    mask = torch.ones_like(audio, dtype=torch.long)
    mask[1, 140 * PATCH :] = 0
    with torch.no_grad():
        model = _audio_model(overlap)
        all_at_once = model(audio, audio_attention_mask=mask, return_window_features=True, windows_per_batch=64)
        chunked = model(
            audio, audio_attention_mask=mask, return_window_features=True, windows_per_batch=windows_per_batch
        )
    assert all_at_once.window_pooler_output.shape[1] >= 5 > windows_per_batch
    for name in ("pooler_output", "window_pooler_output", "window_weights", "last_hidden_state"):
        _close(getattr(chunked, name), getattr(all_at_once, name))
    assert torch.equal(chunked.window_spans, all_at_once.window_spans)


@pytest.mark.parametrize("overlap", [0, 10])
def test_a_padded_batch_gives_the_shorter_recording_its_outputs_alone(overlap):
    model = _audio_model(overlap)
    short_patches, long_patches = 130, 200
    long_audio, short_audio = _audio(1, long_patches * PATCH, seed=1), _audio(1, short_patches * PATCH, seed=2)
    batch = torch.zeros(2, long_patches * PATCH)
    batch[0], batch[1, : short_patches * PATCH] = long_audio[0], short_audio[0]
    mask = torch.zeros_like(batch, dtype=torch.long)
    mask[0], mask[1, : short_patches * PATCH] = 1, 1
    with torch.no_grad():
        alone = model(short_audio, return_window_features=True)
        batched = model(batch, audio_attention_mask=mask, return_window_features=True)
        long_alone = model(long_audio).pooler_output
    num_own = alone.window_pooler_output.shape[1]
    _close(batched.pooler_output[1], alone.pooler_output[0])
    _close(batched.pooler_output[0], long_alone[0])
    _close(batched.window_pooler_output[1, :num_own], alone.window_pooler_output[0])
    _close(batched.window_weights[1, :num_own], alone.window_weights[0])
    assert batched.window_weights[1, num_own:].eq(0).all(), "windows the short recording does not have must weigh 0"
    _close(batched.last_hidden_state[1, : 1 + short_patches], alone.last_hidden_state[0])
    assert batched.attention_mask[1].sum() == 1 + short_patches


def test_padded_final_window_is_weighted_by_its_real_share_and_does_not_bias_the_pooled_output():
    model = _audio_model()
    audio = _audio(1, 120 * PATCH)  # windows of 50, 50 and 20 real patches
    padded = torch.cat([audio, torch.zeros(1, 90 * PATCH)], dim=1)
    mask = torch.zeros_like(padded, dtype=torch.long)
    mask[:, : audio.shape[1]] = 1
    with torch.no_grad():
        output = model(audio)
        padded_output = model(padded, audio_attention_mask=mask)
        unmasked_output = model(padded)
        tail_alone = model(audio[:, 100 * PATCH :]).pooler_output

    _close(output.window_weights, torch.tensor([[1.0, 1.0, 0.4]]))
    windows = output.window_pooler_output[0]
    _close(windows[2], tail_alone[0])
    _close(output.pooler_output[0], (windows[0] + windows[1] + 0.4 * windows[2]) / 2.4)
    # Trailing padding (a batch-mate's length) changes nothing once it is masked...
    _close(padded_output.pooler_output, output.pooler_output)
    _close(padded_output.window_weights, torch.tensor([[1.0, 1.0, 0.4, 0.0, 0.0]]))
    # ...while the same zeros taken as real audio would move the pooled output.
    assert (unmasked_output.pooler_output - output.pooler_output).abs().max() > 1e-3


@pytest.mark.parametrize("overlap", [0, 10])
def test_stitched_features_equal_the_window_features(overlap):
    model = _audio_model(overlap)
    num_patches = 170
    audio = _audio(1, num_patches * PATCH)
    with torch.no_grad():
        output = model(audio, return_window_features=True)
        windows = [model(audio[:, start:end]).last_hidden_state[0, 1:] for start, end in output.window_spans.tolist()]
    assert output.last_hidden_state.shape == (1, 1 + num_patches, 64)
    _close(output.last_hidden_state[0, 0], output.pooler_output[0])
    total, count = torch.zeros(num_patches, 64), torch.zeros(num_patches, 1)
    for (start, end), features in zip((output.window_spans // PATCH).tolist(), windows):
        total[start:end] += features
        count[start:end] += 1
    assert count.max() == (2 if overlap else 1)
    _close(output.last_hidden_state[0, 1:], total / count)  # overlapping patches: mean of their windows


def test_long_input_without_windowing_or_interpolation_raises():
    model = _audio_model()
    model.config.long_input_mode = "full"
    with pytest.raises(ValueError, match="position table"):
        model(_audio(1, 60 * PATCH))


# ----------------------------------------------------------------------------------------------------------------------
# Text
# ----------------------------------------------------------------------------------------------------------------------


def _ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(1, 1000, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"overlap": 0},
        {"overlap": 4},
        {"window": 0, "position_embedding_type": "absolute", "position_interpolation": "none"},  # table length
    ],
    ids=["relative", "relative-overlap", "absolute-table"],
)
def test_long_text_windows_equal_their_separate_encodings(kwargs):
    model = _text_model(**kwargs)
    ids = _ids(1, 45)
    with torch.no_grad():
        output = model(ids)
        separate = [model(ids[:, start:end]).pooler_output[0] for start, end in output.window_spans.tolist()]
    hop = 16 - kwargs.get("overlap", 0)
    assert output.window_spans[:, 0].tolist() == list(range(0, 45 - 16 + hop, hop))
    assert output.window_spans[-1, 1] == 45
    _close(output.window_pooler_output[0], torch.stack(separate))
    share = output.window_weights[0]
    _close(output.pooler_output[0], (share[:, None] * torch.stack(separate)).sum(0) / share.sum())


@pytest.mark.parametrize("overlap", [0, 4])
def test_a_padded_text_batch_gives_the_shorter_transcript_its_outputs_alone(overlap):
    model = _text_model(overlap=overlap)
    short, long = _ids(1, 28, seed=1), _ids(1, 40, seed=2)
    batch = torch.cat([long, torch.cat([short, torch.zeros(1, 12, dtype=torch.long)], dim=1)])
    with torch.no_grad():
        alone, batched = model(short), model(batch)
    num_own = alone.window_pooler_output.shape[1]
    _close(batched.pooler_output[1], alone.pooler_output[0])
    _close(batched.window_pooler_output[1, :num_own], alone.window_pooler_output[0])
    assert batched.window_weights[1, num_own:].eq(0).all()


# ----------------------------------------------------------------------------------------------------------------------
# Contrastive model
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def contrastive_model() -> VattForContrastivePretraining:
    torch.manual_seed(0)
    config = VattConfig.from_preset("tiny", text_config={"window_length": 16})
    return VattForContrastivePretraining(config).eval()


def test_get_features_project_every_window_of_a_long_input(contrastive_model):
    audio, ids = _audio(1, 170 * PATCH), _ids(1, 40)
    with torch.no_grad():
        audio_features = contrastive_model.get_audio_features(audio)
        audio_tower = contrastive_model.audio_model(audio)
        text_features = contrastive_model.get_text_features(ids)
        text_tower = contrastive_model.text_model(ids)
    assert audio_features.window_pooler_output.shape == (1, 4, 32)
    _close(audio_features.window_pooler_output, contrastive_model.audio_projection(audio_tower.window_pooler_output))
    _close(audio_features.pooler_output, contrastive_model.audio_projection(audio_tower.pooler_output))
    assert torch.equal(audio_features.window_spans, audio_tower.window_spans)
    assert text_features.window_pooler_output.shape == (1, 3, 32)
    _close(text_features.window_pooler_output, contrastive_model.text_projection(text_tower.window_pooler_output))


def test_zero_shot_scoring_of_a_long_recording(contrastive_model):
    audio = _audio(1, 20 * WINDOW * PATCH)  # 20 windows, encoded 16 at a time
    labels = _ids(3, 6)
    with torch.no_grad():
        output = contrastive_model(input_ids=labels, input_values=audio)
        audio_embeds = contrastive_model.get_audio_features(audio).pooler_output
        text_embeds = contrastive_model.get_text_features(labels).pooler_output
    assert output.logits_per_audio.shape == (1, 3)
    assert output.audio_model_output.window_pooler_output.shape == (1, 20, 32)
    cosine = torch.nn.functional.cosine_similarity(audio_embeds, text_embeds)
    _close(output.logits_per_audio[0], contrastive_model.logit_scale.exp() * cosine)
    assert torch.isfinite(output.logits_per_audio.softmax(-1)).all()


def test_zero_shot_pipeline_on_a_long_recording(contrastive_model):
    labels = ["a dog barking", "a man reading aloud", "rain on a roof"]
    tokenizer = VattTokenizer.from_corpus(labels, vocab_size=1000)
    feature_extractor = VattFeatureExtractor()
    classifier = pipeline(
        "zero-shot-audio-classification",
        model=contrastive_model,
        tokenizer=tokenizer,
        feature_extractor=feature_extractor,
    )
    audio = _audio(1, 48000 * 2)[0].numpy()  # 2 s: 15 windows of the tiny model's 50-patch table
    predictions = classifier(audio, candidate_labels=labels, hypothesis_template="{}")

    inputs = feature_extractor(audio, sampling_rate=48000, return_tensors="pt")
    ids = tokenizer(labels, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = contrastive_model(**inputs, **ids).logits_per_audio[0]
    assert inputs["input_values"].shape[1] > 14 * WINDOW * PATCH
    expected = dict(zip(labels, logits.softmax(-1).tolist()))
    assert sorted(p["label"] for p in predictions) == sorted(labels)
    for prediction in predictions:
        assert prediction["score"] == pytest.approx(expected[prediction["label"]], abs=1e-5)


@pytest.mark.parametrize("flag", ["output_hidden_states", "output_attentions"])
def test_per_layer_outputs_of_a_windowed_input_raise_instead_of_mixing_window_batches(flag):
    model = _audio_model()
    with pytest.raises(ValueError, match="window"):
        model(_audio(1, 170 * PATCH), **{flag: True})
