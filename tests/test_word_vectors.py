"""Character n-gram word vectors: deterministic, unit-norm, spelling-aware, and what the pretraining script loads."""

import pytest
import torch

from modeling_vatt import VattTokenizer
from modeling_vatt.word_vectors import char_ngram_word_vectors, character_ngrams, tokenizer_word_vectors


def test_character_ngrams_mark_word_boundaries():
    assert character_ngrams("ab", 2, 3) == ["<a", "ab", "b>", "<ab", "ab>"]


def test_vectors_are_unit_norm_deterministic_and_independent_of_the_vocabulary():
    first = char_ngram_word_vectors(["object", "objects", "lambda", ""], dim=64)
    second = char_ngram_word_vectors(["lambda", "object"], dim=64)
    torch.testing.assert_close(first.norm(dim=1), torch.tensor([1.0, 1.0, 1.0, 0.0]))
    torch.testing.assert_close(second, first[[2, 0]], rtol=0, atol=0)
    assert not torch.equal(char_ngram_word_vectors(["object"], dim=64, seed=1), first[:1])


def test_shared_spelling_means_a_shared_direction():
    vectors = char_ngram_word_vectors(["object", "objects", "lambda", "iterator", "iterators"], dim=256)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > 0.7 and similarity[3, 4] > 0.7
    assert abs(similarity[0, 2]) < 0.3 and abs(similarity[1, 3]) < 0.3


def test_tokenizer_vectors_follow_the_ids_with_zero_special_rows():
    tokenizer = VattTokenizer.from_corpus(["the object and the objects", "an object"])
    table = tokenizer_word_vectors(tokenizer, dim=32)
    assert table.shape == (len(tokenizer), 32)
    assert not table[0].any() and not table[1].any()  # <pad>, <unk>
    vocab = tokenizer.get_vocab()
    torch.testing.assert_close(table[vocab["objects"]], char_ngram_word_vectors(["objects"], dim=32)[0])


@pytest.mark.parametrize("kwargs", [{"dim": 0}, {"dim": 8, "min_n": 3, "max_n": 2}, {"dim": 8, "min_n": 0}])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        char_ngram_word_vectors(["word"], **kwargs)
