"""
transformers' `SequenceFeatureExtractionTestMixin`, `TokenizerTesterMixin` and `ProcessorTesterMixin` run against
`VattFeatureExtractor`, `VattTokenizer` and `VattProcessor` (mixins from the installed transformers' sdist, see
`transformers_common.py`). Run them alone with `.venv/bin/pytest -q tests/test_common_preprocessing.py`.

The feature-extractor tester uses 2-sample patches and clip lengths that are whole patches, so the mixin's exact
lengths hold while `pad` keeps VATT's patch alignment. Skipped tests, each with its reason (`SKIPS` below):
- `test_attention_mask`, `test_attention_mask_with_truncation`: the audio mask is `audio_attention_mask` (the text
  tower owns `attention_mask`); `tests/test_feature_extraction.py` checks the mask `pad` returns.
- `test_tokenize_special_tokens`: special-token strings in a text are ordinary words (so no text yields `<pad>`, id 0).
- `test_processor_from_and_save_pretrained(_as_nested_dict)`: transformers' `custom_object_save` sets `auto_map` on
  the processor it saves (remote code only), so `to_dict()` differs; `tests/test_processing.py` checks the round trip.
"""

import random
import unittest

import numpy as np
from transformers_common import load

from modeling_vatt import VattFeatureExtractor, VattProcessor, VattTokenizer

SequenceFeatureExtractionTestMixin = load("test_sequence_feature_extraction_common").SequenceFeatureExtractionTestMixin
TokenizerTesterMixin = load("test_tokenization_common").TokenizerTesterMixin
ProcessorTesterMixin = load("test_processing_common").ProcessorTesterMixin

# Words of the mixins' own test strings ("lower newer", "upper older longer string", ...) plus a few more.
CORPUS = [
    "lower newer upper older longer string",
    "this is a test hello hi there how are you doing",
    "the following string should be properly encoded",
    "a quick brown fox jumps over the lazy dog",
]

SKIPS = {
    "audio_mask_key": unittest.skip(
        reason="The audio mask is `audio_attention_mask` (the text tower owns `attention_mask`)."
    ),
    "auto_map": unittest.skip(
        reason="Saving a remote-code processor sets `auto_map` on it (transformers' `custom_object_save`)."
    ),
    "special_tokens_are_words": unittest.skip(
        reason="Special-token strings in a text are ordinary words, so no text yields `<pad>` (see VattTokenizer)."
    ),
}


class VattFeatureExtractionTester:
    def __init__(self, batch_size=7, min_seq_length=40, max_seq_length=102, patch_size=2):
        self.batch_size = batch_size
        self.min_seq_length = min_seq_length
        self.max_seq_length = max_seq_length
        self.seq_length_diff = (max_seq_length - min_seq_length) // (batch_size - 1)
        self.patch_size = patch_size
        self.feature_size = 1

    def prepare_feat_extract_dict(self) -> dict:
        return {
            "feature_size": self.feature_size,
            "sampling_rate": 16000,
            "padding_value": 0.0,
            "patch_size": self.patch_size,
            "do_normalize": False,
            "return_attention_mask": True,
        }

    def prepare_inputs_for_common(self, equal_length=False, numpify=False) -> list:
        rng = random.Random(0)
        lengths = [self.max_seq_length] * self.batch_size
        if not equal_length:
            lengths = range(self.min_seq_length, self.max_seq_length, self.seq_length_diff)
        clips = [[rng.uniform(-1, 1) for _ in range(length)] for length in lengths]
        return [np.asarray(clip) for clip in clips] if numpify else clips


class VattFeatureExtractionTest(SequenceFeatureExtractionTestMixin, unittest.TestCase):
    feature_extraction_class = VattFeatureExtractor

    def setUp(self):
        self.feat_extract_tester = VattFeatureExtractionTester()

    @SKIPS["audio_mask_key"]
    def test_attention_mask(self):
        pass

    @SKIPS["audio_mask_key"]
    def test_attention_mask_with_truncation(self):
        pass


def corpus_tokenizer() -> VattTokenizer:
    return VattTokenizer.from_corpus(CORPUS)


class VattTokenizationTest(TokenizerTesterMixin, unittest.TestCase):
    tokenizer_class = VattTokenizer
    test_seq2seq = False

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        corpus_tokenizer().save_pretrained(cls.tmpdirname)

    @SKIPS["special_tokens_are_words"]
    def test_tokenize_special_tokens(self):
        pass


class VattProcessorTest(ProcessorTesterMixin, unittest.TestCase):
    processor_class = VattProcessor
    audio_input_name = "input_values"

    @classmethod
    def _setup_feature_extractor(cls) -> VattFeatureExtractor:
        # One-sample patches: the mixin asks for audio lengths such as 117 samples.
        return VattFeatureExtractor(sampling_rate=16000, patch_size=1)

    @classmethod
    def _setup_tokenizer(cls) -> VattTokenizer:
        return corpus_tokenizer()

    @SKIPS["auto_map"]
    def test_processor_from_and_save_pretrained(self):
        pass

    @SKIPS["auto_map"]
    def test_processor_from_and_save_pretrained_as_nested_dict(self):
        pass
