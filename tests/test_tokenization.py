"""Tests for VattTokenizer."""

import json
import logging
import random
import string

import pytest
import torch
from tokenizers import decoders, models

from modeling_vatt.tokenization_vatt import VattTokenizer

CORPUS = [
    "The cat sat on the mat.",
    "The dog sat; the cat ran!",
    "A dog's life: the end",
]


@pytest.fixture(scope="module")
def tokenizer():
    return VattTokenizer.from_corpus(CORPUS)


def original_words(text: str) -> list[str]:
    """The original DMVR `WordTokenizer` preprocessing: delete ASCII punctuation, lowercase ASCII, split."""
    text = text.translate(str.maketrans("", "", string.punctuation))
    return text.translate(str.maketrans(string.ascii_uppercase, string.ascii_lowercase)).split()


def test_vocabulary_from_corpus(tokenizer):
    vocab = tokenizer.get_vocab()
    assert vocab["<pad>"] == 0 and vocab["<unk>"] == 1
    # "the" x5, "cat"/"sat" x2 (ties in code-point order), then the words seen once ("dogs" is not "dog").
    assert [word for word, _ in sorted(vocab.items(), key=lambda item: item[1])][2:7] == [
        "the",
        "cat",
        "sat",
        "a",
        "dog",
    ]
    assert set(vocab) == {"<pad>", "<unk>"} | {word for text in CORPUS for word in original_words(text)}
    assert tokenizer.pad_token_id == 0 and tokenizer.bos_token is None and tokenizer.eos_token is None
    assert tokenizer.model_max_length == 512


def test_vocab_size_and_min_frequency_limit_the_vocabulary():
    frequent = VattTokenizer.from_corpus(iter(CORPUS), min_frequency=2)
    assert set(frequent.get_vocab()) == {"<pad>", "<unk>", "the", "cat", "sat"}
    small = VattTokenizer.from_corpus(CORPUS, vocab_size=4, model_max_length=16)
    assert small.get_vocab() == {"<pad>": 0, "<unk>": 1, "the": 2, "cat": 3}
    assert small.model_max_length == 16
    with pytest.raises(ValueError, match="vocab_size"):
        VattTokenizer.from_corpus(CORPUS, vocab_size=2)
    with pytest.raises(TypeError, match="must be strings"):
        VattTokenizer.from_corpus(["fine", 3])
    with pytest.raises(TypeError, match="not a single string"):
        VattTokenizer.from_corpus("the cat")


@pytest.mark.parametrize(
    "text, words",
    [
        ("Hello, World!", ["hello", "world"]),
        ("don't stop-me (now)", ["dont", "stopme", "now"]),
        ("a.b,c;d", ["abcd"]),
        ("  tabs\tand\nnew  lines ", ["tabs", "and", "new", "lines"]),
        ("non\u00a0breaking space", ["non", "breaking", "space"]),
        # Non-ASCII characters are kept as they are, uppercase included (the original lowercased ASCII only).
        ("Café ÉCOLE Über naïve", ["café", "École", "Über", "naïve"]),
        ("“Curly” quotes — dashes", ["“curly”", "quotes", "—", "dashes"]),
        ("日本語 テキスト", ["日本語", "テキスト"]),
        ("<pad> <unk> [PAD]", ["pad", "unk", "pad"]),
        ("", []),
        ("?!...", []),
    ],
)
def test_normalization(tokenizer, text, words):
    backend = tokenizer.backend_tokenizer
    normalized = backend.normalizer.normalize_str(text)
    assert [word for word, _ in backend.pre_tokenizer.pre_tokenize_str(normalized)] == words
    assert tokenizer.tokenize(text) == [word if word in tokenizer.get_vocab() else "<unk>" for word in words]
    if "\u00a0" not in text:
        assert words == original_words(text)


def test_ids_unknown_words_and_no_special_tokens(tokenizer):
    vocab = tokenizer.get_vocab()
    encoded = tokenizer("The CAT, the zebra")
    assert encoded["input_ids"] == [vocab["the"], vocab["cat"], vocab["the"], 1]
    assert encoded["attention_mask"] == [1, 1, 1, 1]
    assert "token_type_ids" not in encoded
    # A special-token string in a text is an ordinary (here unknown) word, never the padding id.
    assert tokenizer("<pad>")["input_ids"] == [1]


def test_empty_and_very_long_texts(tokenizer):
    assert tokenizer("")["input_ids"] == []
    batch = tokenizer(["", "the cat"], padding=True, return_tensors="pt")
    assert batch["input_ids"].tolist() == [[0, 0], [2, 3]]
    assert batch["attention_mask"].tolist() == [[0, 0], [1, 1]]
    long_text = "the cat sat on the mat " * 2000
    truncated = tokenizer(long_text, truncation=True)["input_ids"]
    assert len(truncated) == 512 and truncated == tokenizer(long_text)["input_ids"][:512]
    assert len(tokenizer(long_text, truncation=True, max_length=16)["input_ids"]) == 16
    assert tokenizer([long_text], padding="max_length", truncation=True, max_length=16, return_tensors="pt")[
        "input_ids"
    ].shape == (1, 16)


def test_padding_is_id_zero_on_the_right(tokenizer):
    batch = tokenizer(["the cat sat", "dog"], padding="max_length", max_length=5, return_tensors="pt")
    assert batch["input_ids"][1].tolist() == [tokenizer.convert_tokens_to_ids("dog"), 0, 0, 0, 0]
    assert torch.equal(batch["attention_mask"], (batch["input_ids"] != 0).long())


def test_pipeline_calling_convention(tokenizer):
    labels = [f"This is a sound of {label}." for label in ("a cat", "a dog", "nothing at all")]
    out = tokenizer(labels, return_tensors="pt", padding=True)
    assert set(out) == {"input_ids", "attention_mask"}
    assert out["input_ids"].dtype == torch.long and out["input_ids"].shape == (3, 8)


def test_decode(tokenizer):
    ids = tokenizer(["The cat sat.", "A dog"], padding=True)["input_ids"]
    assert tokenizer.batch_decode(ids, skip_special_tokens=True) == ["the cat sat", "a dog"]
    assert tokenizer.decode(ids[1]) == "a dog <pad>"


@pytest.mark.parametrize("text", [123, [1, 2], None, {"text": "x"}])
def test_bad_text_input(tokenizer, text):
    with pytest.raises(ValueError, match="text input must be of type|specify either `text`|`text` item 0 is int"):
        tokenizer(text)


@pytest.mark.parametrize(
    "text, message",
    [([], "empty list"), (["fine", None], "item 1 is NoneType"), ([["a", 1]], "item 0 is list"), ([[]], "item 0")],
)
def test_bad_batch_items(tokenizer, text, message):
    with pytest.raises(ValueError, match=message):
        tokenizer(text)


def test_text_pairs_and_pretokenized_batches_still_work(tokenizer):
    assert tokenizer([["the", "cat"]], is_split_into_words=True)["input_ids"] == [[2, 3]]
    assert tokenizer([("the", "cat")])["input_ids"] == [[2, 3]]


def test_ids_stay_inside_the_vocabulary(tokenizer):
    # The model no longer range-checks ids: every id a text yields must be a real word or <unk>, never <pad>.
    rng = random.Random(0)
    alphabet = string.printable + "éÜß中文—“”'\u00a0\u200b"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 80))) for _ in range(200)]
    ids = [i for row in tokenizer(texts)["input_ids"] for i in row]
    assert ids and 0 < min(ids) and max(ids) < len(tokenizer) == tokenizer.vocab_size


def test_saved_tokenizer_forgets_the_last_calls_truncation(tokenizer, tmp_path):
    long_text = "the cat sat on the mat " * 10
    tokenizer(long_text, padding="max_length", truncation=True, max_length=4)
    tokenizer.save_pretrained(tmp_path)
    reloaded = VattTokenizer.from_pretrained(tmp_path)
    assert len(reloaded(long_text)["input_ids"]) == 60
    assert "max_length" not in reloaded.init_kwargs


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_original_vocabulary_with_indices(tmp_path):
    # The DMVR format `idx word`; <bos>/<eos> are ordinary entries that a text never produces.
    path = write_lines(tmp_path / "vocab.txt", ["0 <pad>", "1 <bos>", "2 <eos>", "3 <unk>", "5 world", "4 hello"])
    tokenizer = VattTokenizer.from_vocab_file(path)
    assert tokenizer.get_vocab() == {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3, "hello": 4, "world": 5}
    assert tokenizer("Hello, unknown World!")["input_ids"] == [4, 3, 5]
    assert tokenizer.unk_token_id == 3 and tokenizer.pad_token_id == 0
    assert len(tokenizer) == 6


def test_original_vocabulary_with_byte_order_mark(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\ufeff0 <pad>\n1 <unk>\n2 hello\n", encoding="utf-8")
    assert VattTokenizer.from_vocab_file(path).get_vocab() == {"<pad>": 0, "<unk>": 1, "hello": 2}


def test_unreachable_vocabulary_entries_warn(tmp_path, caplog):
    # They keep their ids (a trained word table stays aligned), but no text can produce them: say so.
    path = write_lines(tmp_path / "vocab.txt", ["<pad>", "<unk>", "<eos>", "hello", "Hello", "don't"])
    with caplog.at_level(logging.WARNING):
        tokenizer = VattTokenizer.from_vocab_file(path)
    assert "2 entries can never be produced" in caplog.text and "['Hello', \"don't\"]" in caplog.text
    assert tokenizer("Hello don't")["input_ids"] == [3, 1]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        VattTokenizer.from_vocab_file(write_lines(tmp_path / "clean.txt", ["<pad>", "<unk>", "<eos>", "hello"]))
    assert "never be produced" not in caplog.text


def test_original_vocabulary_one_word_per_line(tmp_path):
    # A bare word gets its line number; a blank line keeps its number (as in the original parser), which leaves
    # a gap in the ids and is rejected.
    path = write_lines(tmp_path / "vocab.txt", ["<pad>", "<unk>", "", "hello", "world"])
    with pytest.raises(ValueError, match="ids must be exactly"):
        VattTokenizer.from_vocab_file(path)
    path = write_lines(tmp_path / "vocab.txt", ["<pad>", "<unk>", "hello", "world"])
    assert VattTokenizer.from_vocab_file(path, model_max_length=16)("world hello")["input_ids"] == [3, 2]


@pytest.mark.parametrize(
    "lines, message",
    [
        (["<pad>", "hello"], "must contain <unk>"),
        (["<unk>", "hello"], "must contain <pad>"),
        (["0 <pad>", "1 <unk>", "1 hello"], "id 1 is used twice"),
        (["<pad>", "<unk>", "hello", "hello"], "not unique"),
        (["0 <pad>", "1 <unk>", "3 hello"], "ids must be exactly"),
        (["0 <pad>", "1 <unk>", "2 two words"], "expected `idx word` or `word`"),
        (["0 <pad>", "one <unk>"], "expected `idx word` or `word`"),
    ],
)
def test_bad_vocabulary_files(tmp_path, lines, message):
    with pytest.raises(ValueError, match=message):
        VattTokenizer.from_vocab_file(write_lines(tmp_path / "vocab.txt", lines))


def test_train_new_from_iterator(tokenizer):
    retrained = tokenizer.train_new_from_iterator(["Zebra zebra, LION.", "lion zebra"], vocab_size=100)
    assert isinstance(retrained, VattTokenizer)
    assert retrained.get_vocab() == {"<pad>": 0, "<unk>": 1, "zebra": 2, "lion": 3}
    assert retrained("ZEBRA! cat <pad>")["input_ids"] == [2, 1, 1]
    assert retrained.model_max_length == tokenizer.model_max_length


def test_wordpiece_model():
    vocab = {"[PAD]": 0, "[UNK]": 1, "hel": 2, "##lo": 3, "world": 4}
    wordpiece = VattTokenizer.from_model(
        models.WordPiece(vocab, unk_token="[UNK]"), pad_token="[PAD]", unk_token="[UNK]", decoder=decoders.WordPiece()
    )
    assert wordpiece("Hello, World! xyz")["input_ids"] == [2, 3, 4, 1]
    assert wordpiece.decode([2, 3, 4, 0], skip_special_tokens=True) == "hello world"
    # Padding at another id (the model's `text_config.pad_token_id` must then match).
    other = VattTokenizer.from_model(models.WordLevel({"<unk>": 0, "<pad>": 1, "a": 2}, unk_token="<unk>"))
    assert other.pad_token_id == 1 and other(["a a", "<pad>"], padding=True)["input_ids"] == [[2, 2], [0, 1]]
    with pytest.raises(ValueError, match="no padding token"):
        VattTokenizer.from_model(models.WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>"))
    with pytest.raises(ValueError, match="no unknown token"):
        VattTokenizer.from_model(models.WordLevel({"<pad>": 0, "a": 1}, unk_token="<unk>"))


def test_save_and_load(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    assert {"tokenizer.json", "tokenizer_config.json"} <= {path.name for path in tmp_path.iterdir()}
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "VattTokenizer" and config["model_max_length"] == 512
    reloaded = VattTokenizer.from_pretrained(tmp_path)
    assert reloaded.get_vocab() == tokenizer.get_vocab()
    texts = ["The cat <pad> sat, on the ZEBRA.", "", "Über dog's"]
    assert reloaded(texts, padding=True)["input_ids"] == tokenizer(texts, padding=True)["input_ids"]
    assert reloaded.model_max_length == 512 and reloaded.model_input_names == ["input_ids", "attention_mask"]
    assert reloaded("<pad>")["input_ids"] == [1]
