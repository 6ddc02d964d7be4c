"""
transformers' `ModelTesterMixin` and `ConfigTester` run against every Vatt model class, with tiny testers written like
CLAP's and wav2vec2's (the mixins come from the installed transformers' sdist, see `transformers_common.py`).

Run them alone with `.venv/bin/pytest -q tests/test_common_models.py`.

Like ViT's CLS token, the AGG token sits at index 0 of `last_hidden_state`, so the testers' `seq_length` is the number
of patches (words) + 1. Skipped tests, each with its reason (`SKIPS` below):
- VattForContrastivePretraining: `test_hidden_states_output`, `test_retain_grad_hidden_states_attentions`,
  `test_attention_outputs`: the contrastive output nests them per tower, like CLIP/CLAP; the tower testers run them.
- VattForContrastivePretraining: `test_get_text_features_output` (return_dict True/None): the mixin expects the input
  length, `last_hidden_state` has 1 + input length (the AGG token).
- VattAudioModel, VattForAudioClassification: `test_model_get_set_embeddings` (raw waveforms have no token table).
"""

import unittest

import torch
from transformers_common import load

from modeling_vatt import (
    VattAudioConfig,
    VattAudioModel,
    VattConfig,
    VattForAudioClassification,
    VattForContrastivePretraining,
    VattTextConfig,
    VattTextModel,
)

modeling_common = load("test_modeling_common")
ConfigTester = load("test_configuration_common").ConfigTester
ModelTesterMixin = modeling_common.ModelTesterMixin
floats_tensor, ids_tensor = modeling_common.floats_tensor, modeling_common.ids_tensor

ENCODER = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "head_dim": 8, "intermediate_size": 37}


def right_padded_mask(batch_size: int, length: int, unit: int = 1) -> torch.Tensor:
    """A `(batch, length * unit)` mask: item 0 is unpadded, later items lose one more `unit` of padding each."""
    real = torch.tensor([length - min(index, length - 1) for index in range(batch_size)]) * unit
    return (torch.arange(length * unit) < real[:, None]).long()


class VattTowerModelTester:
    """What the mixin reads of a tower tester; `seq_length` counts the AGG token first, as ViT's CLS."""

    def __init__(self, parent, num_tokens: int, batch_size: int, is_training: bool, config_overrides: dict):
        self.parent = parent
        self.batch_size = batch_size
        self.seq_length = num_tokens + 1
        self.is_training = is_training
        self.num_hidden_layers = ENCODER["num_hidden_layers"]
        self.num_attention_heads = ENCODER["num_attention_heads"]
        self.hidden_size = ENCODER["hidden_size"]
        self.config_overrides = config_overrides


class VattAudioModelTester(VattTowerModelTester):
    def __init__(self, parent, batch_size=3, num_patches=9, patch_size=8, is_training=False, **config_overrides):
        super().__init__(parent, num_patches, batch_size, is_training, config_overrides)
        self.num_patches = num_patches
        self.patch_size = patch_size

    def get_config(self) -> VattAudioConfig:
        return VattAudioConfig(
            **ENCODER, patch_size=self.patch_size, max_position_embeddings=16, num_labels=3, **self.config_overrides
        )

    def prepare_config_and_inputs(self) -> tuple[VattAudioConfig, torch.Tensor, torch.Tensor]:
        input_values = floats_tensor([self.batch_size, self.num_patches * self.patch_size], scale=2.0) - 1.0
        mask = right_padded_mask(self.batch_size, self.num_patches, self.patch_size)
        return self.get_config(), input_values * mask, mask

    def prepare_config_and_inputs_for_common(self) -> tuple[VattAudioConfig, dict]:
        config, input_values, mask = self.prepare_config_and_inputs()
        return config, {"input_values": input_values, "audio_attention_mask": mask}


class VattTextModelTester(VattTowerModelTester):
    def __init__(self, parent, batch_size=3, num_words=7, vocab_size=99, is_training=False, **config_overrides):
        super().__init__(parent, num_words, batch_size, is_training, config_overrides)
        self.num_words = num_words
        self.vocab_size = vocab_size

    def get_config(self) -> VattTextConfig:
        return VattTextConfig(
            **ENCODER,
            vocab_size=self.vocab_size,
            embedding_size=24,
            max_position_embeddings=16,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=16,
            **self.config_overrides,
        )

    def prepare_config_and_inputs(self) -> tuple[VattTextConfig, torch.Tensor, torch.Tensor]:
        mask = right_padded_mask(self.batch_size, self.num_words)
        input_ids = (ids_tensor([self.batch_size, self.num_words], self.vocab_size - 1) + 1) * mask  # 0 = <pad>
        return self.get_config(), input_ids, mask

    def prepare_config_and_inputs_for_common(self) -> tuple[VattTextConfig, dict]:
        config, input_ids, mask = self.prepare_config_and_inputs()
        return config, {"input_ids": input_ids, "attention_mask": mask}


class VattContrastiveModelTester:
    def __init__(self, parent, modality_agnostic=False, is_training=True):
        self.parent = parent
        self.modality_agnostic = modality_agnostic
        # The shared encoder's post-projection keeps the width, as the mixin reads `hidden_size` for feature shapes.
        tower = {"post_projection_size": ENCODER["hidden_size"]} if modality_agnostic else {}
        self.audio_model_tester = VattAudioModelTester(parent, **tower)
        self.text_model_tester = VattTextModelTester(parent)
        self.batch_size = self.audio_model_tester.batch_size
        self.seq_length = self.text_model_tester.seq_length
        self.num_hidden_layers = ENCODER["num_hidden_layers"]
        self.num_attention_heads = ENCODER["num_attention_heads"]
        self.is_training = is_training

    def get_config(self) -> VattConfig:
        audio = self.audio_model_tester.get_config().to_dict()
        text = self.text_model_tester.get_config().to_dict()
        if self.modality_agnostic:
            text = {key: text[key] for key in ("vocab_size", "embedding_size", "max_position_embeddings")}
        # Unit logit scale: the mixin compares eager and SDPA `logits_per_text` in fp16 at atol 5e-3, and VATT's scale
        # (1 / 0.07) multiplies the fp16 rounding both share (each is ~2e-2 off float32 at that scale) past it.
        return VattConfig(
            audio_config=audio,
            text_config=text,
            modality_agnostic=self.modality_agnostic,
            projection_dim=16,
            logit_scale_init_value=0.0,
        )

    def prepare_config_and_inputs_for_common(self) -> tuple[VattConfig, dict]:
        _, audio_inputs = self.audio_model_tester.prepare_config_and_inputs_for_common()
        _, text_inputs = self.text_model_tester.prepare_config_and_inputs_for_common()
        return self.get_config(), {**audio_inputs, **text_inputs, "return_loss": True}


def _skip(reason: str):
    return unittest.skip(reason=reason)


SKIPS = {
    "no_token_table": _skip("The audio tower reads raw waveforms: there is no input embedding table."),
    "nested_outputs": _skip("Per-tower outputs are nested (as CLIP/CLAP); the tower testers run this test."),
    "agg_token": _skip("The mixin expects input length; the AGG token makes it 1 + input length (as ViT's CLS)."),
}


class VattAudioModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (VattAudioModel,)
    test_resize_embeddings = False
    # A tower has no loss; transformers skips its own base models' training tests through `MODEL_MAPPING_NAMES`,
    # which does not list Vatt, so the tower testers say `is_training=False` (the heads below train).
    is_training = False

    def setUp(self):
        self.model_tester = VattAudioModelTester(self, is_training=self.is_training)
        self.config_tester = ConfigTester(self, config_class=VattAudioConfig, has_text_modality=False, **ENCODER)

    def test_config(self):
        self.config_tester.run_common_tests()

    @SKIPS["no_token_table"]
    def test_model_get_set_embeddings(self):
        pass


class VattForAudioClassificationTest(VattAudioModelTest):
    all_model_classes = (VattForAudioClassification,)
    is_training = True

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        if return_labels:
            inputs_dict["labels"] = torch.zeros(self.model_tester.batch_size, dtype=torch.long)
        return inputs_dict


class VattTextModelTest(ModelTesterMixin, unittest.TestCase):
    """The original T5-style text tower (relative position bias)."""

    all_model_classes = (VattTextModel,)
    position_embedding_type = "relative"

    def setUp(self):
        self.model_tester = VattTextModelTester(self, position_embedding_type=self.position_embedding_type)
        self.config_tester = ConfigTester(
            self,
            config_class=VattTextConfig,
            position_embedding_type=self.position_embedding_type,
            vocab_size=99,
            **ENCODER,
        )

    def test_config(self):
        self.config_tester.run_common_tests()


class VattTextModelAbsolutePositionsTest(VattTextModelTest):
    """The text path of the modality-agnostic model (learned absolute positions)."""

    position_embedding_type = "absolute"


class VattForContrastivePretrainingTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (VattForContrastivePretraining,)
    modality_agnostic = False
    _is_composite = True
    # The SDPA-vs-eager test passes only `main_input_name` (`input_ids`) and these.
    additional_model_inputs = ["input_values", "audio_attention_mask"]

    def setUp(self):
        self.model_tester = VattContrastiveModelTester(self, modality_agnostic=self.modality_agnostic)
        self.config_tester = ConfigTester(self, config_class=VattConfig, has_text_modality=False, projection_dim=16)

    def test_config(self):
        self.config_tester.run_common_tests()

    @SKIPS["nested_outputs"]
    def test_hidden_states_output(self):
        pass

    @SKIPS["nested_outputs"]
    def test_retain_grad_hidden_states_attentions(self):
        pass

    @SKIPS["nested_outputs"]
    def test_attention_outputs(self):
        pass

    # `parameterized` expands the mixin's test into one method per `return_dict`; `False` checks no shape and runs.
    @SKIPS["agg_token"]
    def test_get_text_features_output_0(self):
        pass

    @SKIPS["agg_token"]
    def test_get_text_features_output_2(self):
        pass


class VattForContrastivePretrainingModalityAgnosticTest(VattForContrastivePretrainingTest):
    """UVATT: one encoder shared by the audio and text towers."""

    modality_agnostic = True
