"""Every package the builders take audio or tools from, with its licence: written next to each output."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    package: str
    licence: str
    what: str


SOURCES = (
    Source("espeak-ng", "GPL-3+", "speech synthesiser (formant voices; front end for mbrola)"),
    Source("mbrola", "AGPL-3 (program)", "diphone synthesiser driven by espeak-ng"),
    Source("mbrola-<voice> (20 voices)", "non-free: free to use and redistribute with the synthesiser, no sale",
           "recorded diphone voice databases (Debian non-free)"),
    Source("libttspico-utils", "Apache-2.0 (code); lingware: non-free, redistributable", "SVOX pico voices en-US, en-GB"),
    Source("hedgewars-data", "GFDL-1.3 / GPL-2 (Debian copyright file)", "15 voice packs (actors), 26 soundtrack songs"),
    Source("tuxpaint-stamps-default", "GPL-2+", "spoken stamp descriptions (10 languages), stamp sound effects"),
    Source("ktuberling-data", "GPL-2+", "spoken words in ~20 languages"),
    Source("klettres-data", "GPL-2+", "spoken letters and syllables in ~20 languages"),
    Source("qabcs-data", "GPL-3+", "spoken words and letters; 241 named noises"),
    Source("scratch", "CC-BY-SA-3.0 (media), GPL-2 (program)", "sound library in labelled folders"),
    Source("sonic-pi-samples", "CC0-1.0 (mostly; see the package's copyright file)", "loops and one-shots"),
    Source("lmms-common", "GPL-2+", "instrument and effect samples, loops"),
    Source("mma", "GPL-2+", "Musical MIDI Accompaniment: 119 style libraries of grooves"),
    Source("fluid-soundfont-gm", "MIT", "FluidR3 General MIDI SoundFont"),
    Source("timgm6mb-soundfont", "GPL-2", "TimGM6mb General MIDI SoundFont"),
    Source("musescore-general-soundfont-small", "MIT", "MuseScore General SoundFont (lite, sf3)"),
    Source("opl3-soundfont", "MIT (see the package's copyright file)", "OPL-3 FM General MIDI SoundFont"),
    Source("tinysoundfont (PyPI)", "MIT", "in-process SoundFont renderer"),
)  # fmt: skip

RESERVED = (
    "gcin-voice",
    "asterisk-core-sounds-*",
    "hydrogen-drumkits",
    "minetest-data",
    "megaglest-data",
    "wesnoth-*",
)
"""Kept for a held-out evaluation: never used by any builder."""


def provenance_markdown(title: str, used: set[str]) -> str:
    """A SOURCES.md for an output folder: the packages in `used` (by package name prefix) and their licences."""
    lines = [
        f"# {title}: sources and licences",
        "",
        "Every clip here was generated or collected on this machine from Debian packages (and the PyPI",
        "renderer tinysoundfont) by `bestrq2 data`. Each manifest row's `source` names its package, and",
        "`origin(s)` name the exact file or rendering recipe. Redistribution follows each package's licence;",
        "the Debian package's `/usr/share/doc/<package>/copyright` file is authoritative.",
        "",
        "| package | licence | used for |",
        "|---|---|---|",
    ]
    for s in SOURCES:
        key = s.package.split(" ")[0].replace("<voice>", "")
        if any(u.startswith(key) or key.startswith(u) for u in used):
            lines.append(f"| {s.package} | {s.licence} | {s.what} |")
    lines += ["", f"Not used anywhere (held out): {', '.join(RESERVED)}.", ""]
    return "\n".join(lines)
