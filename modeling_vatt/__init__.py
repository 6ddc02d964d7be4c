"""VATT audio and text towers for transformers, adapted to long-form speech."""

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForAudioClassification,
    AutoProcessor,
    AutoTokenizer,
)

from . import configuration_vatt, feature_extraction_vatt, modeling_vatt, processing_vatt, tokenization_vatt
from .configuration_vatt import VattAudioConfig, VattConfig, VattEncoderConfig, VattTextConfig  # noqa: F401
from .feature_extraction_vatt import VattFeatureExtractor
from .modeling_vatt import (
    VattAudioModel,
    VattForAudioClassification,
    VattForContrastivePretraining,
    VattPreTrainedModel,  # noqa: F401
    VattTextModel,
    vatt_contrastive_loss,  # noqa: F401
)
from .processing_vatt import VattProcessor
from .tokenization_vatt import VattTokenizer

for _config in (VattConfig, VattAudioConfig, VattTextConfig):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    _config.register_for_auto_class()
AutoModel.register(VattConfig, VattForContrastivePretraining, exist_ok=True)
AutoModel.register(VattAudioConfig, VattAudioModel, exist_ok=True)
AutoModel.register(VattTextConfig, VattTextModel, exist_ok=True)
for _model in (VattForContrastivePretraining, VattAudioModel, VattTextModel):
    _model.register_for_auto_class("AutoModel")
AutoModelForAudioClassification.register(VattAudioConfig, VattForAudioClassification, exist_ok=True)
VattForAudioClassification.register_for_auto_class("AutoModelForAudioClassification")
AutoFeatureExtractor.register(VattConfig, VattFeatureExtractor, exist_ok=True)
AutoTokenizer.register(VattConfig, tokenizer_class=VattTokenizer, exist_ok=True)
AutoProcessor.register(VattConfig, VattProcessor, exist_ok=True)
VattFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
VattTokenizer.register_for_auto_class("AutoTokenizer")
VattProcessor.register_for_auto_class("AutoProcessor")

# The public names are each model file's own `__all__`.
__all__ = [
    *configuration_vatt.__all__,
    *modeling_vatt.__all__,
    *feature_extraction_vatt.__all__,
    *tokenization_vatt.__all__,
    *processing_vatt.__all__,
]
