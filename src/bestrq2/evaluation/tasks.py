"""Suite manifest -> tasks: which clips, which labels, which split, which domain.

A suite is a folder with ``manifest.jsonl``, one JSON object per (clip, task):

``path``      audio file, relative to the manifest's folder
``task``      task name
``split``     ``train``, ``valid`` or ``test``
``label``     class label (string), for clip tasks
``domain``    optional: ``speech``, ``music`` or ``environment``
``frame_labels``  optional, makes the task a frame task: one class label per frame, either a list
              of strings in the row or the path (relative to the manifest's folder) of a ``.json``
              list or a 1-D ``.npy`` array (values are turned into strings)
``frame_hop_ms``  optional: the time step of ``frame_labels`` in ms (default: the encoder's
              ``hop_size_in_ms``); labels are re-sampled to the encoder's frames by frame centre

Other fields (``duration``, ``source``, ``group``, ``origin`` ...) are kept but not needed.
The domain of a task comes from its rows' ``domain`` field, else from ``tasks.json`` beside the
manifest (``{task: {"domain": ...}}``, as the demo suite writes it), else from
:data:`KNOWN_DOMAINS`, else ``other``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

MANIFEST_NAME = "manifest.jsonl"
SPLITS = ("train", "valid", "test")
IGNORE = -100
"""Frame label index of frames without a label (padding); skipped by the loss and the accuracy."""

KNOWN_DOMAINS: dict[str, str] = {
    # the demo suite (bestrq2 data suite)
    "keywords": "speech", "speaker_id": "speech", "phrase_id": "speech",
    "instrument_family": "music", "pitch_class": "music", "music_style": "music",
    "sound_events": "environment",
    # X-ARES task names
    "asvspoof2015": "speech", "cremad": "speech", "fluentspeechcommands": "speech", "libricount": "speech",
    "librispeech": "speech", "librispeechmalefemale": "speech", "ravdess": "speech",
    "speechcommands": "speech", "vocalsound": "speech", "voxceleb1": "speech", "voxlingua33": "speech",
    "clotho": "environment", "desed": "environment", "esc50": "environment", "fsdkaggle2018": "environment",
    "fsd50k": "environment", "urbansound8k": "environment",
    "freemusicarchive": "music", "fma": "music", "gtzan": "music", "maestro": "music", "nsynth": "music",
}  # fmt: skip


@dataclass
class Clip:
    path: str
    """Audio path relative to the suite folder, as in the manifest."""
    label: str | None = None
    """Class label of a clip task."""
    frame_labels: list[str] | None = None
    """Per-frame class labels of a frame task."""
    frame_hop_ms: float | None = None
    """Time step of ``frame_labels`` (None: the encoder's hop)."""


@dataclass
class Task:
    name: str
    domain: str
    kind: Literal["clip", "frame"]
    classes: list[str]
    """Sorted class labels; a label's index is its class id."""
    splits: dict[str, list[Clip]] = field(default_factory=dict)

    def size(self, split: str) -> int:
        return len(self.splits.get(split, []))


@dataclass
class Suite:
    root: Path
    """The folder that clip paths are relative to."""
    tasks: list[Task]

    def clip_paths(self) -> list[str]:
        """Every distinct clip of every task (several tasks may share a clip)."""
        return sorted({c.path for t in self.tasks for clips in t.splits.values() for c in clips})


def manifest_path(suite: str | Path) -> Path:
    suite = Path(suite)
    path = suite if suite.suffix == ".jsonl" else suite / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no suite manifest at {path} (build one with `bestrq2 data suite`)")
    return path


def _frame_labels(value: Any, root: Path) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    if not isinstance(value, str):
        raise ValueError(f"frame_labels must be a list or a path, got {type(value).__name__}")
    path = root / value
    if path.suffix == ".npy":
        return [str(v) for v in np.load(path, allow_pickle=False).reshape(-1).tolist()]
    if path.suffix == ".json":
        return [str(v) for v in json.loads(path.read_text())]
    raise ValueError(f"frame_labels file {path} must be .json or .npy")


def _domains_file(root: Path) -> dict[str, str]:
    path = root / "tasks.json"
    if not path.is_file():
        return {}
    info = json.loads(path.read_text())
    return {name: v["domain"] for name, v in info.items() if isinstance(v, dict) and "domain" in v}


def load_suite(suite: str | Path, only: list[str] | None = None) -> Suite:
    """Read a suite folder (or its manifest file) into tasks; ``only`` keeps the named tasks."""
    path = manifest_path(suite)
    root = path.parent
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            row = json.loads(line)
            for name in ("path", "task", "split"):
                if name not in row:
                    raise ValueError(f"{path}:{i + 1}: missing field {name!r}")
            if row["split"] not in SPLITS:
                raise ValueError(f"{path}:{i + 1}: split must be one of {SPLITS}, got {row['split']!r}")
            if "label" not in row and "frame_labels" not in row:
                raise ValueError(
                    f"{path}:{i + 1}: a row needs 'label' (clip task) or 'frame_labels' (frame task)"
                )
            rows.append(row)
    if only:
        unknown = set(only) - {r["task"] for r in rows}
        if unknown:
            raise ValueError(f"no task {sorted(unknown)} in {path}")
        rows = [r for r in rows if r["task"] in set(only)]
    domains_file = _domains_file(root)
    by_task: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_task.setdefault(row["task"], []).append(row)
    tasks = []
    for name, task_rows in sorted(by_task.items()):
        kind: Literal["clip", "frame"] = "frame" if any("frame_labels" in r for r in task_rows) else "clip"
        splits: dict[str, list[Clip]] = {s: [] for s in SPLITS}
        labels: set[str] = set()
        for r in task_rows:
            if kind == "frame":
                frames = _frame_labels(r["frame_labels"], root)
                hop = r.get("frame_hop_ms")
                clip = Clip(r["path"], frame_labels=frames, frame_hop_ms=None if hop is None else float(hop))
                labels.update(frames)
            else:
                clip = Clip(r["path"], label=str(r["label"]))
                labels.add(clip.label)
            splits[r["split"]].append(clip)
        domain = next((r["domain"] for r in task_rows if r.get("domain")), None)
        domain = domain or domains_file.get(name) or KNOWN_DOMAINS.get(name) or "other"
        tasks.append(Task(name, domain, kind, sorted(labels), splits))
    return Suite(root, tasks)


def align_frame_labels(
    labels: list[int], label_hop_ms: float, frame_hop_ms: float, n_frames: int
) -> np.ndarray:
    """Per-label class ids at ``label_hop_ms`` -> one id per encoder frame ([n_frames] int64).

    Encoder frame i takes the label whose interval holds its centre, (i + 0.5) * frame_hop_ms;
    frames past the last label get :data:`IGNORE` (X-ARES pads or trims labels to the frames).
    """
    out = np.full(n_frames, IGNORE, dtype=np.int64)
    for i in range(n_frames):
        j = math.floor((i + 0.5) * frame_hop_ms / label_hop_ms)
        if j < len(labels):
            out[i] = labels[j]
    return out
