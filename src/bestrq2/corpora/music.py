"""Music: the suite's instrument-family, pitch-class and accompaniment-style tasks, and the corpus's music.

Suite
- instrument_family (10 GM families) and pitch_class (12) share one set of single-note renders; each
  SoundFont is one group, so the test notes come from a SoundFont the probe never heard.
- music_style (8 styles): MMA accompaniment grooves; group = MMA style file (all its groove variants).

Corpus
- Hedgewars' soundtrack (26 songs) cut into <= 45 s pieces;
- MMA songs in styles and with SoundFonts that no suite test split uses;
- Sonic Pi and LMMS loops and instrument samples strung into ~15 s clips.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

import soundfile as sf

from bestrq2.corpora import synth
from bestrq2.corpora.items import CorpusItem, SuiteItem, file_id, stable_seed
from bestrq2.corpora.speech import HEDGEWARS, HEDGEWARS_MUSIC

# family: (GM programs, lowest MIDI pitch, highest MIDI pitch)
FAMILIES: dict[str, tuple[tuple[int, ...], int, int]] = {
    "piano": (tuple(range(0, 8)), 45, 84),
    "chromatic_percussion": (tuple(range(8, 16)), 60, 96),
    "organ": (tuple(range(16, 24)), 45, 84),
    "guitar": (tuple(range(24, 32)), 40, 76),
    "bass": (tuple(range(32, 40)), 28, 55),
    "strings": ((40, 41, 42, 44, 45, 46), 48, 79),
    "ensemble": (tuple(range(48, 55)), 48, 79),
    "brass": (tuple(range(56, 64)), 46, 77),
    "reed": (tuple(range(64, 72)), 50, 81),
    "pipe": (tuple(range(72, 80)), 60, 91),
}
PITCH_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

SMALL_SOUNDFONTS = ("timgm6mb", "musescore", "opl3")
SOUNDFONT_SPLITS = {"sf:musescore": "test", "sf:timgm6mb": "valid"}
"""Pinned: test on the MuseScore set, validate on TimGM6mb, train on the rest (FluidR3 and OPL-3 FM)."""

# MMA stdlib style files per class (each file is one group, with all its groove variants).
STYLES: dict[str, tuple[str, ...]] = {
    "rock": ("50srock", "60srock", "8beat", "basicrock", "bubblerock", "folkrock", "rock-128", "softrock", "jazzrock"),
    "swing": ("swing", "fastswing", "easyswing", "bigband", "68swing", "jive", "countryswing", "westernswing", "dixie", "foxtrot"),
    "latin": ("bossanova", "samba", "rhumba", "jazzrhumba", "mambo", "salsa", "chacha", "merengue", "son", "beguine", "calypso", "bolero"),
    "waltz": ("waltz", "fastwaltz", "vienesewaltz", "frenchwaltz", "countrywaltz", "broadwaywaltz", "rockwaltz", "latinwaltz", "jazzwaltz"),
    "march": ("march", "68march", "bwmarch", "dixiemarch", "polka"),
    "blues": ("blues", "blues128", "blues68", "fastblues", "slowblues", "countryblues", "shuffleboggie", "boggiewoggie"),
    "ballad": ("ballad", "ballad128", "ballad68", "pianoballad", "popballad", "rb-ballad", "folkballad", "guitarballad", "stringballad", "rockballad"),
    "jazz": ("bebop", "jazzcombo", "jazzguitar", "mellowjazz", "modernjazz", "nitejazz", "slowjazz", "descendingjazz"),
}  # fmt: skip
TEMPO = {"rock": (100, 140), "swing": (120, 180), "latin": (100, 140), "waltz": (90, 160),
         "march": (100, 130), "blues": (70, 120), "ballad": (60, 90), "jazz": (100, 180)}  # fmt: skip
STYLE_CLIP_S = 10.0


def soundfonts(small: bool) -> list[synth.SoundFont]:
    return [s for s in synth.SOUNDFONTS if not small or s.name in SMALL_SOUNDFONTS]


def sf_path(sfont: synth.SoundFont, roots: dict[str, Path]) -> str:
    return str(roots[sfont.package] / sfont.path)


# ------------------------------------------------------------------------------------------ suite


def note_items(small: bool) -> list[SuiteItem]:
    """One render per (SoundFont, program, pitch), listed under both instrument_family and pitch_class."""
    items = []
    n_programs, n_pitches = (3, 3) if small else (8, 5)
    for sfont in soundfonts(small):
        for family, (programs, lo, hi) in FAMILIES.items():
            for program in programs[:n_programs]:
                rng = random.Random(stable_seed("note", sfont.name, program))
                for pitch in rng.sample(range(lo, hi + 1), n_pitches):
                    job = {
                        "kind": "note",
                        "soundfont": sfont.name,
                        "program": program,
                        "pitch": pitch,
                        "velocity": rng.randint(70, 120),
                        "hold_s": rng.uniform(0.9, 1.5),
                        "tail_s": 0.5,
                    }
                    out = f"audio/notes/{sfont.name}_p{program:03d}_n{pitch:03d}.flac"
                    common = dict(job=job, out=out, group=f"sf:{sfont.name}", source=sfont.package)
                    origin = f"note:{sfont.name}:{program}:{pitch}"
                    items.append(SuiteItem(task="instrument_family", label=family, origin=origin, **common))
                    items.append(
                        SuiteItem(task="pitch_class", label=PITCH_NAMES[pitch % 12], origin=origin, **common)
                    )
    return items


def style_items(mma_root: Path, small: bool) -> list[SuiteItem]:
    lib = synth.mma_library(mma_root)
    fonts = soundfonts(small)
    items = []
    for label, files in STYLES.items():
        for style in files[:3] if small else files:
            grooves = synth.mma_grooves(lib / f"{style}.mma")[: 1 if small else 3]
            for groove in grooves:
                for k in range(1 if small else 2):
                    rng = random.Random(stable_seed("style", style, groove, k))
                    sfont = fonts[rng.randrange(len(fonts))]
                    job = {
                        "kind": "mma",
                        "soundfont": sfont.name,
                        "style": style,
                        "groove": groove,
                        "chords": synth.PROGRESSIONS[rng.randrange(len(synth.PROGRESSIONS))] * 2,
                        "tempo": rng.randint(*TEMPO[label]),
                        "max_s": STYLE_CLIP_S,
                    }
                    items.append(
                        SuiteItem(
                            job=job,
                            out=f"audio/styles/{groove}_{k}.flac",
                            task="music_style",
                            label=label,
                            group=f"mma:{style}",
                            origin=f"mma:{style}:{groove}:{k}",
                            source="mma",
                        )
                    )
    return items


# ----------------------------------------------------------------------------------------- corpus


def hedgewars_music_items(root: Path, piece_s: float, max_files: int | None) -> list[CorpusItem]:
    files = sorted((root / HEDGEWARS_MUSIC).glob("*.ogg"))[:max_files]
    items = []
    for f in files:
        total = sf.info(str(f)).duration
        ref = file_id(root, f, HEDGEWARS)
        start, i = 0.0, 0
        while total - start >= 5.0:
            length = min(piece_s, total - start)
            items.append(
                CorpusItem(
                    job={"kind": "file", "src": ref, "offset_s": start, "max_s": length, "trim": False},
                    out=f"audio/music/hedgewars/{f.stem}_{i:02d}.flac",
                    domain="music",
                    source=HEDGEWARS,
                    groups=[f"file:{ref}"],
                    origins=[ref],
                )
            )
            start, i = start + length, i + 1
    return items


def mma_corpus_items(mma_root: Path, exclude: set[str], n_songs: int, small: bool) -> list[CorpusItem]:
    """`n_songs` 16-24-bar songs over style files and SoundFonts outside `exclude` (suite test groups)."""
    lib = synth.mma_library(mma_root)
    styles = [p.stem for p in sorted(lib.glob("*.mma")) if f"mma:{p.stem}" not in exclude]
    styles = [s for s in styles if not s.startswith("metronome") and s != "none"]
    fonts = [s for s in soundfonts(small) if f"sf:{s.name}" not in exclude]
    items = []
    for i in range(n_songs):
        rng = random.Random(stable_seed("mma-corpus", i))
        style = styles[rng.randrange(len(styles))]
        grooves = synth.mma_grooves(lib / f"{style}.mma")
        if not grooves:
            continue
        groove = grooves[rng.randrange(len(grooves))]
        sfont = fonts[i % len(fonts)]
        chords = [
            c
            for _ in range(rng.randint(4, 6))
            for c in synth.PROGRESSIONS[rng.randrange(len(synth.PROGRESSIONS))]
        ]
        items.append(
            CorpusItem(
                job={
                    "kind": "mma",
                    "soundfont": sfont.name,
                    "style": style,
                    "groove": groove,
                    "chords": chords,
                    "tempo": rng.randint(70, 160),
                    "max_s": 60.0,
                },  # fmt: skip
                out=f"audio/music/mma/{i:04d}_{groove}.flac",
                domain="music",
                source=f"mma+{sfont.package}",
                groups=[f"mma:{style}", f"sf:{sfont.name}"],
                origins=[f"mma:{style}:{groove}:corpus{i}"],
            )
        )
    return items


SAMPLE_PACKS = {
    "sonic-pi-samples": "usr/share/sonic-pi/samples/*.flac",
    "lmms-common": "usr/share/lmms/samples/*/*.*",
}
ENV_PREFIXES = ("ambi_", "misc_", "vinyl_", "perc_", "glitch_", "mehackit_")
ENV_FOLDERS = ("effects",)


def sample_pack_items(roots: dict[str, Path], chunk_s: float) -> list[CorpusItem]:
    """Loops and one-shots strung into ~chunk_s clips, per pack and kind (music vs effect-like samples)."""
    items = []
    for package, pattern in SAMPLE_PACKS.items():
        if package not in roots:
            continue
        root = roots[package]
        by_kind: dict[str, list[Path]] = defaultdict(list)
        for f in sorted(root.glob(pattern)):
            if f.suffix.lower() not in (".ogg", ".wav", ".flac"):
                continue
            env = f.name.startswith(ENV_PREFIXES) or f.parent.name in ENV_FOLDERS
            by_kind["environment" if env else "music"].append(f)
        for domain, files in by_kind.items():
            rng = random.Random(stable_seed("samples", package, domain))
            rng.shuffle(files)
            n = max(3, int(chunk_s / 2.5))
            for i in range(0, len(files), n):
                part = [file_id(root, f, package) for f in files[i : i + n]]
                items.append(
                    CorpusItem(
                        job={"kind": "concat", "srcs": part, "gap_s": 0.25, "max_each_s": 8.0},
                        out=f"audio/{domain}/{package}/{i // n:03d}.flac",
                        domain=domain,
                        source=package,
                        groups=[f"file:{p}" for p in part],
                        origins=part,
                    )
                )
    return items
