"""Audio classification on synthetic sound classes (tones, noise, click trains written as FLAC files): fine-tuning,
linear probing with cached features, window aggregation, the audio-classification pipeline (installed and remote code),
multi-label mAP and the downstream example scripts."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import load_from_disk
from helpers import run_without_package
from torch.utils.data import DataLoader
from transformers import pipeline

from modeling_vatt import (
    VattAudioConfig,
    VattAudioModel,
    VattConfig,
    VattForAudioClassification,
    VattForContrastivePretraining,
)
from modeling_vatt.classification_data import ClassificationCollator, label_schema
from modeling_vatt.feature_extraction_vatt import VattFeatureExtractor
from modeling_vatt.linear_probe import cached_window_features, predict_from_features, train_linear_probe
from modeling_vatt.metrics import classification_metrics
from modeling_vatt.processing_vatt import VattProcessor
from modeling_vatt.sound_classes import SOUND_CAPTIONS, SOUND_CLASSES, write_sound_classes_dataset
from modeling_vatt.speech_data import decode_audio
from modeling_vatt.tokenization_vatt import VattTokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = REPO_ROOT / "examples"
RATE = 16000
CHANCE = 1 / len(SOUND_CLASSES)
CAPTIONS = [SOUND_CAPTIONS[name] for name in SOUND_CLASSES]


@pytest.fixture(scope="module")
def sounds(tmp_path_factory):
    """90 training and 30 held-out clips (0.3-0.6 s, 16 kHz FLAC) of four sound classes."""
    folder = tmp_path_factory.mktemp("sounds")
    write_sound_classes_dataset(folder, examples_per_class=30, sampling_rate=RATE, seed=0)
    return folder


@pytest.fixture(scope="module")
def splits(sounds):
    return load_from_disk(str(sounds / "dataset"))


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory):
    """A tiny (randomly initialised) 16 kHz VATT audio-text checkpoint with its processor."""
    folder = tmp_path_factory.mktemp("pretrained")
    torch.manual_seed(0)
    VattForContrastivePretraining(
        VattConfig.from_preset("tiny", audio_config={"sampling_rate": RATE})
    ).save_pretrained(folder)
    tokenizer = VattTokenizer.from_corpus(CAPTIONS, vocab_size=1000)
    VattProcessor(VattFeatureExtractor(sampling_rate=RATE, do_normalize=True), tokenizer).save_pretrained(folder)
    return folder


def schema_and_collators(splits, feature_extractor):
    schema = label_schema(splits.values(), "label")
    train = ClassificationCollator(feature_extractor, schema, max_length=128 * 40, crop="random", seed=0)
    return schema, train, ClassificationCollator(feature_extractor, schema)


@torch.no_grad()
def evaluate(model, loader) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    logits, labels = zip(
        *[(model(**{k: v for k, v in b.items() if k != "labels"}).logits, b["labels"]) for b in loader]
    )
    return torch.cat(logits), torch.cat(labels)


@pytest.fixture(scope="module")
def fine_tuned(pretrained_dir, splits, tmp_path_factory):
    """The tiny checkpoint fine-tuned for 40 steps; returns the model, its held-out metrics and its saved folder."""
    feature_extractor = VattFeatureExtractor.from_pretrained(pretrained_dir)
    schema, train_collator, eval_collator = schema_and_collators(splits, feature_extractor)
    torch.manual_seed(0)
    model = VattForAudioClassification.from_pretrained(
        pretrained_dir, num_labels=4, id2label=schema.id2label, label2id=schema.label2id
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loader = DataLoader(splits["train"], batch_size=16, shuffle=True, collate_fn=train_collator)
    model.train()
    for _, batch in zip(range(40), (b for _ in range(10) for b in loader)):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    logits, labels = evaluate(model, DataLoader(splits["validation"], batch_size=10, collate_fn=eval_collator))
    folder = tmp_path_factory.mktemp("fine_tuned")
    model.save_pretrained(folder)
    feature_extractor.save_pretrained(folder)
    return model, classification_metrics(logits, labels, multi_label=False), folder


def test_loads_the_audio_tower_of_a_contrastive_checkpoint(pretrained_dir, tmp_path):
    contrastive = VattForContrastivePretraining.from_pretrained(pretrained_dir)
    model = VattForAudioClassification.from_pretrained(pretrained_dir, num_labels=3)
    assert isinstance(model.config, VattAudioConfig)
    assert model.config.to_diff_dict().items() >= {"hidden_size": 64, "sampling_rate": RATE}.items()
    assert model.config.num_labels == 3 and model.classifier.out_features == 3
    tower = contrastive.audio_model.state_dict()
    assert model.audio_model.state_dict().keys() == tower.keys()
    for name, tensor in model.audio_model.state_dict().items():
        assert torch.equal(tensor, tower[name]), name
    # A bare audio tower checkpoint (no `audio_model.` prefix) loads too, and the classifier's tower loads back.
    contrastive.audio_model.save_pretrained(tmp_path / "tower")
    from_tower = VattForAudioClassification.from_pretrained(tmp_path / "tower", num_labels=3)
    assert all(torch.equal(t, tower[name]) for name, t in from_tower.audio_model.state_dict().items())
    model.save_pretrained(tmp_path / "classifier")
    back = VattAudioModel.from_pretrained(tmp_path / "classifier").state_dict()
    assert back.keys() == tower.keys() and all(torch.equal(back[name], tower[name]) for name in tower)


def test_fine_tuning_beats_chance_on_held_out_clips(fine_tuned, splits):
    _, metrics, _ = fine_tuned
    # 30 held-out clips, 4 balanced classes: chance accuracy is 0.25 (P(>= 15/30 correct by chance) < 0.003).
    assert metrics["accuracy"] >= 0.5, metrics
    assert metrics["macro_f1"] > CHANCE and metrics["mAP"] > 0.5, metrics


def test_linear_probe_trains_only_the_head(pretrained_dir, splits, tmp_path):
    feature_extractor = VattFeatureExtractor.from_pretrained(pretrained_dir)
    schema, _, eval_collator = schema_and_collators(splits, feature_extractor)
    model = VattForAudioClassification.from_pretrained(pretrained_dir, num_labels=4)
    backbone = {name: tensor.clone() for name, tensor in model.audio_model.state_dict().items()}
    head = model.classifier.weight.detach().clone()

    def features(split, cache_dir):
        return cached_window_features(
            model.audio_model,
            lambda: DataLoader(splits[split], batch_size=16, collate_fn=eval_collator),
            cache_dir,
            splits[split]._fingerprint,
            {"feature_extractor": feature_extractor.to_dict()},
        )

    train, path, hit = features("train", tmp_path)
    assert not hit and path.is_file() and train.features.shape[:2] == train.mask.shape
    assert train.features.shape[1] == 2  # clips longer than the 50-patch table are encoded in two windows
    again, again_path, hit = features("train", tmp_path)
    assert hit and again_path == path and torch.equal(again.features, train.features)
    held_out, _, _ = features("validation", tmp_path)

    labels = torch.tensor(splits["train"]["label"])
    history = train_linear_probe(model, train, labels, num_epochs=100, learning_rate=1e-2, batch_size=32)
    assert history[-1] < 0.5 * history[0]
    for name, tensor in model.audio_model.state_dict().items():
        assert torch.equal(tensor, backbone[name]), f"{name} changed"
    assert not any(p.requires_grad for p in model.audio_model.parameters())
    assert not torch.equal(model.classifier.weight, head)

    probe_logits = predict_from_features(model, held_out)
    model_logits, held_out_labels = evaluate(
        model, DataLoader(splits["validation"], batch_size=8, collate_fn=eval_collator)
    )
    torch.testing.assert_close(probe_logits, model_logits, atol=1e-4, rtol=1e-4)  # cached path == the full model
    assert classification_metrics(probe_logits, held_out_labels, False)["accuracy"] > CHANCE + 0.2


@pytest.mark.parametrize("aggregation", ["mean", "max"])
def test_window_logits_aggregation(aggregation):
    torch.manual_seed(0)
    config = VattAudioConfig.from_preset("tiny", num_labels=3, window_logits_aggregation=aggregation)
    model = VattForAudioClassification(config).eval()
    audio = torch.randn(2, 128 * 120)  # 120 patches: windows of 50, 50 and 20
    mask = torch.ones_like(audio, dtype=torch.long)
    mask[1, 128 * 45 :] = 0  # the second item fills only its first window, and not completely
    output = model(input_values=audio, audio_attention_mask=mask)
    assert output.window_logits.shape == (2, 3, 3)
    torch.testing.assert_close(output.window_weights, torch.tensor([[1.0, 1.0, 0.4], [0.9, 0.0, 0.0]]))
    if aggregation == "mean":
        expected = (output.window_logits * output.window_weights[..., None]).sum(1) / output.window_weights.sum(
            1, True
        )
    else:
        expected = torch.stack([output.window_logits[0].amax(0), output.window_logits[1, 0]])
    torch.testing.assert_close(output.logits, expected)
    alone = model(input_values=audio[1:, : 128 * 45]).logits  # padding windows do not change the result
    torch.testing.assert_close(output.logits[1:], alone, atol=1e-5, rtol=1e-5)


def test_original_head_is_multi_label_with_prior_bias():
    config = VattAudioConfig.from_preset("tiny", num_labels=5, classifier_head="original", classifier_dropout=0.3)
    model = VattForAudioClassification(config)
    torch.testing.assert_close(model.classifier.bias, torch.full((5,), -math.log(4)))
    assert model.config.problem_type == "multi_label_classification" and model.dropout.p == 0.3
    model.eval()
    labels = torch.tensor([[1.0, 0, 0, 1, 0], [0, 0, 0, 0, 1]])
    output = model(input_values=torch.randn(2, 128 * 10), labels=labels)
    torch.testing.assert_close(output.loss, F.binary_cross_entropy_with_logits(output.logits, labels))


def test_bad_configuration_and_labels_are_rejected():
    with pytest.raises(ValueError, match="classifier_head"):
        VattForAudioClassification(VattAudioConfig.from_preset("tiny", classifier_head="mlp"))
    with pytest.raises(ValueError, match="num_labels >= 2"):
        VattForAudioClassification(VattAudioConfig.from_preset("tiny", num_labels=1, classifier_head="original"))
    model = VattForAudioClassification(VattAudioConfig.from_preset("tiny", num_labels=3)).eval()
    audio = torch.randn(2, 128 * 10)
    with pytest.raises(ValueError, match=r"Labels must lie in \[0, 3\)"):
        model(input_values=audio, labels=torch.tensor([0, 3]))
    model.config.problem_type = "multi_label_classification"
    with pytest.raises(ValueError, match="0/1 label rows"):
        model(input_values=audio, labels=torch.tensor([[1.0, 0.0]] * 2))


def test_multi_label_map_matches_hand_computed_value():
    scores = [[0.9, 0.2], [0.8, 0.7], [0.3, 0.6], [0.1, 0.4]]
    labels = [[1, 1], [0, 0], [1, 0], [0, 1]]
    # Class 0 ranks 1,0,1,0 -> AP = (1/1 + 2/3) / 2; class 1 ranks 0 (0.7), 0 (0.6), 1 (0.4), 1 (0.2) -> AP =
    # (1/3 + 2/4) / 2. AUC: class 0 has 3 of 4 positive-negative pairs right, class 1 none.
    results = classification_metrics(torch.tensor(scores), labels, multi_label=True)
    assert results["mAP"] == pytest.approx(((1 + 2 / 3) / 2 + (1 / 3 + 2 / 4) / 2) / 2)
    assert results["AUC"] == pytest.approx((3 / 4 + 0 / 4) / 2)
    assert "accuracy" not in results


def test_pipeline_returns_label_names(fine_tuned, sounds, splits):
    model, _, folder = fine_tuned
    row = splits["validation"][0]
    audio = decode_audio(row["audio"], RATE)
    classifier = pipeline("audio-classification", model=str(folder))
    assert type(classifier.model) is VattForAudioClassification
    result = classifier(audio, top_k=None)
    assert sorted(item["label"] for item in result) == sorted(SOUND_CLASSES)
    assert sum(item["score"] for item in result) == pytest.approx(1.0, abs=1e-5)
    inputs = VattFeatureExtractor.from_pretrained(folder)(audio, sampling_rate=RATE, return_tensors="pt")
    with torch.no_grad():
        probabilities = model.eval()(**inputs).logits.softmax(-1)[0]
    assert result[0]["label"] == model.config.id2label[int(probabilities.argmax())]
    assert result[0]["score"] == pytest.approx(float(probabilities.max()), abs=1e-5)

    np.save(folder / "audio.npy", audio)
    remote = run_without_package(
        f"""
        import json, numpy as np
        from transformers import pipeline
        classifier = pipeline("audio-classification", model=r"{folder}", trust_remote_code=True)
        assert type(classifier.model).__module__.startswith("transformers_modules"), type(classifier.model)
        print(json.dumps(classifier(np.load(r"{folder / "audio.npy"}"), top_k=None)))
        """,
        cwd=folder.parent,
    )
    remote_result = json.loads(remote.strip().splitlines()[-1])
    assert [item["label"] for item in remote_result] == [item["label"] for item in result]
    for remote_item, item in zip(remote_result, result):
        assert remote_item["score"] == pytest.approx(item["score"], abs=1e-5)


def run_example(script: str, *args: str, timeout: int = 120) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(f"{script} failed ({result.returncode}):\n{result.stdout}\n{result.stderr[-4000:]}")
    return result.stdout


def with_unreadable_training_files(splits, folder: Path) -> Path:
    """A copy of `splits` whose first two training recordings are garbage bytes and a truncated FLAC."""
    from datasets import Audio, DatasetDict

    train = splits["train"]
    audio = list(train["audio"])
    audio[:2] = [
        {"bytes": b"not audio at all", "path": "garbage.flac"},
        {"bytes": audio[1]["bytes"][:2000], "path": "truncated.flac"},
    ]
    train = train.remove_columns("audio").add_column("audio", audio).cast_column("audio", Audio(decode=False))
    DatasetDict(train=train, validation=splits["validation"]).save_to_disk(str(folder))
    return folder


def test_run_audio_classification_fine_tunes_and_writes_a_hub_ready_folder(pretrained_dir, splits, tmp_path):
    output_dir = tmp_path / "vatt-sound-classes"
    dataset = with_unreadable_training_files(splits, tmp_path / "damaged")
    # fmt: off
    output = run_example(
        "run_audio_classification.py",
        "--model_name_or_path", str(pretrained_dir), "--dataset_name", str(dataset),
        "--output_dir", str(output_dir), "--learning_rate", "3e-3", "--max_train_steps", "40",
        "--lr_scheduler_type", "constant", "--per_device_eval_batch_size", "30",
    )
    # fmt: on
    results = json.loads((output_dir / "all_results.json").read_text())
    assert results["step"] == 40 and results["eval_accuracy"] >= 0.5, results
    assert results["skipped_rows"] == {"unreadable audio": 2}
    assert "Skipped 2 row(s)" in output and "garbage.flac" in output and "truncated.flac" in output
    assert {"eval_macro_f1", "eval_mAP", "eval_AUC"} <= results.keys()
    card = (output_dir / "README.md").read_text()
    assert "{{" not in card and "pipeline_tag: audio-classification" in card
    assert f"{results['eval_accuracy']:.4g}" in card and "`clicks`" in card
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "modeling_vatt.py"):
        assert (output_dir / name).is_file(), name
    config = json.loads((output_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModelForAudioClassification"] == "modeling_vatt.VattForAudioClassification"
    assert config["id2label"] == {str(i): name for i, name in enumerate(SOUND_CLASSES)}


class FakeHubApi:
    """Records what the script sends to the Hub."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, exist_ok=False, private=False):
        self.calls.append(("create_repo", repo_id, exist_ok))

    def upload_folder(self, repo_id, folder_path, commit_message):
        self.calls.append(("upload_folder", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))


def test_run_audio_classification_multi_label_linear_probe(pretrained_dir, tmp_path):
    sys.path.insert(0, str(EXAMPLES))
    try:
        import run_audio_classification
    finally:
        sys.path.remove(str(EXAMPLES))
    write_sound_classes_dataset(tmp_path / "mixtures", examples_per_class=15, sampling_rate=RATE, multi_label=True)
    output_dir, cache_dir = tmp_path / "probe", tmp_path / "cache"
    argv = [
        "--model_name_or_path", str(pretrained_dir), "--dataset_name", str(tmp_path / "mixtures" / "dataset"),
        "--output_dir", str(output_dir), "--linear_probe", "--feature_cache_dir", str(cache_dir),
        "--num_train_epochs", "60", "--push_to_hub", "--hub_model_id", "acme/vatt-mixtures",
    ]  # fmt: skip
    api = FakeHubApi()
    results = run_audio_classification.main(argv, hub_api=api)
    assert results["eval_mAP"] > 0.6 and results["eval_num_scored_classes"] == 4, results
    assert len(list(cache_dir.glob("features-*.safetensors"))) == 2
    assert api.calls[0] == ("create_repo", "acme/vatt-mixtures", True)
    assert api.calls[1][0] == "upload_folder" and {"README.md", "model.safetensors"} <= set(api.calls[1][2])
    model = VattForAudioClassification.from_pretrained(output_dir)
    assert model.config.problem_type == "multi_label_classification"
    pretrained = VattForContrastivePretraining.from_pretrained(pretrained_dir).audio_model.state_dict()
    for name, tensor in model.audio_model.state_dict().items():
        assert torch.equal(tensor, pretrained[name]), name


def test_zero_shot_classification_script(pretrained_dir, sounds):
    output = run_example(
        "zero_shot_classification.py",
        "--model_name_or_path", str(pretrained_dir), "--audio_dir", str(sounds / "audio"),
        "--labels", *CAPTIONS[:3], "--hypothesis_template", "this is {}",
    )  # fmt: skip
    lines = output.strip().splitlines()
    assert lines[0].split()[:3] == ["file", "label", "score"] and len(lines) == 2 + 120
    for line in lines[2:]:
        assert any(f"  {caption}  " in line for caption in CAPTIONS[:3]), line


def test_retrieve_script_indexes_once_and_searches(pretrained_dir, sounds, tmp_path, capsys):
    folder = tmp_path / "recordings"
    folder.mkdir()
    for index, path in enumerate(sorted((sounds / "audio").glob("*.flac"))[:8]):
        (folder / f"recording_{index}.flac").write_bytes(path.read_bytes())
    common = ["--model_name_or_path", str(pretrained_dir), "--audio_dir", str(folder), "--top_k", "3"]
    output = run_example(
        "retrieve.py", *common, "--text", "a low tone", "--similar_to", str(folder / "recording_0.flac")
    )
    assert "Indexed 8 recordings (8 encoded, 0 from the cache)." in output
    assert "text: 'a low tone'" in output and output.count(".flac") == 3 + 1 + 3  # results and the heading
    similar_block = output.split("similar to:")[1]
    assert "recording_0.flac" not in similar_block.split("\n", 1)[1]  # a recording is not its own neighbour

    sys.path.insert(0, str(EXAMPLES))
    try:
        import retrieve
    finally:
        sys.path.remove(str(EXAMPLES))
    os.utime(folder / "recording_3.flac", ns=(1, 1))  # a changed file is encoded again, the rest come from the cache
    results = retrieve.main([*common, "--similar_to", str(folder / "recording_0.flac")])
    assert "Indexed 8 recordings (1 encoded, 7 from the cache)." in capsys.readouterr().out
    ranked = results[str(folder / "recording_0.flac")]
    assert len(ranked) == 3 and all(-1 <= score <= 1 for _, score in ranked)
    assert [score for _, score in ranked] == sorted((score for _, score in ranked), reverse=True)
