"""What the planners return: a render job (a plain dict, picklable) plus the metadata of its manifest row."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class SuiteItem:
    job: dict[str, Any]
    """How to make the audio (see render.py); several tasks may share one job / output file."""
    out: str
    """Output path relative to the suite folder."""
    task: str
    label: str
    group: str
    """Split unit, namespaced ('voice:mb-us1', 'sf:fluid', 'file:scratch:...'): never in two splits."""
    origin: str
    """The concrete source this clip was made from (a package file, or a rendering recipe id)."""
    source: str
    """Debian package (or generator) the audio comes from."""
    split: str = ""


@dataclass
class CorpusItem:
    job: dict[str, Any]
    out: str
    domain: str
    """'speech', 'music' or 'environment'."""
    source: str
    groups: list[str] = field(default_factory=list)
    """Every split unit this clip draws on (same namespace as SuiteItem.group)."""
    origins: list[str] = field(default_factory=list)
    """Every concrete source this clip was made from (same namespace as SuiteItem.origin)."""


def file_id(root: Path, f: Path, package: str) -> str:
    """'package:relative/path' -- how a file inside an unpacked package is named everywhere."""
    return f"{package}:{f.relative_to(root).as_posix()}"


def resolve(file_ref: str, roots: dict[str, Path]) -> Path:
    package, rel = file_ref.split(":", 1)
    return roots[package] / rel


def stable_seed(*parts: object) -> int:
    """A seed that depends only on `parts` (not on PYTHONHASHSEED)."""
    return int(hashlib.sha1(repr(parts).encode()).hexdigest()[:8], 16)
