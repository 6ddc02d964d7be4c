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
"""
Word vectors for a VATT word table without downloading any: the sum of fixed random vectors of each word's character
n-grams (the subword idea of fastText, without its training). The original froze a pretrained word2vec table; these
vectors play that part when none is available. Words that share spelling share direction, so the text tower starts from
a table in which related forms (`object`, `objects`) and similar-sounding words are close, instead of from unrelated
random rows. A training helper: the model files never import it.
"""

import zlib
from collections.abc import Sequence

import numpy as np
import torch

from .tokenization_vatt import PAD_TOKEN, UNK_TOKEN, VattTokenizer


def character_ngrams(word: str, min_n: int = 2, max_n: int = 4) -> list[str]:
    """The character n-grams of `<word>` (with boundary marks) for `min_n <= n <= max_n`."""
    marked = f"<{word}>"
    return [marked[start : start + n] for n in range(min_n, max_n + 1) for start in range(len(marked) - n + 1)]


def char_ngram_word_vectors(
    words: Sequence[str], dim: int, min_n: int = 2, max_n: int = 4, seed: int = 0
) -> torch.Tensor:
    """
    `(len(words), dim)` unit-norm rows: each word's row is the normalised sum of one standard-normal vector per
    character n-gram, seeded by `(seed, crc32(n-gram))`, so a word gets the same vector in every vocabulary and on
    every machine. Empty strings get a zero row.
    """
    if dim <= 0 or not 1 <= min_n <= max_n:
        raise ValueError(f"Need dim > 0 and 1 <= min_n <= max_n, got dim={dim}, min_n={min_n}, max_n={max_n}.")
    gram_vectors: dict[str, np.ndarray] = {}
    table = np.zeros((len(words), dim), dtype=np.float64)
    for row, word in enumerate(words):
        if not word:
            continue
        for gram in character_ngrams(word, min_n, max_n):
            if gram not in gram_vectors:
                rng = np.random.default_rng([seed, zlib.crc32(gram.encode("utf-8"))])
                gram_vectors[gram] = rng.standard_normal(dim)
            table[row] += gram_vectors[gram]
    norms = np.linalg.norm(table, axis=1, keepdims=True)
    return torch.from_numpy(table / np.maximum(norms, 1e-12)).float()


def tokenizer_word_vectors(tokenizer: VattTokenizer, dim: int, seed: int = 0) -> torch.Tensor:
    """Character n-gram vectors for every id of `tokenizer`, with zero rows for `<pad>` and `<unk>`."""
    vocab = tokenizer.get_vocab()
    words = [""] * len(vocab)
    for word, index in vocab.items():
        words[index] = "" if word in (PAD_TOKEN, UNK_TOKEN) else word
    return char_ngram_word_vectors(words, dim, seed=seed)
