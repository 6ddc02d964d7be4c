"""Tests for VattProcessor on real speech, Auto-class loading and remote-code loading of all three classes."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from helpers import run_without_package
from transformers import AutoFeatureExtractor, AutoProcessor, AutoTokenizer

from modeling_vatt.audio_utils import load_audio
from modeling_vatt.configuration_vatt import VattConfig
from modeling_vatt.feature_extraction_vatt import VattFeatureExtractor
from modeling_vatt.modeling_vatt import VattForContrastivePretraining
from modeling_vatt.processing_vatt import VattProcessor
from modeling_vatt.tokenization_vatt import VattTokenizer

SPEECH_DIR = Path(__file__).parent / "fixtures" / "speech"


def read_transcripts() -> dict[str, str]:
    lines = (SPEECH_DIR / "transcripts.tsv").read_text(encoding="utf-8").splitlines()
    return dict(line.split("\t") for line in lines)


TRANSCRIPTS = read_transcripts()
LIBRIVOX = sorted(name for name in TRANSCRIPTS if name.startswith("sense_and_sensibility"))


@pytest.fixture(scope="module", autouse=True)
def auto_classes():
    AutoFeatureExtractor.register(VattConfig, VattFeatureExtractor, exist_ok=True)
    AutoTokenizer.register(VattConfig, tokenizer_class=VattTokenizer, exist_ok=True)
    AutoProcessor.register(VattConfig, VattProcessor, exist_ok=True)


@pytest.fixture(scope="module")
def processor():
    return VattProcessor(VattFeatureExtractor(), VattTokenizer.from_corpus(TRANSCRIPTS.values()))


@pytest.fixture(scope="module")
def speech():
    """The five LibriVox sentences at 48 kHz with their transcripts."""
    return [load_audio(SPEECH_DIR / name) for name in LIBRIVOX], [TRANSCRIPTS[name] for name in LIBRIVOX]


def test_fixtures_are_complete():
    assert len(TRANSCRIPTS) == 10 and all(text.strip() for text in TRANSCRIPTS.values())
    assert sorted(path.name for path in SPEECH_DIR.glob("*.flac")) == sorted(TRANSCRIPTS)
    assert sum(path.stat().st_size for path in SPEECH_DIR.iterdir()) < 1_000_000


def test_real_speech_pairs(processor, speech):
    clips, texts = speech
    inputs = processor(text=texts, audio=clips, sampling_rate=48000, return_tensors="pt")
    assert set(inputs) == {"input_ids", "attention_mask", "input_values", "audio_attention_mask"}
    lengths = [len(clip) for clip in clips]
    assert inputs["input_values"].shape == (5, -(-max(lengths) // 128) * 128)
    assert inputs["audio_attention_mask"].sum(1).tolist() == lengths
    assert inputs["input_ids"].shape == (5, max(len(text.split()) for text in texts))
    assert processor.batch_decode(inputs["input_ids"], skip_special_tokens=True) == texts
    assert processor.decode(inputs["input_ids"][1], skip_special_tokens=True) == texts[1]


def test_file_samples_at_their_own_rate_match_load_audio(processor, speech):
    # 16 kHz int16 straight from the file, resampled by the processor == float decoding + resampling in load_audio.
    pcm = [soundfile.read(SPEECH_DIR / name, dtype="int16")[0] for name in LIBRIVOX]
    from_pcm = processor(audio=pcm, sampling_rate=16000)
    from_files = processor(audio=speech[0], sampling_rate=48000)
    np.testing.assert_allclose(from_pcm["input_values"], from_files["input_values"], atol=1e-6)
    np.testing.assert_array_equal(from_pcm["audio_attention_mask"], from_files["audio_attention_mask"])


def test_model_accepts_processor_output(processor, speech):
    torch.manual_seed(0)
    model = VattForContrastivePretraining(VattConfig.from_preset("tiny")).eval()
    clips, texts = speech
    window = 128 * model.config.audio_config.max_position_embeddings
    inputs = processor(
        text=texts,
        audio=clips,
        sampling_rate=48000,
        return_tensors="pt",
        audio_kwargs={"max_length": window, "crop": "center"},
    )
    assert inputs["input_values"].shape == (5, window)
    with torch.no_grad():
        outputs = model(**inputs, return_loss=True)
    assert outputs.logits_per_audio.shape == (5, 5) and torch.isfinite(outputs.loss)


def test_batch_size_rules(processor, speech):
    clips, texts = speech
    with pytest.raises(ValueError, match="2 audio clips and 3 texts"):
        processor(text=texts[:3], audio=clips[:2], sampling_rate=48000)
    # One clip scored against several texts (zero-shot), or one text against several clips (retrieval).
    for audio in (clips[0], clips[:1]):
        one_clip = processor(text=texts, audio=audio, sampling_rate=48000)
        assert len(one_clip["input_values"]) == 1 and len(one_clip["input_ids"]) == 5
    one_text = processor(text=texts[0], audio=clips[:3], sampling_rate=48000)
    assert len(one_text["input_values"]) == 3 and len(one_text["input_ids"]) == 1


@pytest.mark.parametrize("text", [123, [1, 2], ["fine", None], b"bytes"])
def test_text_must_be_strings(processor, text):
    with pytest.raises(TypeError, match="`text` must be a string or a list of strings"):
        processor(text=text)


def test_missing_or_empty_inputs(processor):
    with pytest.raises(ValueError, match="Pass `text`, `audio` or both"):
        processor()
    with pytest.raises(ValueError, match="empty list"):
        processor(text=[])
    with pytest.raises(ValueError, match="empty batch"):
        processor(audio=[], sampling_rate=48000)


def test_single_modalities_and_options(processor, speech):
    clips, texts = speech
    assert set(processor(text=texts)) == {"input_ids", "attention_mask"}
    assert set(processor(audio=clips, sampling_rate=48000)) == {"input_values", "audio_attention_mask"}
    # The original's text setting: exactly 16 words.
    padded = processor(text=texts, return_tensors="np", text_kwargs={"padding": "max_length", "max_length": 16})
    assert padded["input_ids"].shape == (5, 16) and padded["attention_mask"][1].sum() == 8
    looped = processor(
        audio=clips[1],
        sampling_rate=48000,
        audio_kwargs={"padding": "max_length", "max_length": 153_600, "pad_mode": "loop"},
    )
    assert looped["input_values"].shape == (1, 153_600) and looped["audio_attention_mask"].all()
    assert sorted(processor.model_input_names) == [
        "attention_mask",
        "audio_attention_mask",
        "input_ids",
        "input_values",
    ]


def without_auto_map(config: dict) -> dict:
    """`register_for_auto_class` adds `auto_map` on save; it is not part of the settings under test."""
    return {key: value for key, value in config.items() if key != "auto_map"}


def test_save_and_load_through_auto_classes(processor, speech, tmp_path):
    custom = VattProcessor(VattFeatureExtractor(pad_mode="loop", do_normalize=True), processor.tokenizer)
    custom.save_pretrained(tmp_path)
    assert {"processor_config.json", "tokenizer.json", "tokenizer_config.json"} <= {p.name for p in tmp_path.iterdir()}
    nested = json.loads((tmp_path / "processor_config.json").read_text())["feature_extractor"]
    assert nested["feature_extractor_type"] == "VattFeatureExtractor" and nested["pad_mode"] == "loop"

    clips, texts = speech
    expected = custom(text=texts, audio=clips[::-1], sampling_rate=48000, return_tensors="np")
    for loaded in (VattProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is VattProcessor
        assert without_auto_map(loaded.feature_extractor.to_dict()) == without_auto_map(
            custom.feature_extractor.to_dict()
        )
        outputs = loaded(text=texts, audio=clips[::-1], sampling_rate=48000, return_tensors="np")
        for key, value in expected.items():
            np.testing.assert_array_equal(outputs[key], value)

    feature_extractor = AutoFeatureExtractor.from_pretrained(tmp_path)
    assert type(feature_extractor) is VattFeatureExtractor and feature_extractor.pad_mode == "loop"
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert type(tokenizer) is VattTokenizer and tokenizer.get_vocab() == processor.tokenizer.get_vocab()

    # Each part saved on its own loads through its Auto class too.
    custom.feature_extractor.save_pretrained(tmp_path / "fe")
    assert AutoFeatureExtractor.from_pretrained(tmp_path / "fe").do_normalize is True
    custom.tokenizer.save_pretrained(tmp_path / "tok")
    reloaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tok")
    np.testing.assert_array_equal(
        reloaded_tokenizer(texts, padding=True, return_tensors="np")["input_ids"], expected["input_ids"]
    )


def test_remote_code_loading_without_the_package(processor, speech, tmp_path, monkeypatch):
    for cls, auto_class in (
        (VattFeatureExtractor, "AutoFeatureExtractor"),
        (VattTokenizer, "AutoTokenizer"),
        (VattProcessor, "AutoProcessor"),
    ):
        monkeypatch.setattr(cls, "_auto_class", None)
        cls.register_for_auto_class(auto_class)
    saved = tmp_path / "vatt-processor"
    VattProcessor(VattFeatureExtractor(pad_mode="loop"), processor.tokenizer).save_pretrained(saved)
    assert {"feature_extraction_vatt.py", "tokenization_vatt.py", "processing_vatt.py"} <= {
        path.name for path in saved.iterdir()
    }
    clips, texts = speech
    expected = processor(
        text=texts, audio=clips, sampling_rate=48000, return_tensors="np", audio_kwargs={"pad_mode": "loop"}
    )
    np.savez(tmp_path / "inputs.npz", *clips)
    np.savez(tmp_path / "expected.npz", **expected)
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    stdout = run_without_package(
        f"""
        import json
        import numpy as np
        from transformers import AutoFeatureExtractor, AutoProcessor, AutoTokenizer

        try:
            import modeling_vatt
        except ImportError:
            pass
        else:
            raise SystemExit("modeling_vatt should not be importable here")
        saved = {str(saved)!r}
        try:
            AutoProcessor.from_pretrained(saved)
        except ValueError as error:
            assert "trust_remote_code" in str(error), error
        else:
            raise SystemExit("custom code was loaded without trust_remote_code")

        processor = AutoProcessor.from_pretrained(saved, trust_remote_code=True)
        feature_extractor = AutoFeatureExtractor.from_pretrained(saved, trust_remote_code=True)
        tokenizer = AutoTokenizer.from_pretrained(saved, trust_remote_code=True)
        for obj in (processor, feature_extractor, tokenizer, processor.feature_extractor, processor.tokenizer):
            assert type(obj).__module__.startswith("transformers_modules."), type(obj).__module__
        print(type(processor).__name__, type(feature_extractor).__name__, type(tokenizer).__name__)

        with np.load({str(tmp_path / "inputs.npz")!r}) as archive:
            clips = [archive[key] for key in archive.files]
        texts = json.load(open({str(tmp_path / "texts.json")!r}))
        expected = dict(np.load({str(tmp_path / "expected.npz")!r}))
        outputs = processor(text=texts, audio=clips, sampling_rate=48000, return_tensors="np")
        assert sorted(outputs) == sorted(expected), sorted(outputs)
        for key, value in expected.items():
            np.testing.assert_array_equal(outputs[key], value)
        np.testing.assert_array_equal(
            feature_extractor(clips, sampling_rate=48000)["input_values"], expected["input_values"]
        )
        assert tokenizer(texts, padding=True, return_tensors="np")["input_ids"].tolist() == expected["input_ids"].tolist()
        print("remote code OK")
        """,
        cwd=elsewhere,
    )
    assert "VattProcessor VattFeatureExtractor VattTokenizer" in stdout and "remote code OK" in stdout


def test_typed_processor_kwargs(processor, speech):
    clips, texts = speech
    # Flat kwargs reach the component that takes them; per-modality dicts and `return_tensors` still work.
    flat = processor(text=texts, audio=clips, sampling_rate=48000, crop="center", max_length=2048, return_tensors="pt")
    nested = processor(
        text=texts,
        audio=clips,
        return_tensors="pt",
        audio_kwargs={"sampling_rate": 48000, "crop": "center", "max_length": 2048},
    )
    assert flat["input_values"].shape == (5, 2048) and isinstance(flat["input_ids"], torch.Tensor)
    for key in ("input_values", "audio_attention_mask", "input_ids"):
        assert torch.equal(flat[key], nested[key])
    centre = (len(clips[0]) - 2048) // 2
    np.testing.assert_array_equal(flat["input_values"][0].numpy(), clips[0][centre : centre + 2048])
    # A text option stays with the tokenizer and an audio option with the feature extractor.
    short = processor(text=texts, audio=clips, sampling_rate=48000, text_kwargs={"max_length": 4})
    assert len(short["input_ids"][0]) == 4 and len(short["input_values"][0]) >= len(clips[0])
    with pytest.raises(ValueError, match="`pad_mode` must be one of"):
        processor(audio=clips, sampling_rate=48000, pad_mode="mirror")


def test_tokenizer_defaults_do_not_reach_the_audio(processor, speech, tmp_path):
    # A tokenizer saved after a call with `max_length` reloads with it as a default; in tokens, not samples.
    clips, texts = speech
    processor(text=texts, padding="max_length", max_length=16, truncation=True)
    processor.save_pretrained(tmp_path)
    reloaded = VattProcessor.from_pretrained(tmp_path)
    expected = processor(text=texts, audio=clips, sampling_rate=48000, return_tensors="np")
    outputs = reloaded(text=texts, audio=clips, sampling_rate=48000, return_tensors="np")
    for key, value in expected.items():
        np.testing.assert_array_equal(outputs[key], value)
    assert expected["input_ids"].shape[1] > 16
