"""Speech synthesis with the voices Debian ships: espeak-ng (formant), espeak-ng + mbrola (recorded diphones)
and SVOX pico. Every voice here reads English text."""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass

import numpy as np

from bestrq2.corpora import audio


@dataclass(frozen=True)
class Voice:
    name: str
    """Unique voice id, also the split group (e.g. 'mb-us1', 'espeak:en-us+m1', 'pico:en-GB')."""
    engine: str
    """'espeak' (formant, espeak-ng's own voices), 'mbrola' (espeak-ng driving an mbrola voice) or 'pico'."""
    arg: str
    """What the engine is given: espeak-ng -v value, or pico2wave -l value."""
    package: str
    """Debian package providing the voice."""


# Keep in sync with scripts/setup_system.sh (VOICES_FULL / VOICES_SMALL).
MBROLA_VOICES = (
    "us1", "us2", "us3", "en1", "af1", "de1", "de2", "de3", "de4", "de5", "de6",
    "fr1", "fr4", "gr2", "hu1", "nl2", "pl1", "ro1", "sw1", "sw2",
)  # fmt: skip
SMALL_MBROLA_VOICES = ("us1", "us2", "en1", "de1")
MBROLA_DIR = "/usr/share/mbrola"
"""Where Debian's mbrola-<code> packages install their voice (one folder per code)."""
ESPEAK_VOICES = (
    "en-us+m1", "en-us+f2", "en+m3", "en+f4", "en-gb-scotland+m5",
    "en-gb-x-rp+f1", "en-029+m7", "en-us+klatt4",
)  # fmt: skip
PICO_VOICES = ("en-US", "en-GB")


def mbrola_voice(code: str) -> Voice:
    arg = f"mb-{code}" if code in ("us1", "us2", "us3", "en1") else f"mb-{code}-en"
    return Voice(name=arg, engine="mbrola", arg=arg, package=f"mbrola-{code}")


def voices(small: bool = False) -> list[Voice]:
    """All English voices (small: a few of each engine)."""
    mb = SMALL_MBROLA_VOICES if small else MBROLA_VOICES
    es = ESPEAK_VOICES[:4] if small else ESPEAK_VOICES
    out = [mbrola_voice(c) for c in mb]
    out += [Voice(name=f"espeak:{v}", engine="espeak", arg=v, package="espeak-ng") for v in es]
    out += [Voice(name=f"pico:{v}", engine="pico", arg=v, package="libttspico-utils") for v in PICO_VOICES]
    return out


def voice_by_name(name: str) -> Voice:
    for v in voices(small=False):
        if v.name == name:
            return v
    raise KeyError(f"unknown voice {name!r}")


def speak(voice: Voice, text: str, speed: int = 160, pitch: int = 50, stretch: float = 1.0) -> np.ndarray:
    """Synthesize `text` -> [T] float32 at 16 kHz, trimmed of leading/trailing silence.

    `speed` (words per minute) and `pitch` (0-99) drive espeak-ng; pico has neither, so `stretch` (> 1
    slower and lower) resamples its output instead.
    """
    with tempfile.TemporaryDirectory(prefix="bestrq2-tts-") as tmp:
        wav = os.path.join(tmp, "out.wav")
        if voice.engine in ("espeak", "mbrola"):
            cmd = ["espeak-ng", "-v", voice.arg, "-s", str(speed), "-p", str(pitch), "-w", wav, text]
        elif voice.engine == "pico":
            cmd = ["pico2wave", "-l", voice.arg, "-w", wav, text]
        else:
            raise ValueError(f"unknown engine {voice.engine!r}")
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0 or not os.path.exists(wav):
            raise RuntimeError(f"{cmd[0]} failed for voice {voice.name}: {res.stderr.strip()[-300:]}")
        x = audio.load(wav)
    if voice.engine == "pico" and abs(stretch - 1.0) > 1e-3:
        x = audio.to_mono_16k_from(x, int(round(audio.SAMPLE_RATE * stretch)))
    return audio.trim(x)
