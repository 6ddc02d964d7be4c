"""Conversion of original TensorFlow VATT checkpoints, checked against outputs of the original TF model.

The reference data (`shared/fixtures/vatt_tf_reference`, beside the repository) holds two tiny checkpoints written by
the original google-research code: `tx_fac` (modality-specific) and `ut_fac` (modality-agnostic), with inputs and
outputs. Each is converted once per test module.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForAudioClassification

import conversion.convert_vatt_original_to_hf as convert_module
from conversion.convert_vatt_original_to_hf import (
    MODEL_ROOT,
    VALUE_SUFFIX,
    ConversionError,
    convert_checkpoint,
    main,
    push_folder,
)
from conversion.verify import verify
from modeling_vatt import VattForAudioClassification, VattForContrastivePretraining

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT.parent / "shared" / "fixtures" / "vatt_tf_reference"
SCRIPT = REPO_ROOT / "conversion" / "convert_vatt_original_to_hf.py"

# Largest max-abs error observed is ~4e-6; 3e-5 also catches a wrong LayerNorm epsilon (README "Tolerance").
MAX_ERROR = 3e-5
VOCAB_SIZE = 1000
COMMON_OUTPUTS = [
    "audio_features_pooled",
    "audio_features",
    "audio_head_tovid",
    "audio_head_tovat_derived",
    "audio_interp_features_pooled_f64spline",
    "audio_interp_features_f64spline",
    "audio_interp_head_tovid_f64spline",
    "audio_interp_head_tovat_derived_f64spline",
    "text_features_pooled",
    "text_features",
    "text_head_tovid",
]
EXPECTED_OUTPUTS = {
    "tx_fac": COMMON_OUTPUTS,
    "ut_fac": COMMON_OUTPUTS
    + ["text_interp_features_pooled_f64spline", "text_interp_features_f64spline", "text_interp_head_tovid_f64spline"],
}


def fixture_path(*parts: str) -> Path:
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"reference fixture {path} is missing: clone `shared/` beside the repository.")
    return path


def checkpoint_prefix(kind: str) -> Path:
    return fixture_path(kind, "ckpt", "ckpt-500.index").with_suffix("")


def reference_pair(kind: str) -> tuple[Path, Path]:
    """(outputs.npz, inputs.npz), in the order of `--verify_against`."""
    return fixture_path(kind, "outputs.npz"), fixture_path(kind, "inputs.npz")


def write_vocab(path: Path, size: int) -> Path:
    path.write_text("\n".join(["<pad>", "<unk>", *(f"word{i}" for i in range(2, size))]) + "\n")
    return path


def read_model_variables(kind: str) -> dict[str, np.ndarray]:
    """The fixture checkpoint's model variables, keyed by attribute path below `model/layer_with_weights-0/`."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(checkpoint_prefix(kind)))
    return {
        name[len(MODEL_ROOT) : -len(VALUE_SUFFIX)]: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        if name.startswith(MODEL_ROOT) and name.endswith(VALUE_SUFFIX) and "OPTIMIZER_SLOT" not in name
    }


def write_tf_checkpoint(prefix: Path, variables: dict[str, np.ndarray], root: str = "model") -> Path:
    """Write `variables` (attribute paths) as a TF2 object-based checkpoint, as `tf.train.Checkpoint` names them."""
    import tensorflow as tf

    top = tf.Module()
    for path, value in variables.items():
        node = top
        *parents, leaf = path.split("/")
        for part in parents:
            if getattr(node, part, None) is None:
                setattr(node, part, tf.Module())
            node = getattr(node, part)
        setattr(node, leaf, tf.Variable(value))
    tf.train.Checkpoint(**{root: top}).write(str(prefix))
    return prefix


def as_layer_paths(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {f"layer_with_weights-0/{name}": value for name, value in variables.items()}


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory) -> Path:
    return write_vocab(tmp_path_factory.mktemp("vocab") / "vocab.txt", VOCAB_SIZE)


@pytest.fixture(scope="module")
def converted(tmp_path_factory, vocab_file) -> dict[str, Path]:
    """Both fixture checkpoints converted: tx_fac through the Python API, ut_fac through the CLI entry point."""
    root = tmp_path_factory.mktemp("converted")
    result = convert_checkpoint(
        fixture_path("tx_fac", "ckpt"),  # a folder with a `checkpoint` state file; heads from the T5 table
        root / "tx_fac",
        vocab_file=vocab_file,
        verify_against=reference_pair("tx_fac"),
    )
    assert result.kind == "tx_fac"
    assert result.ignored == {"optimizer state": 206, "bookkeeping": 2, "video branch": 36}
    assert max(result.errors.values()) < MAX_ERROR
    outputs, inputs = reference_pair("ut_fac")
    exit_code = main(
        ["--tf_checkpoint", str(checkpoint_prefix("ut_fac")), "--output_dir", str(root / "ut_fac")]
        + ["--vocab_file", str(vocab_file), "--verify_against", str(outputs), str(inputs), "--audio_num_heads", "4"]
    )
    assert exit_code == 0
    return {"tx_fac": root / "tx_fac", "ut_fac": root / "ut_fac"}


@pytest.mark.parametrize("kind", ["tx_fac", "ut_fac"])
def test_sizes_are_inferred_from_the_checkpoint(converted, kind):
    config = VattForContrastivePretraining.config_class.from_pretrained(converted[kind])
    audio, text = config.audio_config, config.text_config
    assert (audio.hidden_size, audio.num_hidden_layers, audio.num_attention_heads, audio.head_dim) == (64, 2, 4, 16)
    assert (audio.intermediate_size, audio.patch_size, audio.max_position_embeddings) == (128, 128, 50)
    assert (text.vocab_size, text.embedding_size, text.hidden_size, text.num_attention_heads) == (1000, 24, 64, 4)
    assert (config.projection_type, config.projection_dim, config.audio_video_projection_dim) == ("bridge", 40, 48)
    assert audio.position_interpolation == "spline"
    if kind == "tx_fac":
        assert not config.modality_agnostic and text.position_embedding_type == "relative"
        assert text.relative_attention_num_buckets == 32 and audio.post_projection_size is None
    else:
        assert config.modality_agnostic and audio.use_pre_projection
        assert (audio.post_projection_size, text.post_projection_size, text.max_position_embeddings) == (56, 56, 16)
        assert (text.position_embedding_type, text.position_interpolation) == ("absolute", "spline")


@pytest.mark.parametrize("kind", ["tx_fac", "ut_fac"])
def test_converted_model_reproduces_the_original(converted, kind):
    model = VattForContrastivePretraining.from_pretrained(converted[kind])
    errors = verify(model, *reversed(reference_pair(kind)))
    assert sorted(errors) == sorted(EXPECTED_OUTPUTS[kind])
    too_large = {name: error for name, error in errors.items() if not error < MAX_ERROR}
    assert not too_large, too_large


def test_embeddings_match_at_relative_tolerance(converted):
    """The zero-shot embeddings themselves, compared elementwise (`atol = rtol = 1e-4`)."""
    outputs, inputs = (np.load(path) for path in reference_pair("tx_fac"))
    model = VattForContrastivePretraining.from_pretrained(converted["tx_fac"]).eval()
    ids = torch.from_numpy(inputs["text_ids"].astype(np.int64))
    with torch.no_grad():
        audio = model.get_audio_features(input_values=torch.from_numpy(inputs["audio"][..., 0])).pooler_output
        text = model.get_text_features(input_ids=ids, attention_mask=ids != 0).pooler_output
    np.testing.assert_allclose(audio.numpy(), outputs["audio_head_tovat_derived"], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(text.numpy(), outputs["text_head_tovid"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", ["tx_fac", "ut_fac"])
def test_auto_classes_and_processor_load_the_folder(converted, kind):
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(converted[kind]).eval()
    processor = AutoProcessor.from_pretrained(converted[kind], trust_remote_code=True)
    assert isinstance(model, VattForContrastivePretraining)
    assert type(processor).__name__ == "VattProcessor"
    waveform = np.random.default_rng(0).uniform(-0.5, 0.5, 6400).astype(np.float32)
    inputs = processor(text=["word5 word7", "word9"], audio=[waveform], sampling_rate=48000, return_tensors="pt")
    assert inputs["input_ids"].tolist()[1][0] == 9
    with torch.no_grad():
        output = model(**inputs)
    assert output.logits_per_audio.shape == (1, 2)


def test_save_and_reload_round_trip(converted, tmp_path):
    inputs = np.load(reference_pair("ut_fac")[1])
    audio = torch.from_numpy(inputs["audio_interp"][..., 0])
    ids = torch.from_numpy(inputs["text_interp_ids"].astype(np.int64))
    outputs = []
    model = VattForContrastivePretraining.from_pretrained(converted["ut_fac"])
    for _ in range(2):
        with torch.no_grad():
            outputs.append(model(input_ids=ids, attention_mask=ids != 0, input_values=audio))
        model.save_pretrained(tmp_path)
        model = VattForContrastivePretraining.from_pretrained(tmp_path)
    for name in ("audio_embeds", "text_embeds", "logits_per_audio"):
        assert torch.equal(outputs[0][name], outputs[1][name]), name


HUB_LOADER = r"""
import importlib.abc, json, sys

class BlockPackage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("modeling_vatt", "conversion"):
            raise ModuleNotFoundError(f"blocked: {name}")
        return None

sys.meta_path.insert(0, BlockPackage())
import numpy as np, torch
from transformers import AutoModel, AutoProcessor

try:
    import modeling_vatt
    report = {"package_importable": True}
except ModuleNotFoundError:
    report = {"package_importable": False}
for repo, inputs_npz, outputs_npz in json.loads(sys.argv[1]):
    inputs, outputs = np.load(inputs_npz), np.load(outputs_npz)
    model = AutoModel.from_pretrained(repo, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(repo, trust_remote_code=True)
    ids = torch.from_numpy(inputs["text_ids"].astype(np.int64))
    with torch.no_grad():
        audio = model.get_audio_features(input_values=torch.from_numpy(inputs["audio"][..., 0])).pooler_output
        text = model.get_text_features(input_ids=ids, attention_mask=ids != 0).pooler_output
    report[repo] = {
        "module": type(model).__module__,
        "processor": type(processor).__name__,
        "name_or_path": model.name_or_path,
        "audio_error": float((audio.numpy() - outputs["audio_head_tovat_derived"]).__abs__().max()),
        "text_error": float((text.numpy() - outputs["text_head_tovid"]).__abs__().max()),
    }
print(json.dumps(report))
"""


class LocalHub:
    """Stands in for the Hub server: every `upload_folder` becomes a snapshot in an offline Hub cache."""

    def __init__(self, hub_cache: Path):
        self.hub_cache = hub_cache
        self.commits = []

    def repo_dir(self, repo_id: str) -> Path:
        return self.hub_cache / f"models--{repo_id.replace('/', '--')}"

    def create_repo(self, repo_id: str, exist_ok: bool = False) -> None:
        self.repo_dir(repo_id).mkdir(parents=True, exist_ok=exist_ok)

    def upload_folder(self, repo_id: str, folder_path: str, commit_message: str) -> None:
        revision = hashlib.sha1(f"{repo_id}/{len(self.commits)}".encode()).hexdigest()
        shutil.copytree(folder_path, self.repo_dir(repo_id) / "snapshots" / revision)
        (self.repo_dir(repo_id) / "refs").mkdir(exist_ok=True)
        (self.repo_dir(repo_id) / "refs" / "main").write_text(revision)
        self.commits.append((repo_id, commit_message, sorted(os.listdir(folder_path))))


def test_pushed_folder_loads_by_repo_id_with_remote_code_only(converted, vocab_file, tmp_path):
    """Push to a (local) Hub, then load offline by repo id in a process that cannot import the package."""
    hub = LocalHub(tmp_path / "hf_home" / "hub")
    push_folder(converted["tx_fac"], "vatt-org/tx-fac", api=hub)
    convert_checkpoint(
        checkpoint_prefix("ut_fac"),
        tmp_path / "ut_fac",
        vocab_file=vocab_file,
        audio_num_heads=4,
        push_to_hub="vatt-org/ut-fac",
        hub_api=hub,
    )
    for _, _, files in hub.commits:
        assert {"README.md", "config.json", "model.safetensors", "modeling_vatt.py", "processor_config.json"} <= set(
            files
        )
    cases = [
        ["vatt-org/tx-fac", *map(str, reversed(reference_pair("tx_fac")))],
        ["vatt-org/ut-fac", *map(str, reversed(reference_pair("ut_fac")))],
    ]
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    run = subprocess.run(
        [sys.executable, "-c", HUB_LOADER, json.dumps(cases)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["package_importable"] is False
    for repo, _, _ in cases:
        assert report[repo]["module"].startswith("transformers_modules.")
        assert report[repo]["processor"] == "VattProcessor"
        assert report[repo]["name_or_path"] == repo
        assert report[repo]["audio_error"] < MAX_ERROR and report[repo]["text_error"] < MAX_ERROR


def test_finetuned_wat_layout_converts_to_an_audio_classifier(tmp_path):
    """Released fine-tuned WaT checkpoints: `_base/...` (the backbone) and `_ops/cls/{kernel,bias}`."""
    backbone = "_base_layer/aud_backbone/_base/"
    variables = {
        "_base/" + name[len(backbone) :]: value
        for name, value in read_model_variables("tx_fac").items()
        if name.startswith(backbone)
    }
    rng = np.random.default_rng(0)
    kernel, bias = rng.normal(size=(64, 5)).astype(np.float32), rng.normal(size=5).astype(np.float32)
    variables.update({"_ops/cls/kernel": kernel, "_ops/cls/bias": bias})
    prefix = write_tf_checkpoint(tmp_path / "finetuned" / "ckpt-7", as_layer_paths(variables))

    result = convert_checkpoint(prefix, tmp_path / "out", audio_num_heads=4, verify_against=reference_pair("tx_fac"))
    assert result.kind == "wat_finetuned" and result.ignored["video branch"] == 0
    assert sorted(result.errors) == sorted(
        name for name in COMMON_OUTPUTS if "features" in name and "text" not in name
    )
    assert max(result.errors.values()) < MAX_ERROR

    model = AutoModelForAudioClassification.from_pretrained(tmp_path / "out").eval()
    assert isinstance(model, VattForAudioClassification)
    assert (model.config.num_labels, model.config.classifier_head) == (5, "original")
    assert model.config.problem_type == "multi_label_classification"
    assert model.config.position_interpolation == "spline"
    torch.testing.assert_close(model.classifier.weight, torch.from_numpy(kernel.T), rtol=0, atol=0)
    torch.testing.assert_close(model.classifier.bias, torch.from_numpy(bias), rtol=0, atol=0)
    outputs, inputs = (np.load(path) for path in reference_pair("tx_fac"))
    with torch.no_grad():
        logits = model(input_values=torch.from_numpy(inputs["audio"][..., 0])).logits
    expected = outputs["audio_features_pooled"] @ kernel + bias
    np.testing.assert_allclose(logits.numpy(), expected, atol=1e-4, rtol=1e-4)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["auto_map"]["AutoModelForAudioClassification"] == "modeling_vatt.VattForAudioClassification"


# --------------------------------------------------------------------------------------------------------------------
# Bad input: one clear error, nothing left behind
# --------------------------------------------------------------------------------------------------------------------


def assert_fails_cleanly(tmp_path: Path, match: str, checkpoint, **kwargs) -> None:
    output_parent = tmp_path / "outputs"
    output_parent.mkdir(exist_ok=True)
    before = sorted(output_parent.iterdir())
    with pytest.raises(ConversionError, match=match) as error:
        convert_checkpoint(checkpoint, output_parent / "converted", **kwargs)
    assert "\n" not in str(error.value)
    assert sorted(output_parent.iterdir()) == before


def copy_checkpoint(kind: str, destination: Path) -> Path:
    shutil.copytree(fixture_path(kind, "ckpt"), destination)
    destination.chmod(0o755)
    for file in destination.iterdir():
        file.chmod(0o644)
    return destination / "ckpt-500"


def test_path_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hello")
    assert_fails_cleanly(tmp_path, "no `checkpoint` state file", tmp_path / "notes")
    assert_fails_cleanly(
        tmp_path, r"not a TF checkpoint: .*readme\.txt\.index does not exist", tmp_path / "notes" / "readme.txt"
    )


def test_missing_index(tmp_path):
    prefix = copy_checkpoint("ut_fac", tmp_path / "ckpt")
    Path(f"{prefix}.index").unlink()
    assert_fails_cleanly(tmp_path, r"ckpt-500\.index does not exist", prefix)


def test_truncated_data_file(tmp_path):
    prefix = copy_checkpoint("tx_fac", tmp_path / "ckpt")
    data = Path(f"{prefix}.data-00000-of-00001")
    os.truncate(data, data.stat().st_size - 100)  # only optimizer state lies in the last bytes: still detected
    assert_fails_cleanly(tmp_path, "damaged or truncated", prefix)


def test_checkpoint_of_another_model(tmp_path):
    rng = np.random.default_rng(0)
    dense = {"layer_with_weights-0/kernel": rng.normal(size=(8, 4)), "layer_with_weights-0/bias": np.zeros(4)}
    keras_like = write_tf_checkpoint(tmp_path / "keras" / "ckpt-1", dense)
    assert_fails_cleanly(tmp_path, "not a VATT checkpoint", keras_like)
    other_root = write_tf_checkpoint(tmp_path / "other" / "ckpt-1", {"encoder/kernel": rng.normal(size=(8, 4))}, "net")
    assert_fails_cleanly(tmp_path, "not a VATT checkpoint", other_root)


def test_unmapped_and_missing_variables_stop_the_conversion(tmp_path):
    variables = read_model_variables("ut_fac")
    extra = {**variables, "_base_layer/unified_backbone/unified_transformer/mask_embedding": np.zeros(64, np.float32)}
    prefix = write_tf_checkpoint(tmp_path / "extra" / "ckpt-1", as_layer_paths(extra))
    assert_fails_cleanly(
        tmp_path, "1 checkpoint variables have no mapping: .*mask_embedding", prefix, audio_num_heads=4
    )
    lacking = {name: value for name, value in variables.items() if not name.endswith("tx/layers/1/mha/v/bias")}
    prefix = write_tf_checkpoint(tmp_path / "lacking" / "ckpt-1", as_layer_paths(lacking))
    assert_fails_cleanly(tmp_path, "lacks 1 variables: .*layers/1/mha/v/bias", prefix, audio_num_heads=4)


def test_head_count_that_cannot_be_inferred(tmp_path):
    prefix = checkpoint_prefix("ut_fac")
    assert_fails_cleanly(tmp_path, "pass --audio_num_heads", prefix)
    assert_fails_cleanly(tmp_path, "3 attention heads do not divide", prefix, audio_num_heads=3)


def test_vocabulary_of_the_wrong_size(tmp_path):
    vocab = write_vocab(tmp_path / "small_vocab.txt", 500)
    prefix = checkpoint_prefix("tx_fac")
    assert_fails_cleanly(
        tmp_path, "has 500 entries but the checkpoint's word table has 1000 rows", prefix, vocab_file=vocab
    )


def test_failed_verification_writes_nothing(tmp_path):
    prefix = checkpoint_prefix("tx_fac")
    assert_fails_cleanly(
        tmp_path, "differs from the reference", prefix, verify_against=reference_pair("tx_fac"), tolerance=1e-9
    )


def test_non_empty_output_folder_needs_overwrite(tmp_path):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "old.txt").write_text("keep me")
    with pytest.raises(ConversionError, match="exists and is not empty; pass --overwrite"):
        convert_checkpoint(fixture_path("ut_fac", "ckpt"), output_dir, audio_num_heads=4)
    assert [path.name for path in output_dir.iterdir()] == ["old.txt"]
    convert_checkpoint(fixture_path("ut_fac", "ckpt"), output_dir, audio_num_heads=4, overwrite=True)
    assert not (output_dir / "old.txt").exists() and (output_dir / "model.safetensors").is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]
    assert not (output_dir / "processor_config.json").exists()  # no vocabulary: feature extractor only


def test_command_line_error_is_one_line(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("x")
    command = [sys.executable, str(SCRIPT), "--tf_checkpoint", str(tmp_path), "--output_dir", str(tmp_path / "out")]
    run = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1].startswith("error: output folder")
    assert "Traceback" not in run.stderr


def test_model_card_reports_the_verification(converted, tmp_path):
    import yaml

    card = (converted["tx_fac"] / "README.md").read_text()
    assert "{{" not in card and "| `audio_interp_features_f64spline` |" in card and "float64" in card
    front_matter = yaml.safe_load(card.split("---\n")[1])
    assert front_matter["model-index"][0]["name"] == "tx_fac"
    # without a vocabulary (no processor) or for a classifier the converter writes its own card
    convert_checkpoint(checkpoint_prefix("ut_fac"), tmp_path / "out", audio_num_heads=4)
    card = (tmp_path / "out" / "README.md").read_text()
    assert yaml.safe_load(card.split("---\n")[1])["pipeline_tag"] == "zero-shot-audio-classification"
    assert "no tokenizer and no processor" in card and "Not verified" in card


def test_model_card_template_is_filled(monkeypatch, tmp_path, vocab_file):
    template = tmp_path / "model_card.md"
    template.write_text("# {{model_name}}\n{{results}}\n{{limitations}}\n")
    monkeypatch.setattr(convert_module, "MODEL_CARD_TEMPLATE", template)
    convert_checkpoint(
        checkpoint_prefix("ut_fac"),
        tmp_path / "out",
        vocab_file=vocab_file,
        audio_num_heads=4,
        verify_against=reference_pair("ut_fac"),
    )
    card = (tmp_path / "out" / "README.md").read_text()
    assert card.startswith("# out\nNo retrieval evaluation was run after conversion.")
    assert "| `text_interp_features_f64spline` |" in card and '"padding": "max_length"' in card
