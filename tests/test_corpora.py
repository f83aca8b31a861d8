"""Tests of the real-audio builders (bestrq2.corpora).

Unit tests (splitting, manifests, audio helpers) need nothing installed. Tests marked `integration` build
the small corpus and suite (`bestrq2 data all --small`) from Debian packages, which needs apt-get, root (or
an earlier `scripts/setup_system.sh`) and the Debian mirrors; the package cache is kept in data/cache (or
$BESTRQ2_DATA_CACHE) so that later runs only render.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bestrq2.corpora import apt, audio, environment, music, speech, splits, suite, tts
from bestrq2.corpora.items import SuiteItem
from bestrq2.corpora.manifest import CORPUS_FIELDS, SUITE_FIELDS, read_manifest, validate_rows, write_manifest
from bestrq2.corpora.sources import RESERVED

REPO = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------- unit tests


def test_assign_splits_covers_every_group_and_is_deterministic():
    sizes = {f"g{i}": 10 + i for i in range(20)}
    a = splits.assign_splits(sizes, seed=1)
    assert a == splits.assign_splits(sizes, seed=1)
    assert set(a) == set(sizes)
    assert set(a.values()) == {"train", "valid", "test"}
    share = {s: sum(sizes[g] for g in sizes if a[g] == s) / sum(sizes.values()) for s in splits.SPLIT_NAMES}
    assert 0.6 < share["train"] < 0.8 and 0.08 < share["test"] < 0.25


def test_assign_splits_small_group_counts_and_fixed():
    a = splits.assign_splits({"a": 5, "b": 5, "c": 5})
    assert sorted(a.values()) == ["test", "train", "valid"]
    fixed = {"sf:x": "test", "sf:y": "valid"}
    b = splits.assign_splits({"sf:x": 10, "sf:y": 10, "sf:z": 10, "sf:w": 10}, fixed=fixed)
    assert b["sf:x"] == "test" and b["sf:y"] == "valid" and b["sf:z"] == b["sf:w"] == "train"
    with pytest.raises(ValueError):
        splits.assign_splits({"a": 1}, fractions=(0.5, 0.5, 0.5))


def _item(label: str, group: str) -> SuiteItem:
    return SuiteItem(
        job={}, out=f"{group}.flac", task="t", label=label, group=group, origin=group, source="x"
    )


def test_split_task_stratifies_label_pure_groups():
    items = [_item(lab, f"{lab}-{i}") for lab in ("a", "b", "c") for i in range(4)]
    assignment = suite.split_task(items, seed=3)
    for lab in ("a", "b", "c"):
        assert {assignment[f"{lab}-{i}"] for i in range(4)} == {"train", "valid", "test"}
    for it in items:
        it.split = assignment[it.group]
    assert splits.overlapping_groups([{"group": i.group, "split": i.split} for i in items]) == {}


def test_split_task_mixed_groups_split_together():
    items = [_item(word, f"voice{v}") for v in range(10) for word in ("yes", "no")]
    assignment = suite.split_task(items, seed=0)
    assert set(assignment) == {f"voice{v}" for v in range(10)}
    assert set(assignment.values()) == {"train", "valid", "test"}


def test_manifest_roundtrip_and_validation(tmp_path):
    rows = [
        {
            "path": "a/b.flac",
            "duration": 1.5,
            "source": "x",
            "domain": "speech",
            "groups": ["g"],
            "origins": ["o"],
        }
    ]
    p = write_manifest(tmp_path / "m" / "manifest.jsonl", rows)
    assert read_manifest(p) == rows
    assert [f.name for f in p.parent.iterdir()] == ["manifest.jsonl"]  # no temporary file left behind
    validate_rows(rows, CORPUS_FIELDS)
    with pytest.raises(ValueError, match="missing field"):
        validate_rows([{"path": "a.flac"}], CORPUS_FIELDS)
    with pytest.raises(ValueError, match="relative"):
        validate_rows([{**rows[0], "path": "/abs.flac"}], CORPUS_FIELDS)
    bad_split = {"path": "a.flac", "duration": 1.0, "source": "s", "task": "t", "label": "l", "split": "dev",
                 "group": "g", "origin": "o"}  # fmt: skip
    with pytest.raises(ValueError, match="split"):
        validate_rows([bad_split], SUITE_FIELDS)


def test_audio_write_resample_trim(tmp_path):
    t = np.arange(44100, dtype=np.float32) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1)  # [T, 2]
    x = audio.to_mono_16k(stereo, 44100)
    assert abs(len(x) - 16000) <= 1
    padded = np.concatenate([np.zeros(8000, np.float32), x, np.zeros(8000, np.float32)])
    assert len(audio.trim(padded)) < len(padded) - 12000
    d = audio.write(tmp_path / "a.flac", x)
    info = sf.info(str(tmp_path / "a.flac"))
    assert info.samplerate == 16000 and info.channels == 1 and abs(info.duration - d) < 1e-6
    assert audio.is_usable(x) and not audio.is_usable(np.zeros(16000, np.float32))


def test_no_reserved_package_is_used_anywhere():
    names = set(suite.SUITE_PACKAGES) | set(suite.FULL_ONLY_PACKAGES)
    from bestrq2.corpora import corpus

    names |= set(corpus.CORPUS_PACKAGES) | set(corpus.FULL_ONLY_PACKAGES)
    names |= {v.package for v in tts.voices()} | {s.package for s in music.synth.SOUNDFONTS}
    for reserved in RESERVED:
        stem = reserved.rstrip("*").rstrip("-")
        assert not any(n.startswith(stem) for n in names), reserved
    script = (REPO / "scripts" / "setup_system.sh").read_text()
    for reserved in ("gcin", "asterisk", "hydrogen", "minetest", "megaglest", "wesnoth"):
        assert reserved not in script.split("# Keep this list")[1]


def test_voice_lists_agree_with_setup_script():
    script = (REPO / "scripts" / "setup_system.sh").read_text()
    full = next(line for line in script.splitlines() if line.startswith("VOICES_FULL="))
    small = next(line for line in script.splitlines() if line.startswith("VOICES_SMALL="))
    assert full.split("=", 1)[1].strip('"').split() == list(tts.MBROLA_VOICES)
    assert small.split("=", 1)[1].strip('"').split() == list(tts.SMALL_MBROLA_VOICES)


def test_label_tables_are_consistent():
    assert len(speech.KEYWORDS) == len(set(speech.KEYWORDS)) == 20
    all_files = [f for files in music.STYLES.values() for f in files]
    assert len(all_files) == len(set(all_files)), "a style file in two classes"
    assert all(len(files) >= 3 for files in music.STYLES.values())
    words = [w for names in environment._QABCS.values() for w in names.split()]
    assert len(words) == len(set(words)), "a qaBCs noise in two classes"


def test_setup_script_finds_itself():
    assert apt.find_setup_script() == REPO / "scripts" / "setup_system.sh"


# ------------------------------------------------------------------------------ integration tests


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> dict[str, Path]:
    if shutil.which("apt-get") is None:
        pytest.skip("needs a Debian system with apt-get")
    from bestrq2.corpora.cli import main

    out = tmp_path_factory.mktemp("data")
    cache = Path(os.environ.get("BESTRQ2_DATA_CACHE", REPO / "data" / "cache"))
    t0 = time.time()
    assert main(["all", "--small", "--out", str(out), "--cache", str(cache)]) == 0
    return {"corpus": out / "corpus", "suite": out / "suite", "cache": cache, "seconds": time.time() - t0}


def _rows(folder: Path) -> list[dict]:
    return read_manifest(folder / "manifest.jsonl")


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["corpus", "suite"])
def test_manifest_valid_and_files_match(built, kind):
    rows = _rows(built[kind])
    validate_rows(rows, CORPUS_FIELDS if kind == "corpus" else SUITE_FIELDS)
    assert len(rows) > 50
    for r in rows:
        info = sf.info(str(built[kind] / r["path"]))
        assert info.samplerate == audio.SAMPLE_RATE and info.channels == 1, r["path"]
        assert abs(info.frames / info.samplerate - r["duration"]) < 1e-3, r["path"]
    for name in ("SOURCES.md", "README.md"):
        assert (built[kind] / name).stat().st_size > 200


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["corpus", "suite"])
def test_every_file_decodes_finite_and_not_silent(built, kind):
    for path in sorted({r["path"] for r in _rows(built[kind])}):
        x, sr = sf.read(str(built[kind] / path), dtype="float32")
        assert sr == 16000 and x.ndim == 1, path
        assert np.isfinite(x).all(), path
        assert audio.rms(x) > audio.SILENCE_RMS, path


@pytest.mark.integration
def test_suite_tasks_and_group_disjoint_splits(built):
    rows = _rows(built["suite"])
    by_task = defaultdict(list)
    for r in rows:
        by_task[r["task"]].append(r)
    assert set(by_task) == {t.name for t in suite.TASKS}
    for task, task_rows in by_task.items():
        assert splits.overlapping_groups(task_rows) == {}, task
        assert {r["split"] for r in task_rows} == {"train", "valid", "test"}, task
        assert len({r["label"] for r in task_rows if r["split"] == "train"}) >= 2, task
    info = json.loads((built["suite"] / "tasks.json").read_text())
    assert set(info) == set(by_task)


@pytest.mark.integration
def test_corpus_disjoint_from_suite_test_items(built):
    test_rows = [r for r in _rows(built["suite"]) if r["split"] == "test"]
    test_keys = {r["group"] for r in test_rows} | {r["origin"] for r in test_rows}
    corpus_rows = _rows(built["corpus"])
    for r in corpus_rows:
        shared = (set(r["groups"]) | set(r["origins"])) & test_keys
        assert not shared, (r["path"], shared)
    assert {r["domain"] for r in corpus_rows} == {"speech", "music", "environment"}

    def digests(folder: Path, rows: list[dict]) -> set[str]:
        return {hashlib.sha1((folder / p).read_bytes()).hexdigest() for p in {r["path"] for r in rows}}

    assert not digests(built["corpus"], corpus_rows) & digests(built["suite"], test_rows)


@pytest.mark.integration
def test_rebuild_is_cached_and_resumes(built):
    from bestrq2.corpora import build_suite

    folder = built["suite"]
    before = (folder / "manifest.jsonl").read_text()
    t0 = time.time()
    build_suite(folder, small=True, cache=built["cache"])
    assert time.time() - t0 < 5
    # Simulate an interrupted run: manifest not yet written, some clips missing.
    rows = _rows(folder)
    gone = [folder / r["path"] for r in rows[:: max(1, len(rows) // 5)]]
    for p in gone + [folder / "manifest.jsonl", folder / "build.json"]:
        p.unlink(missing_ok=True)
    build_suite(folder, small=True, cache=built["cache"])
    assert all(p.exists() for p in gone)
    assert (folder / "manifest.jsonl").read_text() == before
