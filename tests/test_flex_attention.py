"""
The relative-bias attention functions against eager attention: FlexAttention (forward on CPU; its fused backward only
exists on CUDA, which `benchmarks/gpu_check.py` checks) and the trained-bias SDPA path (its row-by-row bias gradient).
"""

import pytest
import torch
from torch import nn

from modeling_vatt import VattTextConfig, VattTextModel
from modeling_vatt.modeling_vatt import (
    VattRelativePositionBias,
    _dense_bias_sdpa,
    _ReversedKeyBias,
    eager_attention_forward,
    flex_relative_bias_attention_forward,
    sdpa_relative_bias_attention_forward,
)

RELATIVE_TOLERANCE = 1e-5


def _attention_inputs(batch: int, heads: int, length: int, padded: bool, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    query, key, value = (torch.randn(batch, heads, length, 16, generator=generator) for _ in range(3))
    bias = torch.randn(heads, 2 * length - 1, generator=generator)
    mask = None
    if padded:
        mask = torch.ones(batch, 1, 1, length, dtype=torch.bool)
        mask[-1, ..., length - length // 3 :] = False
    return query, key, value, bias, mask


def _assert_relative_close(actual: torch.Tensor, expected: torch.Tensor, name: str = "") -> None:
    error = ((actual - expected).abs().max() / expected.abs().max()).item()
    assert error <= RELATIVE_TOLERANCE, (name, error)


def test_reversed_key_bias_gradient_equals_autograds_scatter():
    per_offset = torch.randn(3, 2 * 9 - 1, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(1, 3, 9, 9, dtype=torch.float64)
    rows = torch.autograd.grad(_ReversedKeyBias.apply(per_offset), per_offset, grad)[0]
    scatter = torch.autograd.grad(VattRelativePositionBias.reversed_key_view(per_offset), per_offset, grad)[0]
    torch.testing.assert_close(rows, scatter, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        _ReversedKeyBias.apply(per_offset), VattRelativePositionBias.reversed_key_view(per_offset)
    )


def _dense_bias_attention(module, query, key, value, mask, scaling, position_bias):
    return _dense_bias_sdpa(query, key, value, mask, scaling, 0.0, position_bias)


@pytest.mark.parametrize("trained_path", [sdpa_relative_bias_attention_forward, _dense_bias_attention])
@pytest.mark.parametrize("padded", [False, True])
def test_trained_bias_sdpa_path_matches_eager_in_output_and_every_gradient(padded, trained_path):
    """
    Scaled queries (not the T5 default of 1.0) and a batch of 2: the bias gradient sums over the batch. The dense
    layout is the accelerator path; on CPU, SDPA differentiates its mask with the math kernel.
    """
    module = nn.Module().train()
    inputs = _attention_inputs(2, 3, 37, padded)
    results = []
    for attention in (trained_path, eager_attention_forward):
        leaves = [tensor.clone().requires_grad_() for tensor in inputs[:4]]
        output, _ = attention(module, *leaves[:3], inputs[4], 0.125, position_bias=leaves[3])
        output.backward(torch.ones_like(output).cumsum(-1))
        results.append([output.detach(), *(leaf.grad for leaf in leaves)])
    for name, actual, expected in zip(("output", "query", "key", "value", "bias"), *results):
        _assert_relative_close(actual, expected, name)


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("length", [37, 200])  # inside one 128 block, and across two
def test_flex_attention_forward_matches_eager(padded, length):
    module = nn.Module().eval()
    inputs = _attention_inputs(2, 3, length, padded)
    with torch.inference_mode():
        flex, _ = flex_relative_bias_attention_forward(module, *inputs[:3], inputs[4], 1.0, position_bias=inputs[3])
        eager, _ = eager_attention_forward(module, *inputs[:3], inputs[4], 1.0, position_bias=inputs[3])
    _assert_relative_close(flex, eager)


def test_flex_attention_refuses_attention_dropout():
    query, key, value, bias, _ = _attention_inputs(1, 2, 8, False)
    with pytest.raises(ValueError, match="no attention dropout"):
        flex_relative_bias_attention_forward(nn.Module(), query, key, value, None, 1.0, 0.1, position_bias=bias)


def test_text_tower_under_flex_attention_matches_eager():
    """Selected by name (the T5-style tower's attention interface); two lengths, so the compiled kernel is reused."""
    config = VattTextConfig.from_preset("tiny", hidden_dropout_prob=0.0, attention_dropout=0.0)
    torch.manual_seed(0)
    model = VattTextModel(config).eval()
    for length in (40, 70):
        ids = torch.randint(1, config.vocab_size, (2, length), generator=torch.Generator().manual_seed(length))
        ids[1, length // 2 :] = 0
        outputs = {}
        for implementation in ("flex_attention", "eager"):
            model.config._attn_implementation = implementation
            with torch.inference_mode():
                outputs[implementation] = model(input_ids=ids).last_hidden_state
        _assert_relative_close(outputs["flex_attention"], outputs["eager"])
