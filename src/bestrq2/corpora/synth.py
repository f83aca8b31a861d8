"""Music rendering: General MIDI SoundFonts played in-process with tinysoundfont, and MMA accompaniment
grooves turned into MIDI by MMA (run from its unpacked Debian package with this Python)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bestrq2.corpora import audio


@dataclass(frozen=True)
class SoundFont:
    name: str
    """Short id, also the split group ('sf:<name>')."""
    package: str
    path: str
    """Path of the .sf2/.sf3 inside the unpacked package."""


SOUNDFONTS = (
    SoundFont("fluid", "fluid-soundfont-gm", "usr/share/sounds/sf2/FluidR3_GM.sf2"),
    SoundFont("timgm6mb", "timgm6mb-soundfont", "usr/share/sounds/sf2/TimGM6mb.sf2"),
    SoundFont(
        "musescore", "musescore-general-soundfont-small", "usr/share/sounds/sf3/MuseScore_General_Lite.sf3"
    ),
    SoundFont("opl3", "opl3-soundfont", "usr/share/sounds/sf2/OPL-3_FM_128M.sf2"),
)
"""Four independently made GM sets. (csound-soundfont is left out: its samples match TimGM6mb's.)"""

_SYNTHS: dict[str, object] = {}  # per-process cache: loading a SoundFont costs up to 3 s


def _synth(sf_path: str):
    import tinysoundfont

    s = _SYNTHS.get(sf_path)
    if s is None:
        s = tinysoundfont.Synth(gain=-6.0, samplerate=audio.SAMPLE_RATE)
        s.sfload(sf_path, max_voices=256)
        _SYNTHS[sf_path] = s
    s.callback = None
    s.sounds_off()
    for ch in range(16):
        s.control_change(ch, 121, 0)  # reset controllers (volume, pan, pitch bend) left by a previous song
        s.program_change(ch, 0, is_drums=(ch == 9))
    return s


def _generate(s, seconds: float) -> np.ndarray:
    n = int(round(seconds * audio.SAMPLE_RATE))
    if n <= 0:
        return np.zeros(0, dtype=np.float32)
    buf = s.generate(n)
    return np.frombuffer(buf, dtype=np.float32).reshape(-1, 2).mean(axis=1)  # [T, 2] -> [T]


def render_note(
    sf_path: str, program: int, pitch: int, velocity: int, hold_s: float, tail_s: float
) -> np.ndarray:
    """One melodic GM `program` note: held `hold_s`, then `tail_s` of release -> [T] at 16 kHz."""
    s = _synth(sf_path)
    s.program_change(0, program)
    s.noteon(0, pitch, velocity)
    head = _generate(s, hold_s)
    s.noteoff(0, pitch)
    return np.concatenate([head, _generate(s, tail_s)])


def render_midi(sf_path: str, midi: bytes, max_s: float | None = None, tail_s: float = 1.0) -> np.ndarray:
    """A Standard MIDI File (bytes) -> [T] at 16 kHz, cut at `max_s` seconds if given."""
    import tinysoundfont
    from tinysoundfont.midi import load_memory

    s = _synth(sf_path)
    events = load_memory(midi, persistent=False)
    length = max((e.t for e in events), default=0.0) + tail_s
    if max_s is not None:
        length = min(length, max_s)
    seq = tinysoundfont.Sequencer(s)
    seq.add(events)
    x = _generate(s, length)
    s.callback = None
    return x


# ---------------------------------------------------------------- MMA (Musical MIDI Accompaniment)

MMA_HOME = "usr/share/mma"


def mma_library(mma_root: str | Path) -> Path:
    return Path(mma_root) / MMA_HOME / "lib" / "stdlib"


def mma_grooves(style_file: str | Path) -> list[str]:
    """Names of the grooves a style file defines (its `DefGroove` lines), intro/ending/fill grooves excluded."""
    names = []
    for line in Path(style_file).read_text(errors="replace").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].lower() == "defgroove":
            name = parts[1]
            low = name.lower()
            if not any(k in low for k in ("intro", "end", "fill")):
                names.append(name)
    return names


def mma_song(mma_root: str | Path, style: str, groove: str, chords: list[str], tempo: int) -> bytes:
    """Render a song (one chord per bar) in `groove` of stdlib `style` to MIDI bytes."""
    lines = [f"Use stdlib/{style}", f"Tempo {tempo}", f"Groove {groove}"]
    lines += [f"{i + 1} {c}" for i, c in enumerate(chords)]
    home = Path(mma_root) / MMA_HOME
    with tempfile.TemporaryDirectory(prefix="bestrq2-mma-") as tmp:
        src, mid = os.path.join(tmp, "song.mma"), os.path.join(tmp, "song.mid")
        Path(src).write_text("\n".join(lines) + "\n")
        res = subprocess.run(
            [sys.executable, str(Path(mma_root) / "usr/bin/mma"), src, "-f", mid],
            capture_output=True,
            text=True,
            env={**os.environ, "MMA_HOME": str(home)},
            cwd=tmp,
        )
        if res.returncode != 0 or not os.path.exists(mid):
            raise RuntimeError(f"mma failed for {style}/{groove}: {(res.stdout + res.stderr).strip()[-300:]}")
        return Path(mid).read_bytes()


PROGRESSIONS = (
    ["C", "Am", "F", "G"],
    ["C", "G", "Am", "F"],
    ["Dm7", "G7", "Cmaj7", "Cmaj7"],
    ["Am", "Dm", "E7", "Am"],
    ["F", "Bb", "C7", "F"],
    ["G", "Em", "C", "D7"],
    ["Eb", "Cm", "Ab", "Bb7"],
    ["A", "D", "E7", "A"],
    ["Em", "Am", "B7", "Em"],
    ["D", "Bm", "G", "A7"],
)
"""Four-bar chord cycles, repeated to the song length."""
