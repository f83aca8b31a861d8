"""The pretraining corpus: real and rendered speech, music and environmental sound, disjoint from the suite.

The corpus planner first plans the suite (cheap, no audio) and excludes every group and origin that any
suite test split uses: test voices, test SoundFonts, test style files and test source files never reach
pretraining. The hedgewars voice packs (which feed two suite tasks) are not used at all.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from bestrq2.corpora import environment, music, render, speech, suite
from bestrq2.corpora.items import CorpusItem
from bestrq2.corpora.manifest import MANIFEST_NAME, read_manifest, write_manifest
from bestrq2.corpora.sources import provenance_markdown

CORPUS_PACKAGES: dict[str, tuple[str, ...]] = {
    "sonic-pi-samples": (),
    "lmms-common": ("usr/share/lmms/samples",),
}
FULL_ONLY_PACKAGES: dict[str, tuple[str, ...]] = {
    "ktuberling-data": ("usr/share/ktuberling/sounds",),
    "klettres-data": ("usr/share/klettres",),
}


@dataclass(frozen=True)
class Sizes:
    """How much of each generated kind to make."""

    tts_clips: int
    mma_songs: int
    scenes: int
    hedgewars_songs: int | None
    """How many soundtrack songs to cut up (None: all)."""
    files_per_speaker: int | None
    """Cap on real speech files per speaker folder (None: all)."""


FULL = Sizes(tts_clips=300, mma_songs=150, scenes=80, hedgewars_songs=None, files_per_speaker=None)
SMALL = Sizes(tts_clips=12, mma_songs=6, scenes=4, hedgewars_songs=2, files_per_speaker=16)


def plan(roots: dict[str, Path], small: bool, exclude: set[str]) -> list[CorpusItem]:
    size = SMALL if small else FULL
    items = speech.real_speech_items(roots, chunk_s=25.0, max_files=size.files_per_speaker)
    items += speech.tts_items(exclude, size.tts_clips, small)
    items += music.hedgewars_music_items(
        roots["hedgewars-data"], piece_s=45.0, max_files=size.hedgewars_songs
    )
    items += music.mma_corpus_items(roots["mma"], exclude, size.mma_songs, small)
    items += music.sample_pack_items(roots, chunk_s=15.0)
    items += environment.corpus_items(roots, exclude, chunk_s=20.0, n_scenes=size.scenes)
    leaked = [(it.out, k) for it in items for k in (*it.groups, *it.origins) if k in exclude]
    if leaked:
        raise AssertionError(f"corpus would contain suite test material, e.g. {leaked[0]}")
    return items


def build_corpus(
    out: str | Path, small: bool = False, cache: str | Path | None = None, workers: int = 2
) -> Path:
    """Build (or finish, or reuse) the pretraining corpus in `out`; returns the manifest path."""
    from bestrq2.corpora import default_cache_dir

    out = Path(out)
    manifest = out / MANIFEST_NAME
    stamp = out / "build.json"
    if manifest.exists() and stamp.exists() and json.loads(stamp.read_text()).get("small") == small:
        return manifest
    t0 = time.time()
    cache = Path(cache) if cache else default_cache_dir()
    roots = suite.fetch(cache, small)
    extra = dict(CORPUS_PACKAGES) if small else {**CORPUS_PACKAGES, **FULL_ONLY_PACKAGES}
    from bestrq2.corpora import apt

    roots.update(apt.fetch_packages(extra, cache))
    exclude = suite.test_keys(suite.plan(roots, small))
    items = plan(roots, small, exclude)
    durations = render.run_jobs({it.out: it.job for it in items}, out, roots, workers, desc="corpus")
    rows = [
        {
            "path": it.out,
            "duration": round(durations[it.out], 4),
            "source": it.source,
            "domain": it.domain,
            "groups": it.groups,
            "origins": it.origins,
        }
        for it in items
        if it.out in durations
    ]
    rows.sort(key=lambda r: r["path"])
    used = {p for r in rows for p in r["source"].split("+")} | {"espeak-ng", "mbrola", "tinysoundfont"}
    (out / "SOURCES.md").write_text(provenance_markdown("bestrq2 pretraining corpus", used))
    (out / "README.md").write_text(describe(rows, small))
    write_manifest(manifest, rows)
    stamp.write_text(
        json.dumps({"small": small, "clips": len(rows), "seconds": round(time.time() - t0, 1)}) + "\n"
    )
    return manifest


def hours_by_domain(rows: list[dict]) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in rows:
        out[r["domain"]] = out.get(r["domain"], 0.0) + r["duration"] / 3600
    return {k: round(v, 3) for k, v in sorted(out.items())}


def describe(rows: list[dict], small: bool) -> str:
    hours = hours_by_domain(rows)
    lines = [
        f"# bestrq2 pretraining corpus{' (small)' if small else ''}",
        "",
        f"{len(rows)} clips, {sum(hours.values()):.2f} h of 16 kHz mono FLAC. `manifest.jsonl`: `path`, `duration`,",
        "`source` (package), `domain`, `groups` and `origins` (what each clip was made from). No group or",
        "origin of any suite test split appears here. Licences: SOURCES.md.",
        "",
        "| domain | hours | clips |",
        "|---|---|---|",
    ]
    for d, h in hours.items():
        lines.append(f"| {d} | {h:.2f} | {sum(r['domain'] == d for r in rows)} |")
    lines.append("")
    return "\n".join(lines)


def load_corpus(out: str | Path) -> list[dict]:
    return read_manifest(Path(out) / MANIFEST_NAME)
