"""The towers trace into one graph (no host synchronisation in `forward`) and compile with `fullgraph=True`."""

import pytest
import torch

from modeling_vatt import VattAudioConfig, VattAudioModel, VattTextConfig, VattTextModel


def _audio_inputs(padded: bool) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    inputs = {"input_values": torch.rand(2, 40 * 128, generator=generator) - 0.5}
    if padded:
        mask = torch.ones(2, 40 * 128, dtype=torch.long)
        mask[1, 23 * 128 :] = 0
        inputs["audio_attention_mask"] = mask
    return inputs


def _text_inputs(padded: bool) -> dict[str, torch.Tensor]:
    ids = torch.randint(1, 1000, (2, 9), generator=torch.Generator().manual_seed(0))
    if padded:
        ids[1, 5:] = 0
    return {"input_ids": ids}


TOWERS = {
    "audio": (lambda: VattAudioModel(VattAudioConfig.from_preset("tiny")), _audio_inputs),
    "text_relative": (lambda: VattTextModel(VattTextConfig.from_preset("tiny")), _text_inputs),
    "text_absolute": (
        lambda: VattTextModel(VattTextConfig.from_preset("tiny", position_embedding_type="absolute")),
        _text_inputs,
    ),
}


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("tower", sorted(TOWERS))
def test_forward_has_no_graph_breaks(tower, padded):
    build, inputs = TOWERS[tower]
    torch.manual_seed(0)
    model = build().eval()
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(**inputs(padded))
    assert explanation.graph_break_count == 0, [str(reason.reason) for reason in explanation.break_reasons]
    assert explanation.graph_count == 1


@pytest.mark.parametrize("tower", ["audio", "text_relative"])
def test_fullgraph_compile_matches_eager(tower):
    build, inputs = TOWERS[tower]
    torch.manual_seed(0)
    model = build().eval()
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        for padded in (False, True):
            expected = model(**inputs(padded))
            actual = compiled(**inputs(padded))
            torch.testing.assert_close(actual.last_hidden_state, expected.last_hidden_state, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(actual.attention_mask, expected.attention_mask)
