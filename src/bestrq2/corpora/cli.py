"""`bestrq2 data {corpus,suite,all}`: build the pretraining corpus and/or the downstream suite."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bestrq2.corpora import (
    build_corpus,
    build_suite,
    default_cache_dir,
    default_corpus_dir,
    default_suite_dir,
)
from bestrq2.corpora.apt import MissingToolError
from bestrq2.corpora.manifest import read_manifest


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bestrq2 data", description=__doc__)
    p.add_argument("what", choices=("corpus", "suite", "all"), help="what to build")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (corpus/suite: default data/corpus or data/suite; all: parent of both, "
                        "default data)")  # fmt: skip
    p.add_argument("--small", action="store_true", help="a small, fast subset (for tests and CI)")
    p.add_argument("--cache", type=Path, default=None, help=f"package cache (default {default_cache_dir()})")
    p.add_argument("--workers", type=int, default=2, help="render processes (default 2)")
    return p


def _summary(name: str, manifest: Path, seconds: float) -> None:
    rows = read_manifest(manifest)
    hours = sum(r["duration"] for r in rows) / 3600
    print(f"{name}: {len(rows)} rows, {hours:.2f} h, {seconds:.0f} s -> {manifest}")


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.what == "all" and args.out is not None:
        corpus_dir, suite_dir = args.out / "corpus", args.out / "suite"
    else:
        corpus_dir = args.out or default_corpus_dir()
        suite_dir = args.out or default_suite_dir()
    try:
        if args.what in ("suite", "all"):
            t = time.time()
            _summary("suite", build_suite(suite_dir, args.small, args.cache, args.workers), time.time() - t)
        if args.what in ("corpus", "all"):
            t = time.time()
            _summary(
                "corpus", build_corpus(corpus_dir, args.small, args.cache, args.workers), time.time() - t
            )
    except MissingToolError as e:
        print(f"bestrq2 data: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
