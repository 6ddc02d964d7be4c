"""Evaluation across voices: Wilson intervals, the real-speech set, and the sets reported by training and by
`examples/evaluate_retrieval.py` on a tiny trained model."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from modeling_vatt.corpus import build_corpus
from modeling_vatt.voice_evaluation import (
    available_sets,
    format_voice_table,
    load_evaluation_set,
    load_real_speech,
    resolve_sets,
    wilson_interval,
    with_confidence_intervals,
)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "speech"
SETS = "heldout_voices,piper,real_speech"


def test_wilson_interval_matches_known_values():
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(40, 1000) == pytest.approx((0.0295, 0.0540), abs=1e-4)
    with pytest.raises(ValueError, match="at least one item"):
        wilson_interval(0, 0)


def test_confidence_intervals_and_item_counts_are_added_per_level():
    results = {
        "window/audio_to_text_R@1": 0.25,
        "window/audio_to_text_chance_R@1": 0.0625,
        "window/audio_to_text_median_rank": 3.0,
        "recording/text_to_audio_R@1": 0.5,
    }
    extended = with_confidence_intervals(results, {"window": 16, "recording": 4})
    assert (extended["window/audio_to_text_R@1_low"], extended["window/audio_to_text_R@1_high"]) == wilson_interval(
        4, 16
    )
    assert extended["window/audio_to_text_items"] == 16 and extended["recording/text_to_audio_items"] == 4
    assert "window/audio_to_text_chance_R@1_low" not in extended  # chance levels get no interval
    table = format_voice_table({f"real_speech/{key}": value for key, value in extended.items()}, ["real_speech"])
    assert "real_speech/window/audio->text" in table and "4.0" in table  # 0.25 is 4x the chance of 1/16


def test_real_speech_set_reads_the_fixtures(tmp_path):
    data = load_real_speech(FIXTURES)
    assert data.num_rows == 10 and data[0]["text"].startswith("and mister john dashwood")
    assert "real_speech" in available_sets(FIXTURES) and "real_speech" not in available_sets(tmp_path)
    (tmp_path / "transcripts.tsv").write_text("only_a_name.flac\n")
    with pytest.raises(ValueError, match="file<TAB>transcript"):
        load_real_speech(tmp_path)
    with pytest.raises(ValueError, match="Unknown evaluation set"):
        load_evaluation_set("flite", tmp_path)


def test_set_names_resolve_against_what_can_be_built(tmp_path):
    assert resolve_sets("none", FIXTURES) == []
    assert resolve_sets("auto", FIXTURES, auto=["real_speech"]) == ["real_speech"]
    assert resolve_sets("auto", tmp_path, auto=["real_speech"]) == []  # no transcripts there: nothing to build
    assert resolve_sets(" heldout_voices , real_speech", FIXTURES) == ["heldout_voices", "real_speech"]
    with pytest.raises(ValueError, match="cannot be built here"):
        resolve_sets("real_speech", tmp_path)


def test_training_reports_every_set_and_the_evaluation_script_agrees(tmp_path):
    """The final evaluation of a tiny run reports the voice sets with intervals (JSON and model card); the standalone
    script, on the saved model, computes the same figures."""
    corpus_dir, output_dir = tmp_path / "corpus", tmp_path / "model"
    build_corpus(corpus_dir, size="tiny", show_progress=False)
    common = ["--corpus_dir", str(corpus_dir), "--corpus_size", "tiny"]
    train = [sys.executable, str(ROOT / "examples" / "run_pretraining.py"), "--model_preset", "tiny"]
    train += [*common, "--per_device_train_batch_size", "4", "--max_train_steps", "2", "--seed", "3"]
    train += ["--output_dir", str(output_dir), "--eval_voice_sets", SETS]
    result = subprocess.run(train, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    trained = json.loads((output_dir / "eval_results.json").read_text())
    for name in SETS.split(","):
        assert trained[f"{name}/window/audio_to_text_items"] >= 50
        low, high = trained[f"{name}/window/audio_to_text_R@1_low"], trained[f"{name}/window/audio_to_text_R@1_high"]
        assert low <= trained[f"{name}/window/audio_to_text_R@1"] <= high
    assert trained["real_speech/recording/audio_to_text_items"] == 10
    card = (output_dir / "README.md").read_text()
    assert "| heldout_voices | window | audio → text |" in card and "Wilson interval" in card

    script = [sys.executable, str(ROOT / "examples" / "evaluate_retrieval.py"), str(output_dir), "--sets", SETS]
    result = subprocess.run([*script, *common], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "piper/recording/text->audio" in result.stdout
    evaluated = json.loads((output_dir / "voice_eval_results.json").read_text())
    assert evaluated == pytest.approx({key: trained[key] for key in evaluated})
    assert len(evaluated) >= 3 * 40


def test_unknown_or_unbuildable_sets_stop_training_before_it_starts(tmp_path):
    train = [sys.executable, str(ROOT / "examples" / "run_pretraining.py"), "--model_preset", "tiny"]
    train += ["--corpus_size", "tiny", "--corpus_dir", str(tmp_path / "corpus"), "--output_dir", str(tmp_path / "m")]
    result = subprocess.run([*train, "--eval_voice_sets", "flite"], capture_output=True, text=True, timeout=600)
    assert result.returncode != 0 and "Unknown evaluation sets ['flite']" in result.stderr
    missing = [*train, "--eval_voice_sets", "real_speech", "--real_speech_dir", str(tmp_path)]
    result = subprocess.run(missing, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0 and "cannot be built here" in result.stderr
