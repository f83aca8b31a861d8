"""The labelled downstream suite: plan every task, split by group, render, write manifest + README."""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from bestrq2.corpora import apt, environment, music, render, speech, splits, tts
from bestrq2.corpora.items import SuiteItem
from bestrq2.corpora.manifest import MANIFEST_NAME, read_manifest, write_manifest
from bestrq2.corpora.sources import provenance_markdown


@dataclass(frozen=True)
class Task:
    name: str
    domain: str
    description: str
    split_by: str
    fractions: tuple[float, float, float] = splits.DEFAULT_FRACTIONS
    """Target train/valid/test shares of clips (groups are whole, so shares are approximate)."""


TASKS = (
    Task("keywords", "speech", "20 spoken command words (yes/no/up/down/.../digits), synthetic voices", "voice"),
    Task("speaker_id", "speech", "which of the Hedgewars voice packs (actors) speaks", "phrase"),
    Task("phrase_id", "speech", "which game phrase is said, across English Hedgewars packs", "voice pack", (0.6, 0.2, 0.2)),
    Task("instrument_family", "music", "GM instrument family of a single note (10 families)", "SoundFont"),
    Task("pitch_class", "music", "pitch class (C..B) of a single note", "SoundFont"),
    Task("music_style", "music", "accompaniment style of a 10 s MMA groove (8 styles)", "MMA style file"),
    Task("sound_events", "environment", "coarse sound-event class (animal/human/instrument/machine/household)", "source file"),
)  # fmt: skip
TASK_BY_NAME = {t.name: t for t in TASKS}

SUITE_PACKAGES: dict[str, tuple[str, ...]] = {
    "hedgewars-data": (speech.HEDGEWARS_VOICES, speech.HEDGEWARS_MUSIC),
    "scratch": (environment.SCRATCH_DIR,),
    "qabcs-data": ("usr/share/qabcs",),
    "mma": (),
    "timgm6mb-soundfont": (),
    "musescore-general-soundfont-small": (),
    "opl3-soundfont": (),
}
FULL_ONLY_PACKAGES: dict[str, tuple[str, ...]] = {
    "fluid-soundfont-gm": (),
    "tuxpaint-stamps-default": ("usr/share/tuxpaint/stamps",),
}
TOOLS = ["espeak-ng", "mbrola", "pico2wave"]


def packages(small: bool) -> dict[str, tuple[str, ...]]:
    return dict(SUITE_PACKAGES) if small else {**SUITE_PACKAGES, **FULL_ONLY_PACKAGES}


def plan(roots: dict[str, Path], small: bool) -> list[SuiteItem]:
    """Every suite item with its split assigned; pure given the unpacked packages (no audio rendered)."""
    items = speech.keyword_items(small)
    items += speech.speaker_items(roots["hedgewars-data"], small)
    items += speech.phrase_items(roots["hedgewars-data"], small)
    items += music.note_items(small)
    items += music.style_items(roots["mma"], small)
    items += environment.event_items(roots)
    by_task: dict[str, list[SuiteItem]] = defaultdict(list)
    for it in items:
        by_task[it.task].append(it)
    for task, task_items in by_task.items():
        fixed = music.SOUNDFONT_SPLITS if TASK_BY_NAME[task].split_by == "SoundFont" else None
        spec = TASK_BY_NAME[task]
        assignment = split_task(task_items, seed=sum(map(ord, task)), fixed=fixed, fractions=spec.fractions)
        for it in task_items:
            it.split = assignment[it.group]
    return items


def split_task(
    items: list[SuiteItem],
    seed: int,
    fixed: dict[str, str] | None = None,
    fractions: tuple[float, float, float] = splits.DEFAULT_FRACTIONS,
) -> dict[str, str]:
    """Group -> split. When every group holds one label (a file, a style), split each label's groups
    separately so that every class reaches every split; otherwise split all groups together."""
    labels_of: dict[str, set[str]] = defaultdict(set)
    sizes: Counter[str] = Counter()
    for it in items:
        labels_of[it.group].add(it.label)
        sizes[it.group] += 1
    if fixed or any(len(v) > 1 for v in labels_of.values()):
        return splits.assign_splits(sizes, fractions, seed=seed, fixed=fixed)
    out: dict[str, str] = {}
    by_label: dict[str, dict[str, int]] = defaultdict(dict)
    for g, labs in labels_of.items():
        by_label[next(iter(labs))][g] = sizes[g]
    for _label, group_sizes in sorted(by_label.items()):
        out.update(splits.assign_splits(group_sizes, fractions, seed=seed))
    return out


def test_keys(items: list[SuiteItem]) -> set[str]:
    """Groups and origins of every test item: what the corpus must never contain."""
    return {k for it in items if it.split == "test" for k in (it.group, it.origin)}


def fetch(cache: Path, small: bool) -> dict[str, Path]:
    voices = tts.SMALL_MBROLA_VOICES if small else tts.MBROLA_VOICES
    apt.ensure_tools(TOOLS, small=small, paths=tuple(f"{tts.MBROLA_DIR}/{v}" for v in voices))
    return apt.fetch_packages(packages(small), cache)


def build_suite(
    out: str | Path, small: bool = False, cache: str | Path | None = None, workers: int = 2
) -> Path:
    """Build (or finish, or reuse) the suite in `out`; returns the manifest path."""
    from bestrq2.corpora import default_cache_dir

    out = Path(out)
    manifest = out / MANIFEST_NAME
    stamp = out / "build.json"
    if manifest.exists() and stamp.exists() and json.loads(stamp.read_text()).get("small") == small:
        return manifest
    t0 = time.time()
    roots = fetch(Path(cache) if cache else default_cache_dir(), small)
    items = plan(roots, small)
    jobs = {it.out: it.job for it in items}
    durations = render.run_jobs(jobs, out, roots, workers, desc="suite")
    rows = [
        {
            "path": it.out,
            "duration": round(durations[it.out], 4),
            "source": it.source,
            "task": it.task,
            "label": it.label,
            "split": it.split,
            "group": it.group,
            "origin": it.origin,
        }
        for it in items
        if it.out in durations
    ]
    rows.sort(key=lambda r: (r["task"], r["split"], r["path"]))
    used = {p for r in rows for p in r["source"].split("+")} | {"espeak-ng", "mbrola", "tinysoundfont", "mma"}
    (out / "SOURCES.md").write_text(provenance_markdown("bestrq2 downstream suite", used))
    (out / "README.md").write_text(describe(rows, small))
    (out / "tasks.json").write_text(json.dumps(task_info(rows), indent=2) + "\n")
    write_manifest(manifest, rows)
    stamp.write_text(
        json.dumps({"small": small, "clips": len(rows), "seconds": round(time.time() - t0, 1)}) + "\n"
    )
    return manifest


def task_info(rows: list[dict]) -> dict[str, dict]:
    """Per task: domain, description, split rule, sorted classes and split sizes (for the eval code)."""
    info = {}
    for t in TASKS:
        r = [x for x in rows if x["task"] == t.name]
        if not r:
            continue
        info[t.name] = {
            "domain": t.domain,
            "description": t.description,
            "split_by": t.split_by,
            "classes": sorted({x["label"] for x in r}),
            "sizes": {s: sum(x["split"] == s for x in r) for s in splits.SPLIT_NAMES},
            "groups": {s: len({x["group"] for x in r if x["split"] == s}) for s in splits.SPLIT_NAMES},
            "hours": round(sum(x["duration"] for x in r) / 3600, 3),
        }
    return info


def describe(rows: list[dict], small: bool) -> str:
    info = task_info(rows)
    lines = [
        f"# bestrq2 downstream suite{' (small)' if small else ''}",
        "",
        "Clip classification tasks on real and rendered audio, 16 kHz mono FLAC. `manifest.jsonl` has one row",
        "per (clip, task): `path`, `duration`, `source`, `task`, `label`, `split`, `group`, `origin`.",
        "Splits are disjoint by `group` (voice, phrase, voice pack, SoundFont, style file or source file):",
        "a probe is always tested on sources it never saw. Licences: SOURCES.md.",
        "",
        "| task | domain | classes | train | valid | test | split by | what |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, i in info.items():
        s = i["sizes"]
        lines.append(
            f"| {name} | {i['domain']} | {len(i['classes'])} | {s['train']} | {s['valid']} | {s['test']} "
            f"| {i['split_by']} | {i['description']} |"
        )
    lines.append("")
    return "\n".join(lines)


def load_suite(out: str | Path) -> list[dict]:
    return read_manifest(Path(out) / MANIFEST_NAME)
