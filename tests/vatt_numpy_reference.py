"""An independent float64 numpy forward pass of the original modality-specific VATT (`tx_fac`: WaT audio, T5-style text,
FAC head), written from the reference fixture's README, not from the package: it checks conversions of checkpoints
whose hyperparameters differ from the fixture's. Inputs whose length differs from a position table are not supported
(the original resamples the table with a spline there).

Variables are keyed by attribute path below `model/layer_with_weights-0/`; hyperparameters come from the original
config's `as_dict()` (`backbone_config.{audio,text}_model_kwargs`, `head_config.bridge[0].bn_config`).
"""

import math

import numpy as np

AUDIO = "_base_layer/aud_backbone/_base/"
TEXT = "_base_layer/txt_backbone/"
HEAD = "_head_layer/_bridge_heads/0/"

_erf = np.vectorize(math.erf)


def gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def layer_norm(x: np.ndarray, v: dict, name: str, eps: float) -> np.ndarray:
    centred = x - x.mean(-1, keepdims=True)
    return centred / np.sqrt((centred**2).mean(-1, keepdims=True) + eps) * v[f"{name}/gamma"] + v[f"{name}/beta"]


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * weight


def dense(x: np.ndarray, v: dict, name: str, bias: bool = True) -> np.ndarray:
    return x @ v[f"{name}/kernel"] + (v[f"{name}/bias"] if bias else 0.0)


def attention(x, v, root: str, heads: int, bias: bool, scale: float, additive=None) -> np.ndarray:
    """Multi-head self-attention with separate q/k/v/o Dense layers under `root`."""
    batch, length, _ = x.shape

    def split(name: str) -> np.ndarray:
        return dense(x, v, root + name, bias).reshape(batch, length, heads, -1).transpose(0, 2, 1, 3)

    scores = split("q") @ split("k").transpose(0, 1, 3, 2) * scale
    if additive is not None:
        scores = scores + additive
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    probabilities = scores / scores.sum(-1, keepdims=True)
    context = (probabilities @ split("v")).transpose(0, 2, 1, 3).reshape(batch, length, -1)
    return dense(context, v, root + "o", bias)


def wat_audio(v: dict, waveform: np.ndarray, config: dict) -> tuple[np.ndarray, np.ndarray]:
    """WaT: Conv1D patches + LayerNorm'ed position rows, AGG token first, pre-LN encoder, final LayerNorm."""
    patch, eps = config["temporal_patch_size"], config["layer_norm_epsilon"]
    assert config["temporal_patch_stride"] == patch
    batch, num_patches = waveform.shape[0], waveform.shape[1] // patch
    patches = waveform[:, : num_patches * patch].reshape(batch, num_patches, patch)
    tokens = patches @ v[AUDIO + "wave_to_patch/kernel"][:, 0, :] + v[AUDIO + "wave_to_patch/bias"]
    table = v[AUDIO + "pos_embedding_lookup/temporal_position_embeddings/embeddings"]
    assert table.shape[0] == num_patches, "the reference covers inputs of exactly the table length"
    tokens = tokens + layer_norm(table, v, AUDIO + "pos_embedding_lookup/layernorm", eps)
    agg = np.broadcast_to(v[AUDIO + "agg_embedding"], (batch, 1, tokens.shape[-1]))
    x = np.concatenate([agg, tokens], axis=1)
    for i in range(config["num_layers"]):
        layer = f"{AUDIO}tx/layers/{i}/"
        h = layer_norm(x, v, layer + "layer_norm", eps)
        x = x + attention(h, v, layer + "mha/", config["num_heads"], True, config["d_kv"] ** -0.5)
        h = layer_norm(x, v, layer + "feed_forward/layer_norm", eps)
        x = x + dense(gelu(dense(h, v, layer + "feed_forward/mlp/wi")), v, layer + "feed_forward/mlp/wo")
    x = layer_norm(x, v, AUDIO + "tx/final_layer_norm", eps)
    return x[:, 0], x[:, 1:]


def relative_position_bucket(relative: np.ndarray, num_buckets: int, max_distance: int) -> np.ndarray:
    """T5's bidirectional bucketing of `key_pos - query_pos` (log spacing computed in float32, as TF does)."""
    half = num_buckets // 2
    n = -relative
    buckets = (n < 0).astype(np.int64) * half
    n = np.abs(n)
    max_exact = half // 2
    scaled = np.log(np.maximum(n, 1).astype(np.float32) / np.float32(max_exact))
    scaled = scaled / np.float32(math.log(max_distance / max_exact)) * np.float32(half - max_exact)
    large = np.minimum(max_exact + scaled.astype(np.int64), half - 1)
    return buckets + np.where(n < max_exact, n, large)


def t5_text(v: dict, ids: np.ndarray, config: dict) -> tuple[np.ndarray, np.ndarray]:
    """VATT's T5 encoder: AGG word first, GELU pre-projection, layer-0 relative bias shared by all layers."""
    eps, heads = config["layer_norm_epsilon"], config["num_heads"]
    words = v[TEXT + "embedding/embeddings"][ids]
    agg = np.broadcast_to(v[TEXT + "agg_embedding"], (ids.shape[0], 1, words.shape[-1]))
    x = gelu(np.concatenate([agg, words], axis=1) @ v[TEXT + "pre_proj/kernel"])
    mask = np.concatenate([np.ones((ids.shape[0], 1)), (ids != 0).astype(np.float64)], axis=1)
    positions = np.arange(x.shape[1])
    buckets = relative_position_bucket(
        positions[None, :] - positions[:, None], config["num_relative_buckets"], config["max_relative_distance"]
    )
    table = v[TEXT + "base_lm/layers/0/self_attention/attention/relative_attention_bias/embeddings"]
    assert table.shape == (config["num_relative_buckets"], heads)
    bias = table[buckets].transpose(2, 0, 1)[None] + (1.0 - mask)[:, None, None, :] * -1e9
    for i in range(config["num_layers"]):
        layer = f"{TEXT}base_lm/layers/{i}/"
        h = rms_norm(x, v[layer + "self_attention/layer_norm/weight"], eps)
        x = x + attention(h, v, layer + "self_attention/attention/", heads, False, 1.0, bias)
        h = layer_norm(x, v, layer + "feed_forward/layer_norm", eps)
        hidden = gelu(dense(h, v, layer + "feed_forward/mlp/wi", bias=False))
        x = x + dense(hidden, v, layer + "feed_forward/mlp/wo", bias=False)
    x = rms_norm(x, v[TEXT + "base_lm/final_layer_norm/weight"], eps)
    return x[:, 0], x[:, 1:]


def reference_outputs(variables: dict, original_config: dict, audio: np.ndarray, text_ids: np.ndarray) -> dict:
    """The fixture's output names for one audio batch `[B, samples]` and one text batch `[B, L]` (0 = padding)."""
    v = {name: value.astype(np.float64) for name, value in variables.items() if value.dtype.kind == "f"}
    backbones, bridge = original_config["backbone_config"], original_config["head_config"]["bridge"][0]
    audio_pooled, audio_features = wat_audio(v, audio.astype(np.float64), backbones["audio_model_kwargs"])
    text_pooled, text_features = t5_text(v, text_ids, backbones["text_model_kwargs"])
    audio_va = dense(audio_pooled, v, HEAD + "aud_to_va")
    projected = np.maximum(audio_va, 0.0) @ v[HEAD + "va_to_vat/dense/kernel"]
    bn, bn_eps = HEAD + "va_to_vat/bn/", bridge["bn_config"]["epsilon"]
    normalised = (projected - v[bn + "moving_mean"]) / np.sqrt(v[bn + "moving_variance"] + bn_eps)
    return {
        "audio_features_pooled": audio_pooled,
        "audio_features": audio_features,
        "audio_head_tovid": audio_va,
        "audio_head_tovat_derived": normalised * v[bn + "gamma"] + v[bn + "beta"],
        "text_features_pooled": text_pooled,
        "text_features": text_features,
        "text_head_tovid": dense(text_pooled, v, HEAD + "txt_to_vat"),
    }
