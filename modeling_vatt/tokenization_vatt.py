# Copyright 2026 The vatt authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Word-level tokenizer reproducing the original VATT text preprocessing."""

import os
import string
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers.tokenization_utils_tokenizers import TokenizersBackend
from transformers.utils import logging

logger = logging.get_logger(__name__)

PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
DEFAULT_VOCAB_SIZE = 2**16
DEFAULT_MODEL_MAX_LENGTH = 512


def vatt_normalizer() -> normalizers.Normalizer:
    """Delete ASCII punctuation (no space inserted), then lowercase ASCII letters; other characters are kept."""
    punctuation = Regex("[" + "".join("\\" + char for char in string.punctuation) + "]")
    ascii_lowercase = [normalizers.Replace(upper, upper.lower()) for upper in string.ascii_uppercase]
    return normalizers.Sequence([normalizers.Replace(punctuation, ""), *ascii_lowercase])


class VattTokenizer(TokenizersBackend):
    r"""
    Word-level VATT tokenizer backed by 🤗 Tokenizers.

    Like the original (DMVR `WordTokenizer`), a text is normalised by deleting every ASCII punctuation character
    (`"don't"` → `"dont"`) and lowercasing ASCII letters, then split on whitespace; each word maps to its id or to
    `<unk>`. Non-ASCII characters (accented letters, CJK, typographic quotes and dashes) are kept unchanged, as in the
    original. There are no BOS/EOS tokens, padding uses `<pad>` (id 0 in the original vocabularies; its id must be the
    model's `text_config.pad_token_id`) and special-token strings in a text are ordinary words (`"<pad>"` becomes
    `"pad"`), so a text can never produce the padding id.

    Build one with [`~VattTokenizer.from_corpus`], [`~VattTokenizer.from_vocab_file`] (original vocabulary files) or
    [`~VattTokenizer.from_model`] (any 🤗 Tokenizers model, e.g. WordPiece), or load a saved one with
    `from_pretrained`. `train_new_from_iterator` learns a new vocabulary with the same normalisation.
    """

    model_input_names = ["input_ids", "attention_mask"]

    def __call__(self, text=None, *args, **kwargs):
        """As [`~PreTrainedTokenizerBase.__call__`], with a one-line error for an empty batch or a non-string item."""
        if isinstance(text, (list, tuple)):
            if len(text) == 0:
                raise ValueError("`text` is an empty list; pass at least one string.")
            pretokenized = kwargs.get("is_split_into_words", False)
            expected = "a string or a list of words" if pretokenized else "a string or a (text, text_pair) pair"
            for index, item in enumerate(text):
                parts = item if isinstance(item, (list, tuple)) else [item]
                is_pair = isinstance(item, (list, tuple)) and len(item) == 2
                if not all(isinstance(part, str) for part in parts) or not (
                    pretokenized or is_pair or parts == [item]
                ):
                    raise ValueError(
                        f"`text` item {index} is {type(item).__name__} {item!r:.60}; expected {expected}."
                    )
        return super().__call__(text, *args, **kwargs)

    def _save_pretrained(self, save_directory, file_names, legacy_format=None, filename_prefix=None):
        # The backend keeps the truncation/padding of the last call; saved, it would become the loaded tokenizer's
        # (and processor's) default `max_length`. Every call sets its own, so save without.
        self.backend_tokenizer.no_truncation()
        self.backend_tokenizer.no_padding()
        return super()._save_pretrained(save_directory, file_names, legacy_format, filename_prefix)

    @classmethod
    def from_model(
        cls,
        model: models.Model,
        pad_token: str = PAD_TOKEN,
        unk_token: str = UNK_TOKEN,
        decoder: decoders.Decoder | None = None,
        model_max_length: int = DEFAULT_MODEL_MAX_LENGTH,
    ) -> "VattTokenizer":
        """
        Wrap a 🤗 Tokenizers model (`WordLevel`, `WordPiece`, ...) in the VATT normalisation and whitespace split.

        The id of `pad_token` must be the model's `text_config.pad_token_id`. For a BERT WordPiece vocabulary:
        `VattTokenizer.from_model(models.WordPiece.from_file("vocab.txt", unk_token="[UNK]"), pad_token="[PAD]",
        unk_token="[UNK]", decoder=decoders.WordPiece())`.
        """
        if model.token_to_id(pad_token) is None:
            raise ValueError(f"The vocabulary has no padding token {pad_token!r}.")
        if model.token_to_id(unk_token) is None:
            raise ValueError(f"The vocabulary has no unknown token {unk_token!r}.")
        backend = Tokenizer(model)
        backend.normalizer = vatt_normalizer()
        backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        backend.decoder = decoder
        return cls(
            tokenizer_object=backend,
            pad_token=pad_token,
            unk_token=unk_token,
            model_max_length=model_max_length,
            split_special_tokens=True,
        )

    @classmethod
    def from_corpus(
        cls,
        texts: Iterable[str],
        vocab_size: int = DEFAULT_VOCAB_SIZE,
        min_frequency: int = 1,
        model_max_length: int = DEFAULT_MODEL_MAX_LENGTH,
    ) -> "VattTokenizer":
        """
        Build a word vocabulary from `texts` (any iterable of strings, read once).

        Ids: `<pad>` = 0, `<unk>` = 1, then words by decreasing frequency (ties in code-point order), keeping words
        seen at least `min_frequency` times, up to `vocab_size` entries in total (special tokens included).
        """
        if vocab_size < 3:
            raise ValueError(f"`vocab_size` must leave room for <pad>, <unk> and at least one word, got {vocab_size}.")
        backend = Tokenizer(models.WordLevel(unk_token=UNK_TOKEN))
        backend.normalizer = vatt_normalizer()
        backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        trainer = trainers.WordLevelTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=[PAD_TOKEN, UNK_TOKEN],
            show_progress=False,
        )
        backend.train_from_iterator(_checked_texts(texts), trainer=trainer)
        return cls.from_model(backend.model, model_max_length=model_max_length)

    @classmethod
    def from_vocab_file(
        cls, vocab_file: str | os.PathLike, model_max_length: int = DEFAULT_MODEL_MAX_LENGTH
    ) -> "VattTokenizer":
        """
        Load an original VATT/DMVR vocabulary (e.g. `howto100m_en.txt`): one `idx word` or `word` per line, where a
        bare word gets its 0-based line number (a UTF-8 byte-order mark is ignored). It must contain `<pad>` (id 0 in
        the original files; the model's `text_config.pad_token_id` must match) and `<unk>`; other entries such as `<bos>`/`<eos>` are kept as ordinary words. Ids must be unique and
        cover `0 .. n-1`. Entries that the normalisation changes (upper case, ASCII punctuation) keep their ids, so
        that a trained word table stays aligned, but no text can produce them: a warning lists them.
        """
        id_to_word = {}
        with open(vocab_file, encoding="utf-8-sig") as handle:
            for line_number, line in enumerate(handle):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) > 2 or (len(fields) == 2 and not fields[0].isdecimal()):
                    raise ValueError(f"{vocab_file}:{line_number + 1}: expected `idx word` or `word`, got {line!r}.")
                index, word = (int(fields[0]), fields[1]) if len(fields) == 2 else (line_number, fields[0])
                if index in id_to_word:
                    raise ValueError(f"{vocab_file}:{line_number + 1}: id {index} is used twice.")
                id_to_word[index] = word
        vocab = {word: index for index, word in id_to_word.items()}
        if len(vocab) != len(id_to_word):
            raise ValueError(f"{vocab_file}: words are not unique.")
        if sorted(id_to_word) != list(range(len(id_to_word))):
            raise ValueError(f"{vocab_file}: ids must be exactly 0 .. {len(id_to_word) - 1}.")
        for token in (PAD_TOKEN, UNK_TOKEN):
            if token not in vocab:
                raise ValueError(f"{vocab_file}: the vocabulary must contain {token}.")
        normalizer = vatt_normalizer()
        unreachable = [
            word
            for word in vocab
            if normalizer.normalize_str(word) != word and not (word.startswith("<") and word.endswith(">"))
        ]
        if unreachable:
            logger.warning(
                f"{vocab_file}: {len(unreachable)} entries can never be produced, because the VATT normalisation "
                f"(lowercase ASCII, no ASCII punctuation) changes them: {unreachable[:5]}{' ...' * (len(unreachable) > 5)}."
            )
        return cls.from_model(models.WordLevel(vocab, unk_token=UNK_TOKEN), model_max_length=model_max_length)


def _checked_texts(texts: Iterable[str]) -> Iterable[str]:
    if isinstance(texts, str):
        raise TypeError("`texts` must be an iterable of strings, not a single string.")
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"Corpus entries must be strings, got {type(text).__name__}.")
        yield text


__all__ = ["VattTokenizer"]
