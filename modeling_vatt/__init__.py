"""VATT audio and text towers for transformers, adapted to long-form speech."""

from transformers import AutoConfig, AutoModel

from .configuration_vatt import VattAudioConfig, VattConfig, VattTextConfig
from .modeling_vatt import (
    VattAudioModel,
    VattForContrastivePretraining,
    VattPreTrainedModel,
    VattTextModel,
    vatt_contrastive_loss,
)

for _config in (VattConfig, VattAudioConfig, VattTextConfig):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    _config.register_for_auto_class()
AutoModel.register(VattConfig, VattForContrastivePretraining, exist_ok=True)
AutoModel.register(VattAudioConfig, VattAudioModel, exist_ok=True)
AutoModel.register(VattTextConfig, VattTextModel, exist_ok=True)
for _model in (VattForContrastivePretraining, VattAudioModel, VattTextModel):
    _model.register_for_auto_class("AutoModel")

__all__ = [
    "VattAudioConfig",
    "VattTextConfig",
    "VattConfig",
    "VattPreTrainedModel",
    "VattAudioModel",
    "VattTextModel",
    "VattForContrastivePretraining",
    "vatt_contrastive_loss",
]
