"""Core model tests: configs, presets, outputs, save/load, remote code, attention backends, masks, losses, training."""

import json
import math
from datetime import timedelta

import pytest
import torch
from helpers import run_without_package
from transformers import AutoConfig, AutoModel

from modeling_vatt import (
    VattAudioConfig,
    VattAudioModel,
    VattConfig,
    VattForContrastivePretraining,
    VattTextConfig,
    VattTextModel,
    vatt_contrastive_loss,
)
from modeling_vatt.modeling_vatt import VattRelativePositionBias, relative_position_bucket, resampling_matrix


def _audio(batch: int = 2, patches: int = 40, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, patches * 128, generator=generator) - 0.5) * 0.5


def _ids(batch: int = 2, length: int = 9, vocab: int = 1000, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(1, vocab, (batch, length), generator=generator)


def _ut_tiny_config(**kwargs) -> VattConfig:
    return VattConfig.from_preset(
        "ut_base",
        audio_config=VattAudioConfig.PRESETS["tiny"],
        text_config={"vocab_size": 1000, "embedding_size": 24},
        projection_dim=32,
        **kwargs,
    )


# ----------------------------------------------------------------------------------------------------------------------
# Configs and presets
# ----------------------------------------------------------------------------------------------------------------------


def test_default_config_is_the_released_size():
    config = VattConfig()
    audio, text = config.audio_config, config.text_config
    assert (audio.hidden_size, audio.num_hidden_layers, audio.num_attention_heads, audio.intermediate_size) == (
        768,
        12,
        12,
        3072,
    )
    assert (audio.patch_size, audio.max_position_embeddings, audio.drop_token_rate) == (128, 1200, 0.5)
    assert (text.hidden_size, text.num_hidden_layers, text.embedding_size, text.vocab_size) == (512, 6, 300, 65536)
    assert not config.modality_agnostic and config.text_config.position_embedding_type == "relative"


def test_config_accepts_dicts_and_configs_and_round_trips(tmp_path):
    from_dicts = VattConfig(audio_config={"hidden_size": 64, "num_attention_heads": 4}, text_config={"vocab_size": 10})
    from_objects = VattConfig(
        audio_config=VattAudioConfig(hidden_size=64, num_attention_heads=4), text_config=VattTextConfig(vocab_size=10)
    )
    assert from_dicts.to_dict() == from_objects.to_dict()
    from_dicts.save_pretrained(tmp_path)
    reloaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(reloaded, VattConfig)
    assert {**reloaded.to_dict(), "_name_or_path": ""} == from_dicts.to_dict()
    assert VattAudioConfig.from_pretrained(tmp_path).hidden_size == 64
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["auto_map"]["AutoConfig"] == "configuration_vatt.VattConfig"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"projection_type": "mlp"},
        {"loss_type": "triplet"},
        {"audio_config": {"position_interpolation": "cubic"}},
        {"audio_config": {"drop_token_rate": 1.0}},
        {"audio_config": {"patch_features": "mel"}},
        {"text_config": {"pad_token_id": -1}},
        {"text_config": {"vocab_size": 10, "pad_token_id": 10}},
        {"modality_agnostic": True, "text_config": {"hidden_size": 32}},
    ],
)
def test_invalid_configs_raise(kwargs):
    with pytest.raises(ValueError):
        VattConfig(**kwargs)


@pytest.mark.parametrize("name", sorted(VattConfig.PRESETS))
def test_every_preset_builds_with_the_right_shapes(name):
    config = VattConfig.from_preset(name)
    with torch.device("meta"):
        model = VattForContrastivePretraining(config)
    audio, text = config.audio_config, config.text_config
    layer = model.audio_model.encoder.layers[0]
    assert layer.self_attn.q_proj.weight.shape == (audio.num_attention_heads * audio.head_dim, audio.hidden_size)
    assert layer.mlp.fc1.weight.shape == (audio.intermediate_size, audio.hidden_size)
    assert len(model.audio_model.encoder.layers) == audio.num_hidden_layers
    assert model.audio_model.embeddings.position_embedding.weight.shape[0] == audio.max_position_embeddings
    assert model.text_model.embeddings.word_embeddings.weight.shape == (text.vocab_size, text.embedding_size)
    assert (model.text_model.encoder is model.audio_model.encoder) == config.modality_agnostic


@pytest.mark.parametrize(
    ("preset", "expected"), [("base", 86_078_976), ("medium", 152_520_704), ("large", 303_675_392)]
)
def test_wat_parameter_counts_match_the_original(preset, expected):
    with torch.device("meta"):
        model = VattAudioModel(VattAudioConfig.from_preset(preset))
    assert sum(p.numel() for p in model.parameters()) == expected


def test_t5_small_parameter_count_matches_the_original():
    with torch.device("meta"):
        model = VattTextModel(VattTextConfig.from_preset("t5_small"))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert (trainable, frozen) == (19_038_252, 65536 * 300)


def test_initialisation_follows_the_original_and_t5():
    torch.manual_seed(0)
    model = VattForContrastivePretraining(VattConfig.from_preset("small"))
    audio_q = model.audio_model.encoder.layers[0].self_attn.q_proj
    text_attention = model.text_model.encoder.layers[0].self_attn
    hidden, head_dim = model.config.text_config.hidden_size, model.config.text_config.head_dim
    # Glorot-uniform kernels and zero biases in the audio tower, as Keras initialised the original.
    assert abs(audio_q.weight.std().item() / (2 / sum(audio_q.weight.shape)) ** 0.5 - 1) < 0.05
    assert not audio_q.bias.any()
    # T5's initialiser for the unscaled text attention: unit-variance query-key logits at initialisation.
    assert abs(text_attention.q_proj.weight.std().item() * (hidden * head_dim) ** 0.5 - 1) < 0.05
    assert abs(text_attention.k_proj.weight.std().item() * hidden**0.5 - 1) < 0.05
    assert abs(model.text_model.encoder.relative_attention_bias.weight.std().item() * hidden**0.5 - 1) < 0.1
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))


def test_unknown_preset_names_the_available_ones():
    with pytest.raises(ValueError, match="available"):
        VattConfig.from_preset("huge")


# ----------------------------------------------------------------------------------------------------------------------
# Outputs, save/load, auto classes and remote code
# ----------------------------------------------------------------------------------------------------------------------


def test_output_shapes_hidden_states_and_attentions(tiny_config):
    model = VattForContrastivePretraining(tiny_config).eval()
    model.set_attn_implementation("eager")
    out = model(input_ids=_ids(3, 7), input_values=_audio(2, 30), output_hidden_states=True, output_attentions=True)
    audio, text = out.audio_model_output, out.text_model_output
    assert out.logits_per_audio.shape == (2, 3) and torch.equal(out.logits_per_text, out.logits_per_audio.T)
    assert out.audio_embeds.shape == (2, 32) and out.text_embeds.shape == (3, 32)
    assert audio.last_hidden_state.shape == (2, 31, 64) and text.last_hidden_state.shape == (3, 8, 64)
    assert len(audio.hidden_states) == 3 and len(audio.attentions) == 2
    assert audio.attentions[0].shape == (2, 4, 31, 31) and text.attentions[0].shape == (3, 4, 8, 8)
    torch.testing.assert_close(audio.attentions[0].sum(-1), torch.ones(2, 4, 31))
    tuple_out = model(input_ids=_ids(3, 7), input_values=_audio(2, 30), return_dict=False)
    torch.testing.assert_close(tuple_out[0], out.logits_per_audio)  # `loss` is None and left out


def _log_spectrum_tiny_config() -> VattConfig:
    return VattConfig.from_preset("tiny", audio_config={"patch_features": "log_spectrum"})


@pytest.mark.parametrize(
    "config_factory", [lambda: VattConfig.from_preset("tiny"), _ut_tiny_config, _log_spectrum_tiny_config]
)
def test_save_load_round_trip_and_auto_model(tmp_path, config_factory):
    model = VattForContrastivePretraining(config_factory()).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "modeling_vatt.py").exists()
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(reloaded) is VattForContrastivePretraining
    inputs = {"input_ids": _ids(), "input_values": _audio()}
    torch.testing.assert_close(reloaded(**inputs).logits_per_audio, model(**inputs).logits_per_audio, rtol=0, atol=0)
    assert not reloaded.text_model.embeddings.word_embeddings.weight.requires_grad
    assert not reloaded.logit_scale.requires_grad
    if model.config.modality_agnostic:
        assert reloaded.text_model.encoder is reloaded.audio_model.encoder


def test_output_loading_info_returns_the_model_and_its_report(tmp_path, tiny_config):
    VattForContrastivePretraining(tiny_config).save_pretrained(tmp_path)
    model, info = VattForContrastivePretraining.from_pretrained(tmp_path, output_loading_info=True)
    assert isinstance(model, VattForContrastivePretraining) and not info["missing_keys"]
    assert not model.text_model.embeddings.word_embeddings.weight.requires_grad


def test_a_shared_encoder_tensor_missing_from_the_checkpoint_is_reported_and_initialised(tmp_path):
    from safetensors.torch import load_file, save_file

    VattForContrastivePretraining(_ut_tiny_config()).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    assert not any(key.startswith("text_model.encoder.") for key in weights), "the shared encoder is saved once"
    del weights["audio_model.encoder.layers.0.self_attn.q_proj.weight"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    model, info = VattForContrastivePretraining.from_pretrained(tmp_path, output_loading_info=True)
    assert "audio_model.encoder.layers.0.self_attn.q_proj.weight" in info["missing_keys"]
    assert model.text_model.encoder is model.audio_model.encoder
    assert not any(parameter.is_meta for parameter in model.parameters())
    assert model.audio_model.encoder.layers[0].self_attn.q_proj.weight.std() > 0
    assert torch.isfinite(model(input_ids=_ids(), input_values=_audio()).logits_per_audio).all()
    empty = VattForContrastivePretraining.from_pretrained(None, config=_ut_tiny_config(), state_dict={})
    assert not any(parameter.is_meta for parameter in empty.parameters())


@pytest.mark.parametrize("config_factory", [lambda: VattConfig.from_preset("tiny"), _ut_tiny_config])
def test_each_layer_is_recorded_once_whichever_tower_runs_first(config_factory):
    model = VattForContrastivePretraining(config_factory()).eval()
    model.set_attn_implementation("eager")
    layers = model.config.audio_config.num_hidden_layers
    for _ in range(2):
        text = model.get_text_features(_ids(), output_hidden_states=True, output_attentions=True)
        audio = model.get_audio_features(_audio(), output_hidden_states=True, output_attentions=True)
        for output in (text, audio):
            assert len(output.hidden_states) == layers + 1 and len(output.attentions) == layers
    # Hidden state i is the input of layer i: the audio's differ from the text's, which have another length.
    assert audio.hidden_states[1].shape[1] == 41 and text.hidden_states[1].shape[1] == 10


def test_text_is_masked_by_the_configured_padding_id():
    torch.manual_seed(0)
    model = VattTextModel(VattTextConfig.from_preset("tiny", pad_token_id=7)).eval()
    ids = _ids(2, 9)
    ids[ids == 7] = 8
    ids[0, 5:] = 7
    output = model(ids)
    assert output.attention_mask[0].sum() == 6 and output.attention_mask[1].all()
    torch.testing.assert_close(output.pooler_output[0], model(ids[:1, :5]).pooler_output[0], rtol=1e-5, atol=1e-5)


def test_gathered_loss_outside_a_process_group_is_an_error():
    with pytest.raises(RuntimeError, match="torch.distributed"):
        vatt_contrastive_loss(torch.randn(2, 4), torch.randn(2, 4), torch.tensor(1.0), gather=True)


def test_output_keys_do_not_depend_on_padding(tiny_config):
    model = VattAudioModel(tiny_config.audio_config).eval()
    audio = _audio(2, 40)
    mask = torch.ones_like(audio, dtype=torch.long)
    unpadded = model(audio)
    padded = model(
        audio,
        audio_attention_mask=torch.cat([mask[:1], torch.zeros_like(mask[1:]).index_fill(1, torch.arange(640), 1)]),
    )
    assert list(unpadded.keys()) == list(padded.keys())
    assert unpadded["attention_mask"].shape == (2, 41) and unpadded["attention_mask"].all()
    assert len(unpadded.to_tuple()) == len(padded.to_tuple())
    assert padded["attention_mask"][1].sum() == 6


def test_towers_load_alone_from_a_full_checkpoint(tmp_path, tiny_config):
    model = VattForContrastivePretraining(tiny_config).eval()
    model.save_pretrained(tmp_path)
    audio = VattAudioModel.from_pretrained(tmp_path).eval()
    text = VattTextModel.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(audio(_audio()).pooler_output, model.audio_model(_audio()).pooler_output)
    torch.testing.assert_close(text(_ids()).pooler_output, model.text_model(_ids()).pooler_output)


def test_remote_code_loading_without_the_package(tmp_path, tiny_config):
    model = VattForContrastivePretraining(tiny_config).eval()
    model.save_pretrained(tmp_path / "ckpt")
    torch.save({"ids": _ids(), "audio": _audio()}, tmp_path / "inputs.pt")
    expected = model(input_ids=_ids(), input_values=_audio()).logits_per_audio
    torch.save(expected, tmp_path / "expected.pt")
    out = run_without_package(
        f"""
        import importlib.util, torch
        from transformers import AutoModel
        assert importlib.util.find_spec("modeling_vatt") is None
        try:
            import modeling_vatt  # noqa
            raise SystemExit("package importable")
        except ImportError:
            pass
        model = AutoModel.from_pretrained(r"{tmp_path / "ckpt"}", trust_remote_code=True).eval()
        inputs = torch.load(r"{tmp_path / "inputs.pt"}")
        logits = model(input_ids=inputs["ids"], input_values=inputs["audio"]).logits_per_audio
        torch.testing.assert_close(logits, torch.load(r"{tmp_path / "expected.pt"}"))
        print(type(model).__module__, type(model).__name__)
        """,
        cwd=tmp_path,
    )
    assert "transformers_modules" in out and "VattForContrastivePretraining" in out


# ----------------------------------------------------------------------------------------------------------------------
# Attention backends, masks and positions
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config_factory", [lambda: VattConfig.from_preset("tiny"), _ut_tiny_config])
def test_sdpa_matches_eager_with_padding(config_factory):
    model = VattForContrastivePretraining(config_factory()).eval()
    ids = _ids(3, 10)
    ids[1, 6:] = 0
    audio = _audio(3, 40)
    audio_mask = torch.ones_like(audio, dtype=torch.long)
    audio_mask[2, 128 * 25 :] = 0
    inputs = {"input_ids": ids, "input_values": audio, "audio_attention_mask": audio_mask}
    sdpa = model(**inputs)
    model.set_attn_implementation("eager")
    eager = model(**inputs)
    torch.testing.assert_close(sdpa.audio_embeds, eager.audio_embeds, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sdpa.text_embeds, eager.text_embeds, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("interpolation", ["none", "spline", "linear"])
def test_audio_padding_does_not_change_the_shorter_item(interpolation):
    config = VattAudioConfig.from_preset("tiny", position_interpolation=interpolation)
    model = VattAudioModel(config).eval()
    short, long = _audio(1, 23, seed=1), _audio(1, 40, seed=2)
    batch = torch.cat([torch.nn.functional.pad(short, (0, 17 * 128 + 50)), torch.nn.functional.pad(long, (0, 50))])
    mask = torch.zeros_like(batch, dtype=torch.long)
    mask[0, : short.shape[1]] = 1
    mask[1, : long.shape[1]] = 1
    padded = model(batch, audio_attention_mask=mask)
    alone = model(short)
    torch.testing.assert_close(padded.pooler_output[0], alone.pooler_output[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(padded.last_hidden_state[0, :24], alone.last_hidden_state[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(padded.pooler_output[1], model(long).pooler_output[0], rtol=1e-5, atol=1e-5)
    assert padded.attention_mask[0].sum() == 24 and padded.attention_mask[1].all()


@pytest.mark.parametrize("position_type", ["relative", "absolute"])
def test_text_padding_does_not_change_the_shorter_item(position_type):
    config = VattTextConfig.from_preset("tiny", position_embedding_type=position_type)
    model = VattTextModel(config).eval()
    ids = _ids(2, 12)
    ids[0, 5:] = 0
    batched = model(ids)
    alone = model(ids[:1, :5])
    torch.testing.assert_close(batched.pooler_output[0], alone.pooler_output[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batched.last_hidden_state[0, :6], alone.last_hidden_state[0], rtol=1e-5, atol=1e-5)


def test_spline_resampling_reproduces_the_table_at_the_knots_and_is_smooth():
    table = torch.randn(50, 8, dtype=torch.float64)
    identity = resampling_matrix(50, 50, torch.tensor([50]), "spline")[0]
    torch.testing.assert_close(identity @ table, table, rtol=1e-8, atol=1e-8)
    doubled = resampling_matrix(50, 100, torch.tensor([100]), "spline")[0] @ table
    torch.testing.assert_close(doubled[::2], table, rtol=1e-8, atol=1e-8)
    # A linear table is reproduced exactly by the affine part of the spline.
    ramp = torch.arange(50, dtype=torch.float64)[:, None] / 50
    resampled = resampling_matrix(50, 32, torch.tensor([32]), "spline")[0] @ ramp
    torch.testing.assert_close(resampled[:, 0], torch.arange(32, dtype=torch.float64) / 32)


@pytest.mark.parametrize("mode", ["spline", "linear"])
def test_per_item_resampling_matches_resampling_each_item_alone(mode):
    targets = torch.tensor([7, 12, 3])
    batched = resampling_matrix(10, 12, targets, mode)
    for row, target in enumerate(targets.tolist()):
        alone = resampling_matrix(10, target, torch.tensor([target]), mode)[0]
        torch.testing.assert_close(batched[row, :target], alone, rtol=0, atol=1e-12)
        assert not batched[row, target:].any()


def test_relative_position_buckets_follow_t5():
    positions = torch.arange(200)
    buckets = relative_position_bucket(positions[None, :] - positions[:, None], num_buckets=32, max_distance=64)
    assert buckets[0, 0] == 0 and buckets[0, 1] == 17 and buckets[1, 0] == 1
    assert buckets[0, 7] == 23 and buckets[0, 8] == 24 and buckets[7, 0] == 7
    assert buckets[0, 199] == 31 and buckets[199, 0] == 15
    assert buckets.min() == 0 and buckets.max() == 31


def test_a_model_built_under_inference_mode_runs():
    with torch.inference_mode():  # parameters are inference tensors, which have no version counter
        model = VattTextModel(VattTextConfig.from_preset("tiny")).eval()
        assert model(input_ids=_ids(2, 9)).last_hidden_state.shape == (2, 10, 64)


def test_reversed_key_bias_is_a_strided_view_of_the_offsets():
    bias = VattTextModel(VattTextConfig.from_preset("tiny")).encoder.relative_attention_bias
    length = 300
    with torch.no_grad():
        per_offset = bias(length, torch.float32)
    heads = bias.weight.shape[1]
    assert per_offset.shape == (heads, 2 * length - 1)
    dense = VattRelativePositionBias.dense(per_offset)
    reversed_keys = VattRelativePositionBias.reversed_key_view(per_offset)
    positions = torch.arange(length)
    buckets = relative_position_bucket(positions[None, :] - positions[:, None], bias.num_buckets, bias.max_distance)
    torch.testing.assert_close(dense[0], bias.weight.detach()[buckets].permute(2, 0, 1), rtol=0, atol=0)
    torch.testing.assert_close(reversed_keys, dense.flip(-1), rtol=0, atol=0)
    assert reversed_keys.untyped_storage().nbytes() == heads * (2 * length - 1) * 4


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("trained_bias", [True, False])
def test_text_under_sdpa_matches_eager_in_outputs_and_every_gradient(padded, trained_bias):
    """
    SDPA takes the reversed-key path with the strided bias (a trained bias: plain math with the key mask; a frozen
    one: the fused kernel, padding as an extra head dimension); eager keeps the dense bias with padding folded in.
    """
    config = VattTextConfig.from_preset("tiny", hidden_dropout_prob=0.0, attention_dropout=0.0, vocab_size=1000)
    model = VattTextModel(config).train()
    model.encoder.relative_attention_bias.weight.requires_grad_(trained_bias)
    ids = _ids(2, 40)
    if padded:
        ids[1, 25:] = 0
    # A random readout: a loss without large cancelling terms, so fp32 rounding stays far below the tolerance.
    readout = torch.randn(2, 41, config.hidden_size, generator=torch.Generator().manual_seed(1))
    results = {}
    for implementation in ("sdpa", "eager"):
        model.set_attn_implementation(implementation)
        model.zero_grad()
        output = model(input_ids=ids).last_hidden_state
        (output * readout).sum().backward()
        grads = {
            name: parameter.grad.clone() for name, parameter in model.named_parameters() if parameter.grad is not None
        }
        results[implementation] = (output.detach(), grads)
    (sdpa_output, sdpa_grads), (eager_output, eager_grads) = results["sdpa"], results["eager"]
    torch.testing.assert_close(sdpa_output, eager_output, rtol=1e-5, atol=1e-5)
    assert sdpa_grads.keys() == eager_grads.keys()
    assert ("encoder.relative_attention_bias.weight" in sdpa_grads) == trained_bias
    for name, grad in eager_grads.items():
        torch.testing.assert_close(sdpa_grads[name], grad, rtol=1e-5, atol=1e-6 * grad.abs().max().item(), msg=name)


def test_longer_than_table_without_interpolation_is_windowed_not_resampled():
    config = VattAudioConfig.from_preset("tiny", long_input_mode="full")
    model = VattAudioModel(config).eval()
    with pytest.raises(ValueError, match="position table"):
        model(_audio(1, 60))


# ----------------------------------------------------------------------------------------------------------------------
# DropToken, gradients, training
# ----------------------------------------------------------------------------------------------------------------------


def test_log_spectrum_patches_ignore_sign_and_level_but_not_content():
    config = VattAudioConfig.from_preset("tiny", patch_features="log_spectrum")
    model = VattAudioModel(config).eval()
    assert model.embeddings.patch_embedding.in_features == config.patch_size // 2 + 1
    tone = torch.sin(torch.arange(20 * 128) * 0.7)
    audio = torch.stack([_audio(1, 20)[0] * 4, tone])  # noise, then a tone
    with torch.no_grad():
        reference = model(input_values=audio).pooler_output
        # The magnitude spectrum drops the sign; the LayerNorm over bins drops the level of broadband sound (bins far
        # below the log floor, as between a pure tone's harmonics, do not scale).
        torch.testing.assert_close(model(input_values=-audio).pooler_output, reference, rtol=0, atol=1e-6)
        louder_noise = model(input_values=audio[:1] * 8).pooler_output
        torch.testing.assert_close(louder_noise, reference[:1], rtol=0, atol=1e-2)
        assert (model(input_values=audio.flip(0)).pooler_output - reference).abs().max() > 0.5
    waveform = VattAudioModel(VattAudioConfig.from_preset("tiny")).eval()
    with torch.no_grad():
        assert not torch.allclose(
            waveform(input_values=-audio).pooler_output, waveform(input_values=audio).pooler_output
        )


def test_drop_token_only_in_training_and_keeps_the_requested_count():
    config = VattAudioConfig.from_preset("tiny", drop_token_rate=0.5, hidden_dropout_prob=0.0, attention_dropout=0.0)
    model = VattAudioModel(config)
    audio = _audio(2, 41)
    model.train()
    trained = model(audio)
    assert trained.last_hidden_state.shape == (2, 1 + 41 - 20, 64)
    model.eval()
    assert model(audio).last_hidden_state.shape == (2, 42, 64)
    mask = torch.ones_like(audio, dtype=torch.long)
    mask[0, 128 * 10 :] = 0
    model.train()
    out = model(audio, audio_attention_mask=mask)
    # The 10-patch item keeps all its real patches first; the rest of its slots are masked padding.
    assert out.attention_mask[0].sum() == 11 and out.attention_mask[1].all()


@pytest.mark.parametrize(
    "config_factory",
    [
        lambda: VattConfig.from_preset("tiny"),
        lambda: VattConfig.from_preset("tiny", projection_type="bridge", learnable_logit_scale=True),
        _ut_tiny_config,
        _log_spectrum_tiny_config,
    ],
)
def test_gradients_reach_every_trainable_parameter(config_factory):
    model = VattForContrastivePretraining(config_factory()).train()
    out = model(input_ids=_ids(4, 6), input_values=_audio(4, 30), return_loss=True)
    out.loss.backward()
    missing = [
        name for name, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())
    ]
    assert not missing, missing
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    assert "text_model.embeddings.word_embeddings.weight" in frozen


def _deterministic_tiny_config() -> VattConfig:
    no_dropout = {"hidden_dropout_prob": 0.0, "attention_dropout": 0.0}
    return VattConfig.from_preset("tiny", audio_config={**no_dropout, "drop_token_rate": 0.0}, text_config=no_dropout)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = VattForContrastivePretraining(_deterministic_tiny_config()).train()
    inputs = {"input_ids": _ids(4, 6), "input_values": _audio(4, 30), "return_loss": True}
    model(**inputs).loss.backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model(**inputs).loss.backward()
    for name, grad in reference.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, rtol=1e-5, atol=1e-6)


def test_loss_decreases_when_overfitting_a_small_batch():
    torch.manual_seed(0)
    model = VattForContrastivePretraining(_deterministic_tiny_config()).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    inputs = {"input_ids": _ids(6, 8, seed=3), "input_values": _audio(6, 30, seed=4), "return_loss": True}
    losses = []
    for _ in range(40):
        loss = model(**inputs).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # NCE counts the positive in both directions, so its floor is log(2), not 0.
    assert losses[-1] - math.log(2) < 0.2 * (losses[0] - math.log(2)), losses


# ----------------------------------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------------------------------


def test_nce_matches_the_vatt_formula_by_hand():
    torch.manual_seed(0)
    audio, text, scale = torch.randn(3, 5), torch.randn(3, 5), torch.tensor(math.log(1 / 0.07))
    a = torch.nn.functional.normalize(audio, dim=-1)
    t = torch.nn.functional.normalize(text, dim=-1)
    sim = a @ t.T / 0.07
    expected = torch.stack([torch.logsumexp(torch.cat([sim[i], sim[:, i]]), 0) - sim[i, i] for i in range(3)]).mean()
    torch.testing.assert_close(vatt_contrastive_loss(audio, text, scale, "nce"), expected)
    clip = (
        torch.nn.functional.cross_entropy(sim, torch.arange(3))
        + torch.nn.functional.cross_entropy(sim.T, torch.arange(3))
    ) / 2
    torch.testing.assert_close(vatt_contrastive_loss(audio, text, scale, "symmetric"), clip)


@pytest.mark.parametrize("loss_type", ["nce", "symmetric"])
def test_mil_nce_with_one_text_per_clip_equals_nce_and_uses_all_candidates(loss_type):
    torch.manual_seed(1)
    audio, text, scale = torch.randn(4, 8), torch.randn(4, 8), torch.tensor(2.0)
    single = vatt_contrastive_loss(audio, text, scale, loss_type)
    masked_mil = vatt_contrastive_loss(
        audio,
        torch.stack([text, torch.randn(4, 8)], 1).flatten(0, 1),
        scale,
        loss_type,
        text_candidate_mask=torch.tensor([[True, False]] * 4),
    )
    torch.testing.assert_close(single, vatt_contrastive_loss(audio, text, scale, loss_type, torch.ones(4, 1)))
    # Masked-out candidates drop out entirely: MIL with one valid candidate per clip equals plain NCE.
    torch.testing.assert_close(masked_mil, single)
    # A duplicated candidate adds log 2 to the positive score and to every normaliser alike: the loss is unchanged.
    duplicated = vatt_contrastive_loss(audio, text.repeat_interleave(2, 0), scale, loss_type)
    torch.testing.assert_close(duplicated, single)
    # A second candidate that matches its clip exactly counts as a positive: the MIL loss drops well below NCE's.
    matching = vatt_contrastive_loss(audio, torch.stack([text, audio], 1).flatten(0, 1), scale, loss_type)
    assert matching < single - 0.5


def test_loss_rejects_mismatched_batches(tiny_config):
    model = VattForContrastivePretraining(tiny_config)
    with pytest.raises(ValueError, match="same number of texts"):
        model(input_ids=_ids(3, 5), input_values=_audio(2), return_loss=True)


def _distributed_worker(rank: int, world_size: int, init_file: str, audio, text, out_dir: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size, timeout=timedelta(seconds=60)
    )
    # The model's own loss never talks to other processes: uneven batches on one rank only neither hang nor mix.
    if rank == 0:
        model = VattForContrastivePretraining(VattConfig.from_preset("tiny")).eval()
        output = model(input_ids=_ids(3, 5), input_values=_audio(3), return_loss=True)
        local = vatt_contrastive_loss(output.audio_embeds, output.text_embeds, model.logit_scale, "nce")
        torch.testing.assert_close(output.loss, local)
    local = slice(rank * 2, rank * 2 + 2)
    audio = audio[local].clone().requires_grad_(True)
    text = text[local].clone().requires_grad_(True)
    loss = vatt_contrastive_loss(audio, text, torch.tensor(math.log(1 / 0.07)), "nce", gather=True)
    loss.backward()
    torch.save({"loss": loss.detach(), "audio_grad": audio.grad, "text_grad": text.grad}, f"{out_dir}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_process_gathered_negatives_equal_the_single_process_loss(tmp_path):
    torch.manual_seed(0)
    audio, text = torch.randn(4, 6), torch.randn(4, 6)
    torch.multiprocessing.spawn(
        _distributed_worker, args=(2, str(tmp_path / "init"), audio, text, str(tmp_path)), nprocs=2, join=True
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    full_audio, full_text = audio.clone().requires_grad_(True), text.clone().requires_grad_(True)
    full = vatt_contrastive_loss(full_audio, full_text, torch.tensor(math.log(1 / 0.07)), "nce")
    full.backward()
    torch.testing.assert_close(torch.stack([r["loss"] for r in ranks]).mean(), full.detach())
    # Each rank's embeddings receive the gradient of every rank's loss; DDP then averages over the 2 ranks.
    gathered_grad = torch.cat([r["audio_grad"] for r in ranks]) / 2
    torch.testing.assert_close(gathered_grad, full_audio.grad)
    torch.testing.assert_close(torch.cat([r["text_grad"] for r in ranks]) / 2, full_text.grad)


# ----------------------------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("audio", "message"),
    [
        (torch.zeros(6400), "shape"),
        (torch.zeros(1, 6400, 1), "shape"),
        (torch.zeros(1, 100), "at least one patch"),
        (torch.zeros(1, 6400, dtype=torch.int16), "float"),
        (torch.full((1, 6400), float("nan")), "NaN"),
        (torch.full((1, 6400), float("inf")), "NaN"),
    ],
)
def test_bad_audio_raises_a_clear_error(audio, message):
    model = VattAudioModel(VattAudioConfig.from_preset("tiny")).eval()
    with pytest.raises(ValueError, match=message):
        model(audio)


def test_bad_audio_masks_raise():
    model = VattAudioModel(VattAudioConfig.from_preset("tiny")).eval()
    with pytest.raises(ValueError, match="must match"):
        model(_audio(2), audio_attention_mask=torch.ones(2, 100))
    mask = torch.ones(2, 40 * 128)
    mask[1] = 0
    with pytest.raises(ValueError, match="empty item"):
        model(_audio(2), audio_attention_mask=mask)


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (torch.tensor([1, 2, 3]), "shape"),
        (torch.tensor([[1.0, 2.0]]), "integer"),
        (torch.tensor([[1, 1000]]), r"\[0, 1000\)"),
        (torch.tensor([[1, -1]]), r"\[0, 1000\)"),
    ],
)
def test_bad_text_raises_a_clear_error(ids, message):
    model = VattTextModel(VattTextConfig.from_preset("tiny")).eval()
    with pytest.raises(ValueError, match=message):
        model(ids)


def test_contrastive_model_needs_both_modalities(tiny_config):
    model = VattForContrastivePretraining(tiny_config)
    with pytest.raises(ValueError, match="both"):
        model(input_ids=_ids())
