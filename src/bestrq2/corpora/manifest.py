"""JSONL manifests: one object per clip, paths relative to the manifest's folder, written atomically."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.jsonl"

CORPUS_FIELDS: dict[str, type | tuple[type, ...]] = {
    "path": str,
    "duration": (int, float),
    "source": str,
    "domain": str,
    "groups": list,
    "origins": list,
}
"""Fields every corpus row has. `groups` / `origins` name what the clip was made from (see README)."""

SUITE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "path": str,
    "duration": (int, float),
    "source": str,
    "task": str,
    "label": str,
    "split": str,
    "group": str,
    "origin": str,
}
"""Fields every suite row has."""

SPLITS = ("train", "valid", "test")


def write_manifest(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Write rows as JSONL via tmp + rename, so a reader never sees a half-written manifest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def validate_rows(rows: list[dict[str, Any]], fields: dict[str, type | tuple[type, ...]]) -> None:
    """Raise ValueError naming the first row with a missing or mistyped field."""
    for i, row in enumerate(rows):
        for name, kind in fields.items():
            if name not in row:
                raise ValueError(f"row {i} ({row.get('path')}): missing field {name!r}")
            if not isinstance(row[name], kind) or isinstance(row[name], bool):
                raise ValueError(
                    f"row {i} ({row.get('path')}): field {name!r} has type {type(row[name]).__name__}"
                )
        if "split" in fields and row["split"] not in SPLITS:
            raise ValueError(f"row {i}: split {row['split']!r} not in {SPLITS}")
        if Path(row["path"]).is_absolute() or ".." in Path(row["path"]).parts:
            raise ValueError(f"row {i}: path {row['path']!r} must be relative to the manifest folder")
