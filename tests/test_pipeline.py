"""The zero-shot-audio-classification pipeline on a saved tiny checkpoint and a real recording."""

import json

import pytest
from helpers import hub_cache_snapshot, run_without_package
from transformers import pipeline

from modeling_vatt import VattConfig, VattFeatureExtractor, VattForContrastivePretraining, VattProcessor, VattTokenizer
from modeling_vatt.audio_utils import load_audio

LABELS = ["a dog barking", "a woman reading a novel", "a man counting cards"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, repo_root):
    """A tiny model + processor saved as a Hub-ready folder (vocabulary built from the fixture transcripts)."""
    transcripts = (repo_root / "tests/fixtures/speech/transcripts.tsv").read_text().splitlines()
    texts = [line.split("\t")[1] for line in transcripts] + LABELS
    tokenizer = VattTokenizer.from_corpus(texts, vocab_size=500)
    config = VattConfig.from_preset("tiny", text_config={"vocab_size": len(tokenizer)})
    model = VattForContrastivePretraining(config).eval()
    folder = tmp_path_factory.mktemp("zero-shot")
    model.save_pretrained(folder)
    VattProcessor(VattFeatureExtractor(), tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def recording(repo_root):
    return load_audio(repo_root / "tests/fixtures/speech/sense_and_sensibility_0870.flac", sampling_rate=48000)


def _check_scores(result: list[dict]) -> None:
    assert sorted(item["label"] for item in result) == sorted(LABELS)
    assert abs(sum(item["score"] for item in result) - 1.0) < 1e-5
    assert [item["score"] for item in result] == sorted((item["score"] for item in result), reverse=True)


def test_zero_shot_pipeline_with_the_package(checkpoint, recording):
    classifier = pipeline("zero-shot-audio-classification", model=str(checkpoint))
    assert type(classifier.model) is VattForContrastivePretraining
    result = classifier(recording, candidate_labels=LABELS)
    _check_scores(result)
    # The pipeline's scores are the model's own softmax over the labels.
    processor = VattProcessor.from_pretrained(checkpoint)
    prompts = [f"This is a sound of {label}." for label in LABELS]
    inputs = processor(text=prompts, audio=recording, sampling_rate=48000, return_tensors="pt")
    probabilities = classifier.model(**inputs).logits_per_audio.softmax(-1)[0].detach()
    expected = {label: float(p) for label, p in zip(LABELS, probabilities)}
    for item in result:
        assert abs(item["score"] - expected[item["label"]]) < 1e-5


def test_zero_shot_pipeline_on_a_long_recording(checkpoint, recording):
    classifier = pipeline("zero-shot-audio-classification", model=str(checkpoint))
    # The tiny model's table holds 50 patches (0.13 s): this 6 s recording goes through the windowed path.
    assert len(recording) > 10 * 50 * 128
    _check_scores(classifier(recording, candidate_labels=LABELS))


def test_zero_shot_pipeline_with_remote_code_from_a_hub_cache(checkpoint, recording, tmp_path):
    hf_home = tmp_path / "hf"
    snapshot = hub_cache_snapshot(hf_home, "acme/vatt-tiny")
    for file in checkpoint.iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    audio_file = tmp_path / "audio.json"
    audio_file.write_text(json.dumps(recording[:48000].tolist()))
    out = run_without_package(
        f"""
        import json, os
        os.environ["HF_HOME"] = r"{hf_home}"
        import numpy as np
        from transformers import pipeline
        audio = np.array(json.load(open(r"{audio_file}")), dtype=np.float32)
        classifier = pipeline("zero-shot-audio-classification", model="acme/vatt-tiny", trust_remote_code=True)
        print(type(classifier.model).__module__)
        print(json.dumps(classifier(audio, candidate_labels={LABELS!r})))
        """,
        cwd=tmp_path,
    )
    module, result = out.strip().splitlines()[-2:]
    assert module.startswith("transformers_modules")
    _check_scores(json.loads(result))
