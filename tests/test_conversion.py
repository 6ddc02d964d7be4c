"""Conversion of original TensorFlow VATT checkpoints, checked against outputs of the original TF model.

The reference data (`shared/fixtures/vatt_tf_reference`, beside the repository) holds two tiny checkpoints written by
the original google-research code: `tx_fac` (modality-specific) and `ut_fac` (modality-agnostic), with inputs and
outputs. Each is converted once per test module.
"""

import hashlib
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
import torch
from transformers import AutoModelForAudioClassification
from vatt_numpy_reference import AUDIO, TEXT, reference_outputs

import conversion.convert_vatt_original_to_hf as convert_module
from conversion.convert_vatt_original_to_hf import (
    MODEL_ROOT,
    VALUE_SUFFIX,
    ConversionError,
    convert_checkpoint,
    main,
    push_folder,
)
from conversion.hyperparameters import load_original_config
from conversion.verify import verify
from modeling_vatt import VattForAudioClassification, VattForContrastivePretraining
from modeling_vatt.model_card import SETTING_SOURCES

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
    # a fine-tuned model's original config is the WaT config itself
    wat_config = {**json.loads(fixture_path("config.json").read_text())["models"]["tx_fac"]["resolved_audio_config"]}
    wat_config["num_classes"] = 5
    result = convert_checkpoint(
        prefix,
        tmp_path / "with_config",
        original_config=write_json(tmp_path / "wat.json", wat_config),
        verify_against=reference_pair("tx_fac"),
    )
    assert result.settings.assumptions() == [] and max(result.errors.values()) < MAX_ERROR
    assert result.settings.by_source()["checkpoint"]["num_labels"] == 5


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


# --------------------------------------------------------------------------------------------------------------------
# Hyperparameters a checkpoint does not store: the original config, flags, and reported assumptions
# --------------------------------------------------------------------------------------------------------------------

MODIFIED_OUTPUTS = [
    "audio_features_pooled",
    "audio_features",
    "audio_head_tovid",
    "audio_head_tovat_derived",
    "text_features_pooled",
    "text_features",
    "text_head_tovid",
]
# every value of a tx_fac conversion the checkpoint does not store
TX_FAC_NOT_STORED = {
    "audio_config.num_attention_heads",
    "audio_config.head_dim",
    "audio pre_norm",
    "audio_config.hidden_act",
    "audio_config.layer_norm_eps",
    "audio patch stride",
    "text_config.relative_attention_max_distance",
    "text_config.hidden_act",
    "text_config.layer_norm_eps",
    "batch_norm_eps",
}


def original_model_config(kind: str) -> dict:
    return json.loads(fixture_path("config.json").read_text())["models"][kind]["model_config_as_dict"]


def write_json(path: Path, content: dict) -> Path:
    path.write_text(json.dumps(content, indent=1))
    return path


def run_converter(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd)


def assumed_lines(stdout: str) -> dict[str, str]:
    return {
        line.split(" = ")[0].removeprefix("assumed "): line
        for line in stdout.splitlines()
        if line.startswith("assumed ")
    }


def card_sources(card: str, source: str) -> str:
    """The model card's list of the settings from one source (`- **title:** ...`)."""
    return card.split(f"- **{SETTING_SOURCES[source]}:** ")[1].split("\n")[0]


@pytest.fixture(scope="module")
def modified_tx_fac(tmp_path_factory) -> dict[str, Path]:
    """The tx_fac fixture with non-default hyperparameters, written with TF's checkpoint writer: audio patches of 64
    samples and 2 heads (d_kv 32), text 8 heads (d_kv 8), 16 relative buckets and `max_relative_distance` 20. Its
    original config, and reference outputs from the independent numpy implementation of the original."""
    root = tmp_path_factory.mktemp("modified_tx_fac")
    variables = read_model_variables("tx_fac")
    patch_kernel = AUDIO + "wave_to_patch/kernel"
    variables[patch_kernel] = (variables[patch_kernel][:64] * np.sqrt(2)).astype(np.float32)
    bias_table = TEXT + "base_lm/layers/0/self_attention/attention/relative_attention_bias/embeddings"
    variables[bias_table] = np.random.default_rng(7).normal(0, 0.5, (16, 8)).astype(np.float32)
    prefix = write_tf_checkpoint(root / "ckpt" / "ckpt-9", as_layer_paths(variables))

    config = original_model_config("tx_fac")
    config["backbone_config"]["audio_model_kwargs"].update(
        temporal_patch_size=64, temporal_patch_stride=64, num_heads=2, d_kv=32
    )
    config["backbone_config"]["text_model_kwargs"].update(
        num_heads=8, d_kv=8, num_relative_buckets=16, max_relative_distance=20
    )
    fixture_inputs = np.load(reference_pair("tx_fac")[1])
    inputs = {"audio": fixture_inputs["audio"][:, :3200], "text_ids": fixture_inputs["text_ids"]}  # 50 patches of 64
    expected = reference_outputs(variables, config, inputs["audio"][..., 0], inputs["text_ids"])
    np.savez(root / "inputs.npz", **inputs)
    np.savez(root / "outputs.npz", **{name: value.astype(np.float32) for name, value in expected.items()})
    return {
        "checkpoint": prefix,
        "original_config": write_json(root / "original_config.json", config),
        "verify_against": (root / "outputs.npz", root / "inputs.npz"),
    }


def test_numpy_reference_reproduces_the_original():
    """The reference used for modified checkpoints is itself checked against the original's outputs."""
    outputs, inputs = (np.load(path) for path in reference_pair("tx_fac"))
    computed = reference_outputs(
        read_model_variables("tx_fac"), original_model_config("tx_fac"), inputs["audio"][..., 0], inputs["text_ids"]
    )
    for name, value in computed.items():
        assert np.abs(value - outputs[name]).max() < MAX_ERROR, name


def test_original_config_converts_non_default_hyperparameters(modified_tx_fac, tmp_path):
    result = convert_checkpoint(
        modified_tx_fac["checkpoint"],
        tmp_path / "out",
        original_config=modified_tx_fac["original_config"],
        verify_against=modified_tx_fac["verify_against"],
        tolerance=1e-5,
    )
    assert sorted(result.errors) == sorted(MODIFIED_OUTPUTS)
    assert max(result.errors.values()) < 1e-5
    assert result.settings.assumptions() == []
    sources = result.settings.by_source()
    assert set(sources["original config"]) == TX_FAC_NOT_STORED
    assert sources["checkpoint"]["text_config.relative_attention_num_buckets"] == 16
    audio, text = result.config.audio_config, result.config.text_config
    assert (audio.patch_size, audio.num_attention_heads, audio.head_dim) == (64, 2, 32)
    assert (text.num_attention_heads, text.head_dim, text.relative_attention_max_distance) == (8, 8, 20)
    card = (tmp_path / "out" / "README.md").read_text()
    from_config = card_sources(card, "original config")
    assert "`audio_config.num_attention_heads` = 2" in from_config
    assert "`text_config.relative_attention_max_distance` = 20" in from_config
    assert "`text_config.relative_attention_num_buckets` = 16" in card_sources(card, "checkpoint")
    assert card_sources(card, "assumed") == "none"


def test_without_original_config_every_assumption_is_printed(modified_tx_fac, tmp_path):
    outputs, inputs = modified_tx_fac["verify_against"]
    run = run_converter(
        "--tf_checkpoint", str(modified_tx_fac["checkpoint"]), "--output_dir", str(tmp_path / "out"), cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assumed = assumed_lines(run.stdout)
    assert set(assumed) == TX_FAC_NOT_STORED
    assert all("override with --" in line for line in assumed.values()), assumed
    distance = assumed["text_config.relative_attention_max_distance"]
    assert distance.startswith("assumed text_config.relative_attention_max_distance = 64: not stored")
    assert "--text_max_relative_distance or --original_config (backbone_config.text_model_kwargs." in distance
    heads = assumed["audio_config.num_attention_heads"]
    assert "= 8: the text tower's head count; override with --audio_num_heads" in heads
    assert "(backbone_config.audio_model_kwargs.num_heads)" in heads
    assert "(head_config.bridge[0].bn_config.epsilon)" in assumed["batch_norm_eps"]
    card = (tmp_path / "out" / "README.md").read_text()
    assumed_in_card = card_sources(card, "assumed")
    assert set(re.findall(r"`([^`]+)` = ", assumed_in_card)) == TX_FAC_NOT_STORED
    # the assumptions are wrong for this checkpoint, and the outputs show it
    errors = verify(VattForContrastivePretraining.from_pretrained(tmp_path / "out"), inputs, outputs)
    assert errors["text_features"] > 1e-2 and errors["audio_features"] > 1e-2

    # the flags fix the two that matter; the remaining assumptions are still reported
    result = convert_checkpoint(
        modified_tx_fac["checkpoint"],
        tmp_path / "flags",
        audio_num_heads=2,
        text_max_relative_distance=20,
        verify_against=modified_tx_fac["verify_against"],
        tolerance=1e-5,
    )
    assert max(result.errors.values()) < 1e-5
    assert set(assumed_lines(result.summary())) == TX_FAC_NOT_STORED - {
        "audio_config.num_attention_heads",
        "audio_config.head_dim",
        "text_config.relative_attention_max_distance",
    }
    assert set(result.settings.by_source()["command line"]) == {
        "audio_config.num_attention_heads",
        "audio_config.head_dim",
        "text_config.relative_attention_max_distance",
    }


@pytest.mark.parametrize("kind", ["tx_fac", "ut_fac"])
def test_fixture_checkpoints_with_their_original_config(kind, tmp_path):
    """The original configs of the reference fixture: no flag needed, nothing assumed, outputs unchanged."""
    config = write_json(tmp_path / "config.json", original_model_config(kind))
    result = convert_checkpoint(
        checkpoint_prefix(kind), tmp_path / "out", original_config=config, verify_against=reference_pair(kind)
    )
    assert sorted(result.errors) == sorted(EXPECTED_OUTPUTS[kind])
    assert max(result.errors.values()) < MAX_ERROR
    assert result.settings.assumptions() == [] and "assumed" not in result.summary()
    assert result.config.audio_config.num_attention_heads == 4


@pytest.mark.parametrize("kind", ["tx_fac", "ut_fac"])
def test_backbone_presets_resolve_as_the_original(kind, tmp_path):
    """Named presets with the config's overrides on top give the fixture's resolved backbone configs."""
    fixture = json.loads(fixture_path("config.json").read_text())["models"][kind]
    sections = load_original_config(write_json(tmp_path / "config.json", fixture["model_config_as_dict"]), kind)
    for section in ("audio", "text"):
        resolved = fixture.get(f"resolved_{section}_config") or fixture["resolved_unified_config"]
        assert {key: resolved[key] for key in sections[section] if key in resolved} == {
            key: value for key, value in sections[section].items() if key in resolved
        }


def test_original_config_that_contradicts_the_checkpoint(modified_tx_fac, tmp_path):
    """Shapes are checked against the config, and a flag against the config; both values are named."""
    prefix = modified_tx_fac["checkpoint"]
    config = json.loads(modified_tx_fac["original_config"].read_text())
    config["backbone_config"]["text_model_kwargs"]["num_relative_buckets"] = 32
    assert_fails_cleanly(
        tmp_path,
        r"the checkpoint gives text_config.relative_attention_num_buckets = 16 but original config .*buckets.json "
        r"sets backbone_config.text_model_kwargs.num_relative_buckets = 32\.",
        prefix,
        original_config=write_json(tmp_path / "buckets.json", config),
    )
    config = json.loads(modified_tx_fac["original_config"].read_text())
    config["backbone_config"]["audio_model_kwargs"]["num_heads"] = 4
    assert_fails_cleanly(
        tmp_path,
        r"attention width is 64 but original config .* sets num_heads \* d_kv = 4 \* 32",
        prefix,
        original_config=write_json(tmp_path / "heads.json", config),
    )
    assert_fails_cleanly(
        tmp_path,
        r"--text_max_relative_distance 64 contradicts original config .*max_relative_distance = 20\.",
        prefix,
        original_config=modified_tx_fac["original_config"],
        text_max_relative_distance=64,
    )
    # a released-style config names presets without overrides: WaT-Base is 768 wide, this checkpoint 64
    released = {**original_model_config("tx_fac")}
    released["backbone_config"] = {"audio_backbone": "wat_base", "text_backbone": "t5_small", "audio_model_kwargs": {}}
    assert_fails_cleanly(
        tmp_path,
        r"gives text_config.vocab_size = 1000 but .* sets backbone_config.text_model_kwargs.vocab_size = 65536",
        checkpoint_prefix("tx_fac"),
        original_config=write_json(tmp_path / "released.json", released),
    )


def test_unusable_original_config(tmp_path):
    prefix = checkpoint_prefix("tx_fac")
    assert_fails_cleanly(
        tmp_path, "original config .*missing.json does not exist", prefix, original_config=tmp_path / "missing.json"
    )
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert_fails_cleanly(tmp_path, "cannot read original config .*broken.json", prefix, original_config=broken)
    whole_fixture = fixture_path("config.json")
    assert_fails_cleanly(tmp_path, "holds several models", prefix, original_config=whole_fixture)
    unified = write_json(tmp_path / "ut.json", original_model_config("ut_fac"))
    assert_fails_cleanly(
        tmp_path,
        "has no backbone_config.audio_backbone, but the checkpoint is tx_fac",
        prefix,
        original_config=unified,
    )
    config = original_model_config("tx_fac")
    config["backbone_config"]["text_model_kwargs"]["activation"] = "relu"
    assert_fails_cleanly(
        tmp_path,
        r"backbone_config.text_model_kwargs.activation = 'relu' \(original config\) cannot be converted",
        prefix,
        original_config=write_json(tmp_path / "relu.json", config),
    )
    config = original_model_config("tx_fac")
    config["backbone_config"]["audio_backbone"] = "spt_base"
    assert_fails_cleanly(
        tmp_path,
        "names backbone_config.audio_backbone 'spt_base'",
        prefix,
        original_config=write_json(tmp_path / "spt.json", config),
    )


# --------------------------------------------------------------------------------------------------------------------
# Corrupt weights, swapped arguments, unwritable outputs, killed runs
# --------------------------------------------------------------------------------------------------------------------


def test_non_finite_weights_stop_the_conversion(tmp_path):
    variables = read_model_variables("ut_fac")
    kernel = "_base_layer/unified_backbone/unified_transformer/tx/layers/1/mha/v/kernel"
    variables[kernel] = variables[kernel].copy()
    variables[kernel][3, 5] = np.nan
    prefix = write_tf_checkpoint(tmp_path / "nan" / "ckpt-1", as_layer_paths(variables))
    assert_fails_cleanly(
        tmp_path, f"variable {MODEL_ROOT}{kernel} holds 1 non-finite values", prefix, audio_num_heads=4
    )
    variables[kernel][3, 5] = 0.0
    table = "_head_layer/_bridge_heads/0/va_to_vat/bn/moving_variance"
    variables[table] = np.full_like(variables[table], np.inf)
    prefix = write_tf_checkpoint(tmp_path / "inf" / "ckpt-1", as_layer_paths(variables))
    assert_fails_cleanly(tmp_path, f"{table} holds 40 non-finite values", prefix, audio_num_heads=4)


def test_swapped_reference_files_are_a_one_line_error(tmp_path):
    outputs, inputs = reference_pair("ut_fac")
    run = run_converter(
        *("--tf_checkpoint", str(checkpoint_prefix("ut_fac")), "--output_dir", str(tmp_path / "out")),
        *("--audio_num_heads", "4", "--verify_against", str(inputs), str(outputs)),
        cwd=tmp_path,
    )
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith(f"error: the reference files look swapped: {inputs} holds")
    assert sorted(path.name for path in tmp_path.iterdir()) == []
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not an archive")
    assert_fails_cleanly(
        tmp_path,
        "garbage.npz is not a readable .npz archive",
        checkpoint_prefix("ut_fac"),
        verify_against=(garbage, inputs),
    )


def test_unwritable_output_parent_is_a_one_line_error(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    for output_dir in (tmp_path / "a_file" / "out", Path("/sys/vatt-converted/out")):
        run = run_converter(
            *("--tf_checkpoint", str(checkpoint_prefix("ut_fac")), "--audio_num_heads", "4"),
            *("--output_dir", str(output_dir)),
            cwd=tmp_path,
        )
        assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
        assert (
            run.stderr.strip().splitlines()[-1].startswith(f"error: cannot create the parent folder of {output_dir}")
        )
    assert not Path("/sys/vatt-converted").exists()


def test_killed_conversion_is_cleaned_up_by_the_next_run(tmp_path, vocab_file):
    """A run killed while it writes leaves its staging folder; the next run into the same folder removes it."""
    command = [sys.executable, str(SCRIPT), "--tf_checkpoint", str(checkpoint_prefix("tx_fac"))]
    killed = subprocess.Popen(
        command + ["--output_dir", str(tmp_path / "out"), "--vocab_file", str(vocab_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.partial-*")) and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert [path.name.split("-")[0] for path in tmp_path.iterdir()] == [".out.partial"]
    # what a kill between the two renames of a replacement would leave, and a run still in progress
    (tmp_path / f".out.replaced-{killed.pid}-x1y2").mkdir()
    live = tmp_path / f".out.partial-{os.getpid()}-live"
    live.mkdir()

    convert_checkpoint(checkpoint_prefix("tx_fac"), tmp_path / "out")
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([live.name, "out"])
    assert (tmp_path / "out" / "model.safetensors").is_file()
