"""End-to-end tests of `examples/run_pretraining.py`: multi-process training, exact resume, Hub-style loading, bad rows."""

import fnmatch
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from tests.helpers import hub_cache_snapshot, requires_festival, run_without_package

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "examples" / "run_pretraining.py"
TINY_RUN = ["--model_preset", "tiny", "--corpus_size", "tiny", "--per_device_train_batch_size", "4", "--seed", "3"]
NO_RANDOMNESS = json.dumps(
    {
        "audio_config": {"hidden_dropout_prob": 0.0, "attention_dropout": 0.0, "drop_token_rate": 0.0},
        "text_config": {"hidden_dropout_prob": 0.0, "attention_dropout": 0.0},
    }
)


def _load_script():
    spec = importlib.util.spec_from_file_location("run_pretraining", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


run_pretraining = _load_script()


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    from modeling_vatt.corpus import build_corpus

    corpus_dir = tmp_path_factory.mktemp("corpus")
    build_corpus(corpus_dir, size="tiny", show_progress=False)
    return corpus_dir


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    return env


def _train(args: list[str], num_processes: int = 1, timeout: int = 240) -> subprocess.CompletedProcess:
    env = _env()
    if num_processes == 1:
        command = [sys.executable, str(SCRIPT)]
    else:
        # `accelerate launch --cpu` starts a single process unless MPI is installed; the torchrun-based launcher
        # (`--multi_gpu`) with `ACCELERATE_USE_CPU` gives real CPU processes talking over gloo.
        env["ACCELERATE_USE_CPU"] = "true"
        command = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            str(num_processes),
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            str(SCRIPT),
        ]
    result = subprocess.run(command + args, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"training failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result


def _parameters(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _assert_same_parameters(first: dict, second: dict, atol: float) -> None:
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], atol=atol, rtol=0, msg=name)


def test_two_processes_gather_negatives_and_checkpoint(tiny_corpus, tmp_path):
    """2 processes x 2 clips must train exactly like 1 process x 4 clips: only true if negatives (and their
    gradients) cross processes. A large Adam epsilon keeps float noise in zero gradients (key biases) from being
    amplified into full-size updates."""
    common = [*TINY_RUN, "--corpus_dir", str(tiny_corpus), "--max_train_steps", "2", "--config_overrides"]
    common += [NO_RANDOMNESS, "--learning_rate", "5e-3", "--num_warmup_steps", "0", "--adam_epsilon", "1e-3"]
    two = tmp_path / "two"
    result = _train(
        [*common, "--per_device_train_batch_size", "2", "--output_dir", str(two), "--checkpointing_steps", "1"],
        num_processes=2,
    )
    assert "DistributedType.MULTI_CPU" in result.stderr and "Num processes: 2" in result.stderr
    checkpoint = two / "checkpoints" / "step_2"
    for name in ("model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl", "random_states_1.pkl"):
        assert (checkpoint / name).is_file(), name
    assert json.loads((checkpoint / "trainer_state.json").read_text())["completed_steps"] == 2

    one = tmp_path / "one"
    _train([*common, "--per_device_train_batch_size", "4", "--output_dir", str(one)])
    two_params = _parameters(two)
    # Each step moves a weight by about 2.5e-3 (Adam's first steps are close to lr * sign(grad)); float summation
    # order differs between the two layouts, so allow 4% of one step.
    _assert_same_parameters(two_params, _parameters(one), atol=1e-4)
    after_one_step = _parameters(two / "checkpoints" / "step_1")
    assert max((two_params[k] - after_one_step[k]).abs().max().item() for k in two_params) > 1e-3


def test_killed_run_resumes_to_identical_parameters(tiny_corpus, tmp_path):
    common = [*TINY_RUN, "--corpus_dir", str(tiny_corpus), "--max_train_steps", "6"]
    common += ["--gradient_accumulation_steps", "2", "--eval_steps", "3"]
    common += ["--speed_perturbation", "0.2", "--random_eq_db", "6", "--noise_snr_db", "10,30"]  # keyed draws too
    full = tmp_path / "full"
    _train([*common, "--output_dir", str(full), "--checkpointing_steps", "2", "--checkpoints_total_limit", "2"])
    assert sorted(path.name for path in (full / "checkpoints").iterdir()) == ["step_4", "step_6"]
    finished = _parameters(full)
    # Rerunning a finished run with `latest` (as `make train` does) evaluates and saves again without a further step.
    _train([*common, "--output_dir", str(full), "--resume_from_checkpoint", "latest"])
    _assert_same_parameters(finished, _parameters(full), atol=0)
    assert json.loads((full / "eval_results.json").read_text())["completed_steps"] == 6

    interrupted = tmp_path / "interrupted"
    command = [sys.executable, str(SCRIPT), *common, "--output_dir", str(interrupted), "--checkpointing_steps", "3"]
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = interrupted / "checkpoints" / "step_3"
    deadline = time.monotonic() + 180
    while not checkpoint.is_dir() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoint.is_dir(), "the run never wrote its step-3 checkpoint"
    # Whatever the killed run got to after step 3 is discarded: resume from step 3 exactly.
    for path in (interrupted / "checkpoints").iterdir():
        if path != checkpoint:
            shutil.rmtree(path)
    (interrupted / "model.safetensors").unlink(missing_ok=True)
    _train([*common, "--output_dir", str(interrupted), "--resume_from_checkpoint", str(checkpoint)])
    _assert_same_parameters(_parameters(full), _parameters(interrupted), atol=1e-7)
    history = json.loads((interrupted / "trainer_history.json").read_text())
    assert [step for step, _ in history["loss"]] == list(range(1, 7))


def test_latest_checkpoint_ignores_unfinished_saves(tmp_path):
    root = tmp_path / "checkpoints"
    for name in ("step_2", "step_10", ".step_12.tmp", "notes"):
        (root / name).mkdir(parents=True)
    assert [step for step, _ in run_pretraining.list_checkpoints(root)] == [2, 10]
    assert run_pretraining.resolve_checkpoint("latest", root) == root / "step_10"
    assert run_pretraining.resolve_checkpoint("latest", tmp_path / "none") is None
    with pytest.raises(ValueError, match="trainer_state.json"):
        run_pretraining.resolve_checkpoint(str(root / "step_2"), root)


class LocalHub:
    """`HfApi`-like stand-in with no server: an upload becomes a snapshot of the local Hub cache (`HF_HOME`)."""

    def __init__(self, hf_home: Path):
        self.hf_home = hf_home
        self.commits: list[tuple[str, list[str], str]] = []

    def create_repo(self, repo_id: str, exist_ok: bool = False, **kwargs):
        return repo_id

    def upload_folder(self, repo_id: str, folder_path: str, commit_message: str, ignore_patterns=(), **kwargs):
        revision = f"{len(self.commits) + 1:040x}"
        snapshot = hub_cache_snapshot(self.hf_home, repo_id, revision)
        uploaded = []
        for path in sorted(Path(folder_path).rglob("*")):
            relative = path.relative_to(folder_path).as_posix()
            if path.is_file() and not any(fnmatch.fnmatch(relative, pattern) for pattern in ignore_patterns):
                (snapshot / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, snapshot / relative)
                uploaded.append(relative)
        self.commits.append((repo_id, uploaded, commit_message))


def test_pushed_model_loads_by_repo_id_offline(tiny_corpus, tmp_path):
    from transformers import AutoModel, AutoProcessor

    hub = LocalHub(Path(os.environ["HF_HOME"]))
    output_dir = tmp_path / "pushed"
    run_pretraining.main(
        [*TINY_RUN, "--corpus_dir", str(tiny_corpus), "--max_train_steps", "2", "--output_dir", str(output_dir)]
        + ["--checkpointing_steps", "1", "--push_to_hub", "--hub_model_id", "acme/vatt-tiny-pretrained"],
        hub_api=hub,
    )
    ((repo_id, uploaded, message),) = hub.commits
    assert repo_id == "acme/vatt-tiny-pretrained" and message == "End of training"
    assert {"config.json", "model.safetensors", "README.md", "modeling_vatt.py", "tokenizer.json"} <= set(uploaded)
    assert {"loss_curve.png", "similarity_matrix.png", "processor_config.json"} <= set(uploaded)
    assert not [name for name in uploaded if name.startswith("checkpoints/")]
    card = ModelCard.load(output_dir / "README.md", ignore_metadata_errors=False)
    assert card.data.pipeline_tag == "zero-shot-audio-classification"
    assert card.data.library_name == "transformers"
    assert card.data.eval_results, "the model-index holds no metric"
    assert "| word table | frozen, char ngram initialisation |" in card.text
    assert "waveform patch features" in card.text  # the tiny preset keeps the original raw-waveform patches

    model = AutoModel.from_pretrained("acme/vatt-tiny-pretrained")
    processor = AutoProcessor.from_pretrained("acme/vatt-tiny-pretrained")
    _assert_same_parameters(_parameters(output_dir), dict(model.state_dict()), atol=0)
    rate = processor.feature_extractor.sampling_rate
    audio = np.random.default_rng(0).standard_normal(rate // 2).astype(np.float32)
    inputs = processor(text=["a passage", "another passage"], audio=audio, sampling_rate=rate, return_tensors="pt")
    with torch.no_grad():
        expected = model(**inputs).logits_per_audio
    np.save(tmp_path / "audio.npy", audio)

    remote = run_without_package(
        f"""
        import numpy as np, torch
        from transformers import AutoModel, AutoProcessor
        model = AutoModel.from_pretrained("acme/vatt-tiny-pretrained", trust_remote_code=True)
        processor = AutoProcessor.from_pretrained("acme/vatt-tiny-pretrained", trust_remote_code=True)
        audio = np.load({str(tmp_path / "audio.npy")!r})
        inputs = processor(text=["a passage", "another passage"], audio=audio,
                           sampling_rate=processor.feature_extractor.sampling_rate, return_tensors="pt")
        with torch.no_grad():
            print(model(**inputs).logits_per_audio.tolist())
        """,
        cwd=tmp_path,
    )
    torch.testing.assert_close(torch.tensor(json.loads(remote.strip().splitlines()[-1])), expected)


def _write_clip(path: Path, seconds: float, rate: int = 16000, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    sf.write(path, 0.1 * rng.standard_normal(int(seconds * rate)).astype(np.float32), rate)


def test_bad_rows_are_skipped_counted_and_reported(tiny_corpus, tmp_path, caplog):
    from datasets import load_from_disk

    corpus = load_from_disk(str(tiny_corpus / "dataset"))
    audio_dir = tmp_path / "audio"
    audio_dir.mkdir()
    rows = []
    for split in ("train", "validation", "test"):
        for example in corpus[split]:
            rows.append({"audio": str(tiny_corpus / "audio" / f"{example['id']}.flac"), "text": example["text"]})
    (audio_dir / "broken.flac").write_bytes(b"this is not audio")
    sf.write(audio_dir / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    _write_clip(audio_dir / "silent_text.wav", 1.0)
    rows += [
        {"audio": str(audio_dir / "broken.flac"), "text": "unreadable audio file"},
        {"audio": str(audio_dir / "empty.wav"), "text": "an empty recording"},
        {"audio": str(audio_dir / "silent_text.wav"), "text": "   "},
    ]
    # A timed row whose timings were written in milliseconds: every word lies beyond its audio.
    first = corpus["train"][0]
    in_milliseconds = {name: [1000 * value for value in first[name]] for name in ("word_starts", "word_ends")}
    rows.append({**rows[0], "words": first["words"], **in_milliseconds})
    train_file = tmp_path / "train.jsonl"
    train_file.write_text("".join(json.dumps(row) + "\n" for row in rows[:2] + rows[4:]))
    validation_file = tmp_path / "validation.jsonl"
    validation_file.write_text("".join(json.dumps(row) + "\n" for row in rows[2:4]))
    output_dir = tmp_path / "out"
    args = ["--model_preset", "tiny", "--per_device_train_batch_size", "4", "--max_train_steps", "1"]
    args += [
        "--train_file",
        str(train_file),
        "--validation_file",
        str(validation_file),
        "--output_dir",
        str(output_dir),
    ]
    with caplog.at_level(logging.INFO):
        final = run_pretraining.main(args)
    summary = json.loads((output_dir / "eval_results.json").read_text())
    assert summary["skipped_rows"] == {
        "unreadable audio": 1,
        "empty audio": 1,
        "empty transcript": 1,
        "word timings outside the audio": 1,
    }
    assert "Skipped 4 row(s)" in caplog.text
    # The trained model is on disk before the final evaluation can fail.
    assert caplog.text.index("Saved the final model") < caplog.text.index("validation (step 1)")
    # Two long held-out recordings: scored window by window and as whole recordings against full transcripts.
    assert summary["eval_recordings"] == 2
    assert final["validation/recording/audio_to_text_chance_R@1"] == pytest.approx(0.5)
    assert 0 <= final["validation/window/audio_to_text_R@1"] <= 1

    with pytest.raises(ValueError, match=r"Missing text column 'transcript'.*\['audio', 'text'"):
        run_pretraining.main([*args, "--overwrite_output_dir", "--text_column", "transcript"])


def test_validation_data_without_usable_windows_stops_the_run_before_training(tiny_corpus, tmp_path):
    from datasets import load_from_disk

    corpus = load_from_disk(str(tiny_corpus / "dataset"))

    def manifest(split: str, scale: float) -> Path:
        path = tmp_path / f"{split}.jsonl"
        with path.open("w") as file:
            for example in corpus[split]:
                row = {"audio": str(tiny_corpus / "audio" / f"{example['id']}.flac"), "words": example["words"]}
                row.update({name: [scale * t for t in example[name]] for name in ("word_starts", "word_ends")})
                file.write(json.dumps({**row, "text": example["text"]}) + "\n")
        return path

    output_dir = tmp_path / "out"
    args = ["--model_preset", "tiny", "--per_device_train_batch_size", "4", "--max_train_steps", "1"]
    args += ["--train_file", str(manifest("train", 1.0)), "--validation_file", str(manifest("validation", 1000.0))]
    with pytest.raises(ValueError, match=r"(?s)No usable recordings in the 'validation' data.*outside the audio"):
        run_pretraining.main([*args, "--output_dir", str(output_dir), "--checkpointing_steps", "1"])
    assert not (output_dir / "checkpoints").exists()


def test_new_run_refuses_a_folder_holding_another_run(tiny_corpus, tmp_path):
    output_dir = tmp_path / "out"
    common = [*TINY_RUN, "--corpus_dir", str(tiny_corpus), "--output_dir", str(output_dir), "--checkpointing_steps"]
    run_pretraining.main([*common, "1", "--max_train_steps", "3"])
    assert [step for step, _ in run_pretraining.list_checkpoints(output_dir / "checkpoints")] == [1, 2, 3]

    new_run = [*common, "1", "--max_train_steps", "2", "--checkpoints_total_limit", "1"]
    with pytest.raises(ValueError, match=r"is not empty: it holds another run.*--overwrite_output_dir"):
        run_pretraining.main(new_run)
    run_pretraining.main([*new_run, "--overwrite_output_dir"])
    # The older run's step-3 checkpoint is gone, so the limit keeps the new run's own checkpoint.
    assert [step for step, _ in run_pretraining.list_checkpoints(output_dir / "checkpoints")] == [2]
    history = json.loads((output_dir / "trainer_history.json").read_text())
    assert [step for step, _ in history["loss"]] == [1, 2]

    run_pretraining.main([*common, "1", "--max_train_steps", "3", "--resume_from_checkpoint", "latest"])
    history = json.loads((output_dir / "trainer_history.json").read_text())
    assert [step for step, _ in history["loss"]] == [1, 2, 3]
    with pytest.raises(SystemExit):
        run_pretraining.parse_args([*new_run, "--overwrite_output_dir", "--resume_from_checkpoint", "latest"])


def test_hub_token_never_reaches_the_tracker_logs(tiny_corpus, tmp_path):
    output_dir = tmp_path / "tracked"
    token = "hf_doNotLogThisSecret0123456789"
    args = [*TINY_RUN, "--corpus_dir", str(tiny_corpus), "--output_dir", str(output_dir), "--max_train_steps", "1"]
    run_pretraining.main([*args, "--with_tracking", "--hub_token", token])
    (hparams,) = (output_dir / "runs").rglob("hparams.yml")
    assert "learning_rate" in hparams.read_text()
    logged = [path for path in output_dir.rglob("*") if path.is_file() and token.encode() in path.read_bytes()]
    assert not logged


def test_final_model_is_replaced_atomically(tmp_path):
    from modeling_vatt import VattConfig, VattForContrastivePretraining

    torch.manual_seed(0)
    old = VattForContrastivePretraining(VattConfig.from_preset("tiny"))
    new = VattForContrastivePretraining(VattConfig.from_preset("tiny", projection_dim=16))
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"shard of an even older save")
    run_pretraining.save_atomically(tmp_path, old.save_pretrained)
    assert not (tmp_path / "model-00001-of-00002.safetensors").exists()

    def killed_while_saving(folder: Path) -> None:
        new.save_pretrained(folder)
        (folder / "model.safetensors").write_bytes(b"")  # the weights were being written
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_pretraining.save_atomically(tmp_path, killed_while_saving)
    kept = VattForContrastivePretraining.from_pretrained(tmp_path)
    assert kept.config.projection_dim == 32
    _assert_same_parameters(dict(kept.state_dict()), dict(old.state_dict()), atol=0)

    run_pretraining.save_atomically(tmp_path, new.save_pretrained)
    assert VattForContrastivePretraining.from_pretrained(tmp_path).config.projection_dim == 16
    assert not (tmp_path / ".final.tmp").exists()


def test_config_overrides_of_a_loaded_model_keep_config_and_weights_consistent(tmp_path):
    from modeling_vatt import VattConfig, VattForContrastivePretraining
    from modeling_vatt.feature_extraction_vatt import VattFeatureExtractor
    from modeling_vatt.processing_vatt import VattProcessor
    from modeling_vatt.tokenization_vatt import VattTokenizer

    saved = VattForContrastivePretraining(VattConfig.from_preset("tiny"))
    saved.save_pretrained(tmp_path)
    VattProcessor(VattFeatureExtractor(), VattTokenizer.from_corpus(["a few words"])).save_pretrained(tmp_path)

    def load(overrides: dict):
        overrides = json.dumps(overrides)
        args = run_pretraining.parse_args(["--model_name_or_path", str(tmp_path), "--config_overrides", overrides])
        return run_pretraining.build_model_and_processor(args, [])[0]

    model = load({"audio_config": {"drop_token_rate": 0.25}, "loss_type": "symmetric"})
    assert model.config.audio_config.drop_token_rate == 0.25 and model.config.loss_type == "symmetric"
    _assert_same_parameters(dict(model.state_dict()), dict(saved.state_dict()), atol=0)
    with pytest.raises(ValueError, match=r"changes the architecture of .*weights differ"):
        load({"audio_config": {"hidden_size": 32}})
    with pytest.raises(ValueError, match=r"changes the architecture"):
        load({"text_config": {"num_hidden_layers": 3}})
    with pytest.raises(ValueError, match=r"VattAudioConfig has no field 'hidden_sise'"):
        load({"audio_config": {"hidden_sise": 32}})


def test_window_longer_than_position_table_without_windowing_is_refused(tiny_corpus, tmp_path):
    overrides = json.dumps({"audio_config": {"long_input_mode": "full", "position_interpolation": "spline"}})
    args = [*TINY_RUN, "--corpus_dir", str(tiny_corpus), "--output_dir", str(tmp_path), "--max_train_steps", "1"]
    with pytest.raises(ValueError, match=r"more than the 50-row position table.*--window_seconds 0\.133"):
        run_pretraining.main([*args, "--config_overrides", overrides, "--window_seconds", "1"])


def test_retrieval_wiring_matches_hand_computed_ranks():
    from modeling_vatt.metrics import load_retrieval_metric

    audio = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    text = torch.tensor([[1.0, 0.1], [1.0, 0.0], [0.0, 1.0]])
    similarity = run_pretraining.cosine_similarity(audio, text)
    # Hand-computed cosines: audio 0 -> (0.995, 1, 0), audio 1 -> (0.0995, 0, 1), audio 2 -> (0.774, 0.707, 0.707).
    np.testing.assert_allclose(similarity[2], [1.1 / np.sqrt(2 * 1.01), np.sqrt(0.5), np.sqrt(0.5)], rtol=1e-6)
    # audio->text ranks of the correct texts: 2, 3, 3 (ties count against); text->audio ranks: 1, 3, 2.
    results = run_pretraining.retrieval_metrics(similarity, load_retrieval_metric(keep_in_memory=True))
    assert results["audio_to_text_R@1"] == 0.0
    assert results["audio_to_text_median_rank"] == 3.0
    assert results["audio_to_text_mean_rank"] == pytest.approx(8 / 3)
    assert results["text_to_audio_R@1"] == pytest.approx(1 / 3)
    assert results["text_to_audio_median_rank"] == 2.0
    assert results["audio_to_text_chance_R@1"] == pytest.approx(1 / 3)
    table = run_pretraining.format_retrieval_table({f"window/{key}": value for key, value in results.items()})
    assert "window/audio->text" in table and "0.000 (0.333)" in table


def test_model_card_renders_valid_metadata_and_names_missing_fields():
    from modeling_vatt.model_card import render_model_card

    results = {"test/window/audio_to_text_R@1": 0.25, "test/window/audio_to_text_chance_R@1": 0.05, "accuracy": 0.5}
    results |= {"heldout_voices/window/text_to_audio_R@1": 0.5, "heldout_voices/window/text_to_audio_R@1_low": 0.25}
    results |= {"heldout_voices/window/text_to_audio_R@1_high": 0.75, "heldout_voices/window/text_to_audio_items": 12}
    card = render_model_card(
        None,
        model_name="acme/vatt",
        dataset="my-speech",
        training_data="Lectures.",
        hyperparameters={"lr": 1e-3, "steps": 10},
        results=results,
    )
    metadata = ModelCard(card, ignore_metadata_errors=False).data
    assert metadata.license == "apache-2.0" and metadata.datasets == ["my-speech"]
    values = {(result.dataset_split, result.metric_name): result.metric_value for result in metadata.eval_results}
    assert values == {
        ("test", "window audio->text R@1"): 0.25,
        ("test", "accuracy"): 0.5,
        ("heldout_voices", "window text->audio R@1"): 0.5,  # intervals and counts stay out of the model index
    }
    assert "| test | window | audio → text | - | 0.250 (0.050) | - | - | - |" in card
    assert "| heldout_voices | window | text → audio | 12 | 0.500 [0.250, 0.750] | - | - | - |" in card
    assert "95 % Wilson interval" in card
    assert "| lr | 0.001 |" in card
    with pytest.raises(ValueError, match=r"\['training_data'\]"):
        render_model_card(None, model_name="acme/vatt", dataset="my-speech")


def test_installed_wheel_carries_the_model_card_template(tmp_path):
    """Scripts render cards from the package's copy of the repository's `model_card.md`, also when pip-installed."""
    import zipfile

    from modeling_vatt.model_card import DEFAULT_TEMPLATE

    assert DEFAULT_TEMPLATE.read_text() == (REPO_ROOT / "model_card.md").read_text()
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path)]
    subprocess.run([*command, str(REPO_ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packaged = archive.read("modeling_vatt/data/model_card.md").decode()
    assert packaged == (REPO_ROOT / "model_card.md").read_text()


@pytest.mark.parametrize("name", ["cpu", "single_gpu", "multi_gpu_ddp", "fsdp", "deepspeed_zero2"])
def test_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    config = load_config_from_file(str(REPO_ROOT / "examples" / "accelerate_configs" / f"{name}.yaml"))
    expected = {
        "cpu": DistributedType.NO,
        "single_gpu": DistributedType.NO,
        "multi_gpu_ddp": DistributedType.MULTI_GPU,
        "fsdp": DistributedType.FSDP,
        "deepspeed_zero2": DistributedType.DEEPSPEED,
    }
    assert config.distributed_type == expected[name]
    assert config.use_cpu == (name == "cpu")


def test_models_from_scratch_start_from_frozen_character_ngram_word_vectors():
    from modeling_vatt.word_vectors import tokenizer_word_vectors

    texts = ["the object and its objects", "a lambda expression"]
    args = run_pretraining.parse_args(["--model_preset", "cpu"])
    model, processor = run_pretraining.build_model_and_processor(args, texts)
    table = model.text_model.get_input_embeddings().weight
    expected = tokenizer_word_vectors(processor.tokenizer, table.shape[1], seed=args.seed)
    torch.testing.assert_close(table, expected, rtol=0, atol=0)
    assert not table.requires_grad
    assert model.config.audio_config.patch_features == "log_spectrum"

    args = run_pretraining.parse_args(["--model_preset", "cpu", "--word_vectors", "random"])
    random_table = run_pretraining.build_model_and_processor(args, texts)[0].text_model.get_input_embeddings().weight
    assert (random_table - expected).abs().max() > 0.1


def test_augmentation_arguments_are_checked_and_described():
    args = run_pretraining.parse_args(
        ["--speed_perturbation", "0.15", "--random_eq_db", "10", "--noise_snr_db", "15,40"]
    )
    augmentation = run_pretraining.waveform_augmentation(args)
    assert (augmentation.speed, augmentation.eq_db, augmentation.snr_db) == (0.15, 10.0, (15.0, 40.0))
    assert run_pretraining.augmentation_description(augmentation) == (
        "speed x0.85-1.15, random equaliser +-10 dB, white noise at 15-40 dB SNR"
    )
    assert (
        run_pretraining.augmentation_description(run_pretraining.waveform_augmentation(run_pretraining.parse_args([])))
        == "none"
    )
    half = run_pretraining.parse_args(["--speed_perturbation", "0.1", "--augmentation_probability", "0.5"])
    assert run_pretraining.augmentation_description(run_pretraining.waveform_augmentation(half)) == (
        "speed x0.9-1.1 on 50% of the windows"
    )
    for bad in ("40,15", "20", "a,b"):
        with pytest.raises(SystemExit):
            run_pretraining.parse_args(["--noise_snr_db", bad])
    with pytest.raises(ValueError, match="speed"):
        run_pretraining.waveform_augmentation(run_pretraining.parse_args(["--speed_perturbation", "1.5"]))


def test_extra_training_voices_are_checked():
    assert run_pretraining.parse_args([]).extra_training_voices == []
    assert run_pretraining.parse_args(["--extra_training_voices", "festival"]).extra_training_voices == ["festival"]
    for bad in (["piper"], ["festival", "--train_file", "data.csv"], ["festival", "--dataset_name", "some/data"]):
        with pytest.raises(SystemExit):
            run_pretraining.parse_args(["--extra_training_voices", *bad])


@requires_festival
def test_festival_renderings_join_the_training_split(tiny_corpus, tmp_path):
    output_dir = tmp_path / "run"
    result = _train(
        [*TINY_RUN, "--corpus_dir", str(tiny_corpus), "--max_train_steps", "1", "--eval_voice_sets", "none"]
        + ["--extra_training_voices", "festival", "--output_dir", str(output_dir)]
    )
    assert "Recordings: 4 train, 1 eval" in result.stderr  # 2 espeak-ng + 2 Festival renderings of the same passages
    assert "Festival's ked diphone voice" in (output_dir / "README.md").read_text()
