"""
Benchmarks: a tiny smoke run of the scripts, the timing helpers, bf16 agreement, the compiled paths, the long-audio
recordings and the GPU check (its skip without a GPU, and a tiny rehearsal of every code path on CPU).
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_encoders  # noqa: E402
import bench_long_audio  # noqa: E402
import gpu_check  # noqa: E402
import timing  # noqa: E402

BF16_MIN_COSINE = 0.999  # pooled outputs of a bf16 forward vs fp32 (the tolerance)


def test_run_all_quick_writes_every_table(tmp_path):
    output = tmp_path / "results.md"
    command = [sys.executable, str(BENCHMARKS / "run_all.py"), "--quick", "--threads", "1", "--output", str(output)]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    report = output.read_text()
    assert "- CPU: " in report and "torch threads: 1" in report
    titles = (
        "VATT vs transformers",
        "Training with dropout 0.1",
        "DropToken",
        "Eager vs SDPA",
        "fp32 vs bf16",
        "Long transcripts",
        "Long recordings",
    )
    for title in titles:
        assert f"### {title}" in report, title
    memory_section = report.split("### Long transcripts")[1].split("###")[0]
    memory_rows = [line.split(" | ") for line in memory_section.splitlines() if line.startswith("| text tiny | ")]
    assert [row[1] for row in memory_rows] == ["32", "64"]
    assert all(float(row[2]) > 0 and float(row[3]) > 50 for row in memory_rows)
    peer_section = report.split("### VATT vs transformers")[1].split("###")[0]
    peer_rows = [line for line in peer_section.splitlines() if line.startswith(("| audio |", "| text |"))]
    assert len(peer_rows) == 12  # (audio vs ViT, text vs BERT, text vs T5) x 2 lengths x (forward, fwd+bwd)
    assert sum("| T5EncoderModel |" in row for row in peer_rows) == 4
    dropout_section = report.split("### Training with dropout")[1].split("###")[0]
    dropout_rows = [line.split(" | ")[1:5] for line in dropout_section.splitlines() if line.startswith("| ")][1:]
    assert dropout_rows == [
        ["tiny (sdpa)", "50", "ViTModel", "fwd+bwd"],
        ["tiny (eager)", "50", "ViTModel", "fwd+bwd"],
        ["tiny (sdpa)", "32", "BertModel", "fwd+bwd"],
        ["tiny (eager)", "32", "BertModel", "fwd+bwd"],
    ]
    long_rows = [line for line in report.splitlines() if line.startswith("| tiny | 2 s |")]
    assert [row.split(" | ")[2] for row in long_rows] == list(bench_long_audio.MODES)
    for row in long_rows:
        compute, real_time_factor, peak_mib = (float(cell) for cell in row.split(" | ")[3:6])
        assert compute > 0 and real_time_factor == pytest.approx(2 / compute, rel=0.01) and peak_mib > 50


def test_encoder_flops_formula():
    # 1 layer, T=10, d=4, a=8, f=16, p=2: 2*10*2*4 + 8*10*4*8 + 4*10*4*16 + 4*100*8
    assert timing.encoder_flops(10, 4, 1, 16, 8, 2) == 160 + 2560 + 2560 + 3200
    assert timing.encoder_flops(10, 4, 3, 16, 8, 2) == 160 + 3 * (2560 + 2560 + 3200)


def test_alternate_times_every_function_each_round():
    calls = []
    times = timing.alternate({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3, warmup=1)
    assert calls == ["a", "b"] * 4
    assert {name: len(values) for name, values in times.items()} == {"a": 3, "b": 3}
    assert len(timing.alternate({"a": lambda: None}, 5, warmup=0, time_budget=0.0)["a"]) == 1
    with pytest.raises(ValueError, match="repetitions"):
        timing.alternate({"a": lambda: None}, 0)


def test_matmul_ceiling_and_table():
    assert timing.matmul_ceiling(64, 64, 64, min_seconds=0.01)() > 0
    table = timing.markdown_table(["name", "value"], [["x", 0.123456], ["y", 12345.6]])
    assert table.splitlines() == ["| name | value |", "|---|---|", "| x | 0.123 |", "| y | 12,346 |"]


def test_peak_rss_is_the_childs_own():
    allocate = f"import sys; sys.path.insert(0, {str(BENCHMARKS)!r}); import numpy, timing; "
    allocate += "numpy.ones({}).sum(); print('done'); timing.report_peak_rss()"
    _, small = timing.run_with_peak_rss([sys.executable, "-c", allocate.format(1000)])
    stdout, large = timing.run_with_peak_rss([sys.executable, "-c", allocate.format(40_000_000)])  # 305 MiB
    assert stdout == "done\n"
    assert 250 * 2**20 < large - small < 400 * 2**20
    with pytest.raises(RuntimeError, match="exit code 3"):
        timing.run_with_peak_rss([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(RuntimeError, match="did not report"):
        timing.run_with_peak_rss([sys.executable, "-c", "print('no report')"])


def test_bf16_audio_pooled_output_agrees_with_fp32():
    torch.manual_seed(0)
    model, inputs = bench_encoders.audio_model("small", 300)
    agreement = bench_encoders.bf16_agreement(model, inputs)
    assert set(agreement) == {"autocast", "bf16 weights"}
    for variant, similarity in agreement.items():
        assert BF16_MIN_COSINE <= similarity <= 1.0 + 1e-6, (variant, similarity)


def test_bf16_text_pooled_output_agrees_with_fp32():
    # Relies on T5's initialiser for the unscaled attention (query std (hidden * head_dim)^-1/2): with Glorot
    # queries the random-init logits are ~8x too peaked and bf16 drifts (cosine ~0.885 at 512 tokens).
    torch.manual_seed(0)
    model, inputs = bench_encoders.text_model("small", 64)
    for variant, similarity in bench_encoders.bf16_agreement(model, inputs).items():
        assert BF16_MIN_COSINE <= similarity <= 1.0 + 1e-6, (variant, similarity)


COMPILED_MAX_ABS_DIFF = 1e-4  # pooled outputs of the compiled inference path vs eager fp32


@pytest.mark.parametrize("tower", ["audio", "text"])
def test_compiled_inference_path_agrees_with_eager(tower):
    """The README's recipe (`torch.compile` with inductor weight freezing) on both towers (text: the strided bias)."""
    torch.manual_seed(0)
    model, inputs = (
        bench_encoders.audio_model("tiny", 60) if tower == "audio" else bench_encoders.text_model("tiny", 40)
    )
    eager = bench_encoders.forward_fn(model, inputs)()
    compiled = bench_encoders.compiled_forward_fn(model, inputs)()
    assert compiled.shape == eager.shape
    torch.testing.assert_close(compiled, eager, rtol=0, atol=COMPILED_MAX_ABS_DIFF)


def test_peer_pairs_see_the_same_tokens():
    audio = bench_encoders.audio_pair("tiny", 120)  # longer than the 50-row table: full attention
    assert audio.vatt.config.long_input_mode == "full"
    with torch.inference_mode():
        assert audio.vatt.eval()(**audio.vatt_inputs).last_hidden_state.shape[1] == audio.tokens == 121
        assert audio.peer.eval()(**audio.peer_inputs).last_hidden_state.shape[1] == 121
    text = bench_encoders.text_pair("tiny", 40)
    with torch.inference_mode():
        assert text.vatt.eval()(**text.vatt_inputs).last_hidden_state.shape[1] == text.tokens == 41
        assert text.peer.eval()(**text.peer_inputs).last_hidden_state.shape[1] == 41


def test_synthetic_recording_reads_consistent_ranges():
    recording = bench_long_audio.SyntheticRecording(2.5, sampling_rate=1000, seed=3)
    whole = recording.read(0, recording.num_samples)
    assert whole.shape == (1, 2500) and whole.std() > 0.05
    torch.testing.assert_close(recording.read(950, 2100), whole[:, 950:2100], rtol=0, atol=0)
    assert recording.read(2400, 9999).shape == (1, 100)


def test_recording_file_holds_the_synthetic_samples(tmp_path):
    path = bench_long_audio.write_recording(tmp_path / "noise.wav", 2.5, block_seconds=1)
    samples, rate = soundfile.read(path, dtype="float32")
    expected = bench_long_audio.SyntheticRecording(2.5).read(0, 120_000)[0].numpy()
    assert rate == 48_000 and samples.shape == (120_000,)
    np.testing.assert_array_equal(samples, expected)


def test_peers_copy_vatts_dropout():
    pair = bench_encoders.text_pair("tiny", 16, dropout=0.1)
    assert pair.vatt.config.attention_dropout == pair.peer.config.attention_probs_dropout_prob == 0.1
    assert pair.vatt.config.hidden_dropout_prob == pair.peer.config.hidden_dropout_prob == 0.1
    t5 = bench_encoders.t5_pair("tiny", 16, dropout=0.1)
    assert t5.peer.config.dropout_rate == 0.1


def test_compiled_training_step_matches_eager_gradients():
    """
    The compiled forward+backward of `make bench` against eager, text tower with a trained bias: at 129 tokens the
    strided bias view corrupted the heap under inductor (the compiled trained path now takes the dense layout).
    """
    results = []
    for make in (bench_encoders.train_step_fn, bench_encoders.compiled_train_step_fn):
        model, inputs = bench_encoders.tower_model("text", "tiny", 129)
        output = make(model, inputs)()
        grads = {name: parameter.grad for name, parameter in model.named_parameters() if parameter.requires_grad}
        assert grads["encoder.relative_attention_bias.weight"] is not None
        results.append([output, *grads.values()])
    for compiled, eager in zip(*results):
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5 * eager.abs().max().item())


def test_gpu_check_skips_cleanly_without_a_gpu():
    assert not torch.cuda.is_available()  # this suite runs on CPU machines; on a GPU the check would run for real
    command = [sys.executable, str(BENCHMARKS / "gpu_check.py")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == (
        "gpu_check: no CUDA GPU is available here; skipping (run `make gpu-check` on a GPU machine)."
    )
    refused = subprocess.run([*command, "--device", "cpu"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--device cpu needs --tiny" in refused.stderr


def test_gpu_check_rehearses_every_row_on_cpu():
    """`--device cpu --tiny` runs every measurement of the GPU check; correctness rows must pass, none may raise."""
    command = [sys.executable, str(BENCHMARKS / "gpu_check.py"), "--device", "cpu", "--tiny"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = [line.split(" | ") for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    sections = [row[0].lstrip("| ") for row in rows[1:]]
    assert set(sections) == {
        "correctness",
        "fp32 vs bf16",
        "fwd+bwd vs peer (bf16)",
        "trained relative bias",
        "long audio (windowed)",
    }
    assert not any("ERROR" in row[5] or "skipped" in row[5] for row in rows)
    correctness = [row for row in rows if row[0] == "| correctness"]
    assert len(correctness) == 6 and all(row[5] == "ok" for row in correctness)
    assert sum("flex vs" in row[2] for row in correctness) == 2
    peers = [row for row in rows if row[0] == "| fwd+bwd vs peer (bf16)"]
    assert len(peers) == 8  # (ViT, BERT x 2 lengths, T5) x dropout off/on
    assert len([row for row in rows if row[0] == "| long audio (windowed)"]) == 2  # one tiny preset, fp32 and bf16


def test_gpu_check_relative_error_floors_vanishing_gradients():
    expected = [torch.tensor([2.0, -4.0]), torch.tensor([1e-9, -1e-9])]
    # Rounding noise on a vanishing gradient is measured against 1e-3 of the largest scale (4.0), not against 1e-9.
    noise = [torch.tensor([2.0, -3.75]), torch.tensor([3e-9, 0.0])]
    assert gpu_check.relative_error(noise, expected) == pytest.approx(0.25 / 4.0)
    large = [torch.tensor([2.0, -4.0]), torch.tensor([0.002, 0.0])]
    assert gpu_check.relative_error(large, expected) == pytest.approx(0.002 / 0.004)
