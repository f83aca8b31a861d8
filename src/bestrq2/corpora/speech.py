"""Speech: the suite's keyword, speaker and phrase tasks, and the corpus's speech (real and synthetic).

Suite
- keywords:  20 command words read by ~30 synthetic voices (mbrola, espeak-ng, pico); group = voice.
- speaker_id: 15 Hedgewars voice packs (real actors); group = phrase, so test phrases are unseen.
- phrase_id: the phrases the 10 English Hedgewars packs share; group = pack, so test speakers are unseen.

Corpus
- real: Tux Paint's spoken stamp descriptions (10 languages) and the spoken words / letters of KTuberling,
  KLettres and qaBCs, concatenated per speaker folder into 10-40 s clips;
- synthetic: generated English sentences read by the voices that no suite test split uses.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from pathlib import Path

from bestrq2.corpora import tts
from bestrq2.corpora.items import CorpusItem, SuiteItem, file_id, stable_seed

KEYWORDS = (
    "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
)  # fmt: skip

HEDGEWARS = "hedgewars-data"
HEDGEWARS_VOICES = "usr/share/games/hedgewars/Data/Sounds/voices"
HEDGEWARS_MUSIC = "usr/share/games/hedgewars/Data/Music"
ENGLISH_PACKS = (
    "British",
    "Classic",
    "Default",
    "HillBilly",
    "Mobster",
    "Pirate",
    "Robot",
    "Russian",
    "Singer",
    "Surfer",
)
MIN_PACKS_PER_PHRASE = 7


# ------------------------------------------------------------------------------------------ suite


def keyword_items(small: bool) -> list[SuiteItem]:
    variants = 1 if small else 3
    items = []
    for voice in tts.voices(small):
        for word in KEYWORDS:
            for k in range(variants):
                rng = random.Random(stable_seed("kw", voice.name, word, k))
                job = {
                    "kind": "tts",
                    "voice": voice.name,
                    "text": word,
                    "speed": rng.randint(130, 210),
                    "pitch": rng.randint(25, 75),
                    "stretch": rng.uniform(0.9, 1.12),
                    "pad_to": 1.0,
                    "noise_db": rng.uniform(-65, -40),
                    "seed": rng.randrange(2**31),
                }
                out = f"audio/keywords/{_slug(voice.name)}_{word}_{k}.flac"
                items.append(
                    SuiteItem(
                        job=job,
                        out=out,
                        task="keywords",
                        label=word,
                        group=f"voice:{voice.name}",
                        origin=f"tts:{voice.name}:{word}",
                        source=voice.package,
                    )
                )
    return items


def hedgewars_clips(root: Path) -> list[tuple[str, str, Path]]:
    """(pack, phrase, file) for every voice clip; numbered variants (Ow1..Ow4) share one phrase."""
    out = []
    for pack_dir in sorted((root / HEDGEWARS_VOICES).iterdir()):
        if not pack_dir.is_dir():
            continue
        for f in sorted(pack_dir.glob("*.ogg")):
            phrase = re.sub(r"\d+$", "", f.stem).lower().replace("-", "")
            out.append((pack_dir.name, phrase, f))
    return out


def speaker_items(root: Path, small: bool) -> list[SuiteItem]:
    items = []
    for pack, phrase, f in hedgewars_clips(root):
        if small and pack not in ENGLISH_PACKS[:6]:
            continue
        rel = file_id(root, f, HEDGEWARS)
        items.append(
            SuiteItem(
                job={"kind": "file", "src": rel, "max_s": 6.0},
                out=f"audio/hedgewars/{pack}_{f.stem}.flac",
                task="speaker_id",
                label=pack,
                group=f"phrase:{phrase}",
                origin=rel,
                source=HEDGEWARS,
            )
        )
    return items


def phrase_items(root: Path, small: bool) -> list[SuiteItem]:
    clips = [c for c in hedgewars_clips(root) if c[0] in ENGLISH_PACKS]
    packs_per_phrase = defaultdict(set)
    for pack, phrase, _ in clips:
        packs_per_phrase[phrase].add(pack)
    keep = {p for p, packs in packs_per_phrase.items() if len(packs) >= MIN_PACKS_PER_PHRASE}
    items = []
    for pack, phrase, f in clips:
        if phrase not in keep or (small and pack not in ENGLISH_PACKS[:6]):
            continue
        rel = file_id(root, f, HEDGEWARS)
        items.append(
            SuiteItem(
                job={"kind": "file", "src": rel, "max_s": 6.0},
                out=f"audio/hedgewars/{pack}_{f.stem}.flac",
                task="phrase_id",
                label=phrase,
                group=f"pack:{pack}",
                origin=rel,
                source=HEDGEWARS,
            )
        )
    return items


# ----------------------------------------------------------------------------------------- corpus

REAL_SPEECH = {
    # package: (glob under the root, what one folder is)
    "tuxpaint-stamps-default": "usr/share/tuxpaint/stamps/**/*_desc_*.ogg",
    "ktuberling-data": "usr/share/ktuberling/sounds/*/*.*",
    "klettres-data": "usr/share/klettres/*/*/*.*",
    "qabcs-data": "usr/share/qabcs/abcs/*/sounds/*/*.ogg",
}


def _speaker_key(package: str, f: Path) -> str:
    """Files likely read by one speaker: Tux Paint by language suffix, the others by folder."""
    if package == "tuxpaint-stamps-default":
        return f.stem.rsplit("_desc_", 1)[-1]
    return f.parent.name if package == "ktuberling-data" else f"{f.parent.parent.name}/{f.parent.name}"


def real_speech_items(roots: dict[str, Path], chunk_s: float, max_files: int | None) -> list[CorpusItem]:
    """Concatenate each speaker folder's clips into ~chunk_s-second corpus clips (durations estimated)."""
    items = []
    for package, pattern in REAL_SPEECH.items():
        if package not in roots:
            continue
        root = roots[package]
        by_key: dict[str, list[Path]] = defaultdict(list)
        for f in sorted(root.glob(pattern)):
            if f.suffix.lower() in (".ogg", ".wav", ".flac", ".mp3") and "noises" not in f.parts:
                by_key[_speaker_key(package, f)].append(f)
        for key, files in sorted(by_key.items()):
            files = files[:max_files] if max_files else files
            rng = random.Random(stable_seed("speech-chunk", package, key))
            rng.shuffle(files)
            # Short words (~1 s) and descriptions (~1.5 s): a chunk of n files lasts about n * 1.5 s.
            n = max(4, int(chunk_s / 1.5))
            for i in range(0, len(files), n):
                part = [file_id(root, f, package) for f in files[i : i + n]]
                items.append(
                    CorpusItem(
                        job={"kind": "concat", "srcs": part, "gap_s": 0.35},
                        out=f"audio/speech/{package}/{_slug(key)}_{i // n:04d}.flac",
                        domain="speech",
                        source=package,
                        groups=[f"speaker:{package}:{key}"],
                        origins=part,
                    )
                )
    return items


_SUBJECTS = (
    "the old farmer", "my sister", "a tired pilot", "the small dog", "our teacher", "the baker",
    "a young painter", "the captain", "his neighbour", "the quiet student", "a clever fox", "the musician",
)  # fmt: skip
_VERBS = (
    "carried", "painted", "found", "opened", "watched", "repaired", "forgot", "described", "counted",
    "followed", "borrowed", "cleaned", "visited", "remembered", "ordered", "discovered",
)  # fmt: skip
_OBJECTS = (
    "a heavy wooden box", "the yellow bicycle", "an empty bottle", "the long letter", "seven green apples",
    "the broken window", "a map of the island", "the garden gate", "twelve paper boats", "the silver key",
    "a basket of bread", "the blue umbrella", "an old photograph", "the kitchen table",
)  # fmt: skip
_TAILS = (
    "before the rain started", "after lunch", "near the river", "in the morning", "without a word",
    "during the storm", "at the station", "for the third time", "under the bridge", "late last night",
    "with great care", "on a sunny afternoon",
)  # fmt: skip


def sentence(rng: random.Random) -> str:
    s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}"
    if rng.random() < 0.3:
        s += f", and then {rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}"
    return s[0].upper() + s[1:] + rng.choice((".", ".", "?", "!"))


def tts_items(exclude_voices: set[str], n_clips: int, small: bool) -> list[CorpusItem]:
    """`n_clips` clips of 3-8 generated sentences each, spread over the allowed voices."""
    allowed = [v for v in tts.voices(small) if f"voice:{v.name}" not in exclude_voices]
    items = []
    for i in range(n_clips):
        voice = allowed[i % len(allowed)]
        rng = random.Random(stable_seed("tts-corpus", i))
        texts = [sentence(rng) for _ in range(rng.randint(3, 8))]
        job = {
            "kind": "tts_concat",
            "voice": voice.name,
            "texts": texts,
            "speed": rng.randint(140, 190),
            "pitch": rng.randint(30, 70),
            "stretch": rng.uniform(0.92, 1.1),
        }
        items.append(
            CorpusItem(
                job=job,
                out=f"audio/speech/tts/{_slug(voice.name)}_{i:04d}.flac",
                domain="speech",
                source=voice.package,
                groups=[f"voice:{voice.name}"],
                origins=[f"tts:{voice.name}:sentences:{i}"],
            )
        )
    return items


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", s).strip("-")
