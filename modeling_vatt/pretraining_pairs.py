"""Training pairs from long recordings: audio windows with the transcript words spoken inside them.

Alignment rule: a word belongs to a time span when its midpoint `(start + end) / 2` lies in `[span_start, span_end)`,
so every word of a recording belongs to exactly one of a sequence of adjacent windows.

Recordings without word timings get proportional timings by default (`untimed="proportional"`): each word is given a
slice of the recording proportional to its character count (plus one for the following space), which assumes a steady
speaking rate. With `untimed="whole"` the whole transcript is paired with a random window instead, and neighbour
candidates are left empty.

Recordings shorter than the window follow the feature extractor's `pad_mode`: `"zeros"` pads with silence marked 0 in
`audio_attention_mask`; `"loop"` tiles the recording to fill the window (all marked real) and pairs it with the whole
transcript.

For training, `LongFormRecordings` decodes and checks a split once, `LongFormPairDataset` draws pairs keyed by
`(epoch, draw)` and `LongFormEpochSampler` orders the keys; `collate_long_form_pairs` makes model inputs
(`examples/run_pretraining.py` uses all four).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .speech_data import SkipCounter, decode_audio, decode_example, example_name, read_audio_span
from .windowing_vatt import WindowLayout

if TYPE_CHECKING:
    from .audio_augmentation import WaveformAugmentation

DEFAULT_WINDOW_SAMPLES = 1200 * 128
DEFAULT_SAMPLING_RATE = 48_000
PAD_MODES = ("zeros", "loop")
UNTIMED_MODES = ("proportional", "whole")


@dataclass
class LongFormPair:
    """One training pair: an audio window, its mask, and K text candidates (index 0 = the window's own words,
    then the neighbouring windows' words in the order +1, -1, +2, -2, ...; an empty string means no candidate)."""

    input_values: np.ndarray
    audio_attention_mask: np.ndarray
    texts: list[str]
    start: float
    end: float


def estimate_word_timings(words: Sequence[str], duration: float) -> tuple[np.ndarray, np.ndarray]:
    """Spreads `words` over `duration` seconds in proportion to their character counts (steady speaking rate)."""
    weights = np.array([len(word) + 1 for word in words], dtype=np.float64)
    edges = np.concatenate([[0.0], np.cumsum(weights)]) * (duration / max(weights.sum(), 1.0))
    return edges[:-1], edges[1:]


def words_in_span(
    word_starts: Sequence[float], word_ends: Sequence[float], span_start: float, span_end: float
) -> np.ndarray:
    """Indices of the words whose midpoint lies in `[span_start, span_end)`."""
    midpoints = (np.asarray(word_starts, dtype=np.float64) + np.asarray(word_ends, dtype=np.float64)) / 2
    return np.flatnonzero((midpoints >= span_start) & (midpoints < span_end))


def text_for_span(
    words: Sequence[str], word_starts: Sequence[float], word_ends: Sequence[float], span_start: float, span_end: float
) -> str:
    """The words spoken in `[span_start, span_end)` seconds, joined by spaces (e.g. to show a found moment)."""
    return " ".join(words[index] for index in words_in_span(word_starts, word_ends, span_start, span_end))


class LongFormPairSampler:
    """Draws `(audio window, words inside it, neighbouring segments)` pairs from decoded long recordings.

    Args:
        window_samples: window length in samples (default 1,200 patches of 128 samples = 3.2 s at 48 kHz).
        sampling_rate: rate of the decoded audio and of `window_samples`.
        num_neighbor_segments: extra positive text candidates for MIL-NCE, taken from the adjacent windows after and
            before the drawn one (alternating, nearest first). Candidates beyond the recording are empty strings.
        pad_mode: `"zeros"` or `"loop"` for recordings shorter than the window (see the module docstring).
        untimed: `"proportional"` or `"whole"` for recordings without word timings (see the module docstring).
    """

    def __init__(
        self,
        window_samples: int = DEFAULT_WINDOW_SAMPLES,
        sampling_rate: int = DEFAULT_SAMPLING_RATE,
        num_neighbor_segments: int = 0,
        pad_mode: str = "zeros",
        untimed: str = "proportional",
    ):
        if window_samples <= 0 or sampling_rate <= 0 or num_neighbor_segments < 0:
            raise ValueError(
                "window_samples and sampling_rate must be positive and num_neighbor_segments non-negative, got "
                f"{window_samples}, {sampling_rate}, {num_neighbor_segments}."
            )
        if pad_mode not in PAD_MODES:
            raise ValueError(f"`pad_mode` must be one of {PAD_MODES}, got {pad_mode!r}.")
        if untimed not in UNTIMED_MODES:
            raise ValueError(f"`untimed` must be one of {UNTIMED_MODES}, got {untimed!r}.")
        self.window_samples = window_samples
        self.sampling_rate = sampling_rate
        self.num_neighbor_segments = num_neighbor_segments
        self.pad_mode = pad_mode
        self.untimed = untimed

    @property
    def num_candidates(self) -> int:
        return 1 + self.num_neighbor_segments

    @property
    def window_seconds(self) -> float:
        return self.window_samples / self.sampling_rate

    def with_window(self, window_samples: int) -> LongFormPairSampler:
        """The same sampler with another window length (e.g. the span a speed-perturbed window covers)."""
        return LongFormPairSampler(
            window_samples, self.sampling_rate, self.num_neighbor_segments, self.pad_mode, self.untimed
        )

    def _pairs_whole_transcript(self, word_starts, word_ends) -> bool:
        return self.untimed == "whole" and (word_starts is None or word_ends is None)

    def _timings(self, text, words, word_starts, word_ends, duration):
        if words is None:
            if text is None:
                raise ValueError("Give the transcript as `text` or `words`.")
            words = text.split()
        if word_starts is None or word_ends is None:
            word_starts, word_ends = estimate_word_timings(words, duration)
        if not len(words) == len(word_starts) == len(word_ends):
            raise ValueError(
                f"words, word_starts and word_ends differ in length: {len(words)}, {len(word_starts)}, "
                f"{len(word_ends)}."
            )
        return list(words), np.asarray(word_starts, dtype=np.float64), np.asarray(word_ends, dtype=np.float64)

    def draw_start(
        self,
        num_samples: int,
        rng: np.random.Generator,
        text: str | None = None,
        words: Sequence[str] | None = None,
        word_starts: Sequence[float] | None = None,
        word_ends: Sequence[float] | None = None,
    ) -> int:
        """Draws a window start uniformly over a recording of `num_samples` (0 when it is shorter than the window).
        If the window holds no word midpoint (e.g. a long pause), it is re-centred on a randomly chosen word."""
        max_start = max(num_samples - self.window_samples, 0)
        start = int(rng.integers(max_start + 1))
        if max_start == 0 or self._pairs_whole_transcript(word_starts, word_ends):
            return start
        words, starts, ends = self._timings(text, words, word_starts, word_ends, num_samples / self.sampling_rate)
        span_start = start / self.sampling_rate
        if not words or len(words_in_span(starts, ends, span_start, span_start + self.window_seconds)):
            return start
        index = int(rng.integers(len(words)))
        centre = (starts[index] + ends[index]) / 2 * self.sampling_rate
        return int(np.clip(round(centre - self.window_samples / 2), 0, max_start))

    def pair_for_window(
        self,
        piece: np.ndarray,
        start_sample: int,
        num_samples: int,
        text: str | None = None,
        words: Sequence[str] | None = None,
        word_starts: Sequence[float] | None = None,
        word_ends: Sequence[float] | None = None,
    ) -> LongFormPair:
        """Builds the pair from the audio `piece` that starts at `start_sample` of a recording of `num_samples`
        (the piece is shorter than the window only at the end of the recording; it is padded per `pad_mode`)."""
        piece = np.asarray(piece)
        if piece.ndim != 1 or len(piece) == 0:
            raise ValueError(f"Expected a non-empty mono recording [samples], got shape {piece.shape}.")
        duration = num_samples / self.sampling_rate
        words, starts, ends = self._timings(text, words, word_starts, word_ends, duration)
        mask = np.ones(self.window_samples, dtype=np.int32)
        piece = piece[: self.window_samples].astype(np.float32)
        looped = self.pad_mode == "loop" and len(piece) < self.window_samples
        if looped:
            piece = np.resize(piece, self.window_samples)
        else:
            mask[len(piece) :] = 0
            piece = np.pad(piece, (0, self.window_samples - len(piece)))
        span_start = start_sample / self.sampling_rate
        if (looped and num_samples < self.window_samples) or self._pairs_whole_transcript(word_starts, word_ends):
            texts = [" ".join(words)] + [""] * self.num_neighbor_segments
        else:
            offsets = [0] + [(k // 2 + 1) * (-1) ** k for k in range(self.num_neighbor_segments)]
            texts = []
            for offset in offsets:
                candidate_start = span_start + offset * self.window_seconds
                candidate_end = candidate_start + self.window_seconds
                in_recording = candidate_start < duration and candidate_end > 0
                texts.append(
                    text_for_span(words, starts, ends, candidate_start, candidate_end) if in_recording else ""
                )
        return LongFormPair(piece, mask, texts, span_start, min(span_start + self.window_seconds, duration))

    def pair_at(
        self,
        audio: np.ndarray,
        start_sample: int,
        text: str | None = None,
        words: Sequence[str] | None = None,
        word_starts: Sequence[float] | None = None,
        word_ends: Sequence[float] | None = None,
    ) -> LongFormPair:
        """The pair for the window of a decoded recording starting at `start_sample`."""
        audio = np.asarray(audio)
        if audio.ndim != 1:
            raise ValueError(f"Expected a non-empty mono recording [samples], got shape {audio.shape}.")
        piece = audio[start_sample : start_sample + self.window_samples]
        return self.pair_for_window(piece, start_sample, len(audio), text, words, word_starts, word_ends)

    def sample(
        self,
        audio: np.ndarray,
        rng: np.random.Generator,
        text: str | None = None,
        words: Sequence[str] | None = None,
        word_starts: Sequence[float] | None = None,
        word_ends: Sequence[float] | None = None,
    ) -> LongFormPair:
        """A random pair from a decoded recording (window drawn with `draw_start`)."""
        start = self.draw_start(len(audio), rng, text, words, word_starts, word_ends)
        return self.pair_at(audio, start, text, words, word_starts, word_ends)

    def windows(
        self,
        audio: np.ndarray,
        text: str | None = None,
        words: Sequence[str] | None = None,
        word_starts: Sequence[float] | None = None,
        word_ends: Sequence[float] | None = None,
    ) -> list[LongFormPair]:
        """All adjacent windows covering the recording in order (the last one padded), for segment-level evaluation."""
        starts = WindowLayout(len(audio), self.window_samples).spans()[:, 0].tolist()
        return [self.pair_at(audio, start, text, words, word_starts, word_ends) for start in starts]


def word_timing_problem(
    text: str,
    words: Sequence[str] | None,
    word_starts: Sequence[float] | None,
    word_ends: Sequence[float] | None,
    duration: float,
) -> str | None:
    """Why a recording's word timings cannot be paired with its `duration` seconds of audio (a skip reason), or None.

    Untimed recordings are fine (they get proportional timings). Timed ones need one start and end per word and every
    word midpoint inside the audio (with one sample of resampling slack), else windows would pair audio with no words,
    e.g. for timings written in milliseconds.
    """
    if word_starts is None or word_ends is None:
        return None
    words = text.split() if words is None else words
    if not len(words) == len(word_starts) == len(word_ends):
        return "word timings of a different length than the words"
    midpoints = (np.asarray(word_starts, dtype=np.float64) + np.asarray(word_ends, dtype=np.float64)) / 2
    if not len(midpoints) or not ((midpoints >= 0) & (midpoints <= duration)).all():
        return "word timings outside the audio"
    return None


@dataclass
class LongFormRecording:
    """One usable recording of a `LongFormRecordings` split: its length, transcript (with word timings when known) and
    decoded audio (None when beyond the cache budget)."""

    row: int
    num_samples: int
    text: str
    words: list[str] | None
    word_starts: list[float] | None
    word_ends: list[float] | None
    audio: np.ndarray | None

    @property
    def transcript(self) -> dict[str, Any]:
        """The transcript arguments of the `LongFormPairSampler` methods."""
        return {"text": self.text, "words": self.words, "word_starts": self.word_starts, "word_ends": self.word_ends}


class LongFormRecordings:
    """The usable recordings of a standard speech dataset (columns `audio` with `Audio(decode=False)`, `text`, optional
    `words`/`word_starts`/`word_ends`, as the `modeling_vatt.speech_data` loaders return), decoded once up front at
    `sampling_rate`.

    Rows with unreadable or empty audio, an empty transcript or word timings that do not fit the audio are skipped and
    counted in `skips` (with their row and file). Up to `cache_bytes` of decoded audio is kept in memory; the rest is
    read from the file again when needed.
    """

    def __init__(
        self,
        dataset,
        sampling_rate: int,
        skips: SkipCounter | None = None,
        cache_bytes: float = math.inf,
        name: str = "data",
        show_progress: bool = False,
    ):
        self.dataset = dataset
        self.sampling_rate = sampling_rate
        self.skips = skips if skips is not None else SkipCounter()
        self.recordings: list[LongFormRecording] = []
        cached = 0
        for row in tqdm(range(dataset.num_rows), desc=name, disable=not show_progress, unit="rec"):
            example = dataset[row]
            decoded = decode_example(example, self.skips, sampling_rate, index=row)
            if decoded is None:
                continue
            audio = decoded.pop("input_values")
            problem = word_timing_problem(**decoded, duration=len(audio) / sampling_rate)
            if problem is not None:
                self.skips.add(problem, example_name(example, row))
                continue
            keep = cached + audio.nbytes <= cache_bytes
            cached += audio.nbytes if keep else 0
            self.recordings.append(LongFormRecording(row, len(audio), **decoded, audio=audio if keep else None))
        if not self.recordings:
            raise ValueError(f"No usable recordings in the {name!r} data. {self.skips.report()}")

    def __len__(self) -> int:
        return len(self.recordings)

    def __getitem__(self, position: int) -> LongFormRecording:
        return self.recordings[position]

    def audio(self, recording: LongFormRecording) -> np.ndarray:
        """The whole decoded recording."""
        if recording.audio is not None:
            return recording.audio
        return decode_audio(self.dataset[recording.row]["audio"], self.sampling_rate)

    def audio_span(self, recording: LongFormRecording, start_sample: int, num_samples: int) -> np.ndarray:
        """Samples `[start_sample, start_sample + num_samples)` of a recording (only those are read when uncached)."""
        if recording.audio is not None:
            return recording.audio[start_sample : start_sample + num_samples]
        return read_audio_span(self.dataset[recording.row]["audio"], start_sample, num_samples, self.sampling_rate)

    def windows(self, sampler: LongFormPairSampler) -> list[LongFormPair]:
        """Adjacent windows covering every recording in order, keeping those in which words are spoken (evaluation)."""
        pairs = []
        for recording in self.recordings:
            windows = sampler.windows(self.audio(recording), **recording.transcript)
            pairs.extend(pair for pair in windows if pair.texts[0].strip())
        return pairs


class LongFormPairDataset(torch.utils.data.Dataset):
    """Random training pairs from `LongFormRecordings`, keyed by `(epoch, draw)` (see `LongFormEpochSampler`).

    Every recording gets one draw per window length of its audio (at least one), so an epoch sees each recording about
    once per window it holds. Key `(epoch, draw)` draws a window with a generator seeded by `(seed, epoch, draw)`:
    the pairs depend neither on worker or process layout nor on interruptions, so a resumed run sees the same pairs.
    An `augmentation` (see `audio_augmentation`) draws its perturbation from a second generator seeded by
    `(seed, epoch, draw, 1)`, so the windows drawn without it stay the same.
    """

    def __init__(
        self,
        recordings: LongFormRecordings,
        sampler: LongFormPairSampler,
        seed: int = 0,
        augmentation: WaveformAugmentation | None = None,
    ):
        if recordings.sampling_rate != sampler.sampling_rate:
            raise ValueError(
                f"The recordings are decoded at {recordings.sampling_rate} Hz but the sampler counts windows at "
                f"{sampler.sampling_rate} Hz."
            )
        self.recordings = recordings
        self.sampler = sampler
        self.seed = seed
        self.augmentation = augmentation if augmentation is not None and augmentation.enabled else None
        self.draws = [
            position
            for position, recording in enumerate(recordings)
            for _ in range(max(1, round(recording.num_samples / sampler.window_samples)))
        ]

    def __len__(self) -> int:
        return len(self.draws)

    def __getitem__(self, key: tuple[int, int]) -> LongFormPair:
        epoch, draw = key
        recording = self.recordings[self.draws[draw]]
        rng = np.random.default_rng([self.seed, epoch, draw])
        augmentation_rng = np.random.default_rng([self.seed, epoch, draw, 1])
        if self.augmentation is None or not self.augmentation.applies(augmentation_rng):
            return self._draw_pair(recording, self.sampler, rng)
        speed = self.augmentation.draw_speed(augmentation_rng)
        span_sampler = self.sampler.with_window(round(self.sampler.window_samples * speed))
        pair = self._draw_pair(recording, span_sampler, rng)
        return self.augmentation(pair, self.sampler.window_samples, augmentation_rng)

    def _draw_pair(
        self, recording: LongFormRecording, sampler: LongFormPairSampler, rng: np.random.Generator
    ) -> LongFormPair:
        start = sampler.draw_start(recording.num_samples, rng, **recording.transcript)
        piece = self.recordings.audio_span(recording, start, sampler.window_samples)
        return sampler.pair_for_window(piece, start, recording.num_samples, **recording.transcript)


class LongFormEpochSampler(torch.utils.data.Sampler):
    """Yields the `(epoch, draw)` keys of a `LongFormPairDataset` in an order that is a pure function of
    `(seed, epoch)`, so a resumed run sees exactly the batches of an uninterrupted one.

    Set the `epoch` attribute before each epoch. (It has no `set_epoch` method on purpose: 🤗 Accelerate would call
    that with its own count of iterations, which restarts when a resumed run skips batches.)
    """

    def __init__(self, dataset: LongFormPairDataset, seed: int = 0):
        self.num_draws = len(dataset)
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.num_draws

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        for draw in torch.randperm(self.num_draws, generator=generator).tolist():
            yield (self.epoch, draw)


def collate_long_form_pairs(
    pairs: Sequence[LongFormPair],
    tokenizer: Callable,
    max_text_length: int | None = None,
    feature_extractor: Callable | None = None,
) -> dict[str, torch.Tensor]:
    """Stacks pairs into model inputs.

    Returns `input_values [B, S]` (float32), `audio_attention_mask [B, S]`, `input_ids [B*K, L]` and
    `attention_mask [B*K, L]` (row `b*K + k` is candidate `k` of pair `b`), and `text_candidate_mask [B, K]` (1 where
    the candidate text is non-empty; empty candidates are still tokenized, e.g. to special tokens only, and must be
    excluded from the loss with this mask). `tokenizer(texts, padding=True, return_tensors="pt", ...)` must return
    `input_ids` and `attention_mask`, as transformers tokenizers do. With a `feature_extractor` (a
    `VattFeatureExtractor`), the real samples of each window go through it as audio does at inference (e.g. per-clip
    normalisation) and are padded to the window again; without one the windows are stacked as they are.
    """
    if not pairs:
        raise ValueError("Cannot collate an empty list of pairs.")
    num_candidates = {len(pair.texts) for pair in pairs}
    lengths = {len(pair.input_values) for pair in pairs}
    if len(num_candidates) != 1 or len(lengths) != 1:
        raise ValueError(
            f"All pairs need the same window length and candidate count, got {lengths} and {num_candidates}."
        )
    texts = [text for pair in pairs for text in pair.texts]
    truncation = {"truncation": True, "max_length": max_text_length} if max_text_length is not None else {}
    encoded = tokenizer(texts, padding=True, return_tensors="pt", **truncation)
    if feature_extractor is None:
        audio = {
            "input_values": torch.from_numpy(np.stack([pair.input_values for pair in pairs])),
            "audio_attention_mask": torch.from_numpy(np.stack([pair.audio_attention_mask for pair in pairs])),
        }
    else:
        audio = feature_extractor(
            [pair.input_values[: int(pair.audio_attention_mask.sum())] for pair in pairs],
            sampling_rate=feature_extractor.sampling_rate,
            padding="max_length",
            max_length=lengths.pop(),
            return_tensors="pt",
        )
    return {
        **audio,
        "input_ids": encoded["input_ids"],
        "attention_mask": encoded["attention_mask"],
        "text_candidate_mask": torch.tensor([[int(bool(text.strip())) for text in pair.texts] for pair in pairs]),
    }
