"""`bestrq2 data {corpus,suite,all}`: build the pretraining corpus and/or the downstream suite.
`bestrq2 data shard SRC --out DIR`: pack any audio folder or manifest into tar shards for pretraining."""

from __future__ import annotations

import argparse
import os
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
    p = argparse.ArgumentParser(prog="bestrq2 data", description=__doc__,
                                epilog="bestrq2 data shard --help: the options of the shard command")  # fmt: skip
    p.add_argument("what", choices=("corpus", "suite", "all"), help="what to build")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (corpus/suite: default data/corpus or data/suite; all: parent of both, "
                        "default data)")  # fmt: skip
    p.add_argument("--small", action="store_true", help="a small, fast subset (for tests and CI)")
    p.add_argument("--cache", type=Path, default=None, help=f"package cache (default {default_cache_dir()})")
    p.add_argument("--workers", type=int, default=2, help="render processes (default 2)")
    return p


def _shard_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bestrq2 data shard",
        description="Pack audio into tar shards (webdataset layout) for pretraining on large corpora: "
        "decode to mono, resample, cut long files into segments, write DIR/shard-NNNNNN.tar and DIR/shards.json.",
    )
    p.add_argument("source", type=Path, help="audio folder or manifest (.jsonl / .txt), as pretrain --data")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--format", choices=("flac", "pcm16"), default="flac",
                   help="flac: 16-bit FLAC (about half the size); pcm16: raw int16, no decoding cost (default flac)")  # fmt: skip
    p.add_argument("--clips-per-shard", type=int, default=1000, help="samples per shard (default 1000)")
    p.add_argument("--max-seconds", type=float, default=20.0,
                   help="longer files are cut into equal consecutive segments of at most this length (default 20: "
                        "segments of 10-20 s, so 10 s crops are never padded and little is read per crop)")  # fmt: skip
    p.add_argument("--sample-rate", type=int, default=16000, help="output sample rate (default 16000)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="decoding processes")
    p.add_argument("--seed", type=int, default=0, help="seed of the file order (shuffled)")
    p.add_argument("--no-shuffle", action="store_true", help="keep the listing order of the files")
    p.add_argument("--overwrite", action="store_true", help="replace shards already in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def shard_main(argv: list[str]) -> int:
    from bestrq2.data.shard_writer import write_shards

    args = _shard_parser().parse_args(argv)
    try:
        index = write_shards(
            args.source, args.out, args.format, args.clips_per_shard, args.max_seconds, args.sample_rate,
            args.workers, None if args.no_shuffle else args.seed, args.overwrite, not args.no_progress,
        )  # fmt: skip
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"bestrq2 data shard: error: {e}", file=sys.stderr)
        return 2
    skipped = index["skipped"]
    print(
        f"shards: {index['clips']} clips from {index['files']} files, {index['hours']:.2f} h, "
        f"{len(index['shards'])} shards, {len(skipped)} files skipped, {index['build_seconds']:.0f} s "
        f"-> {args.out / 'shards.json'}"
    )
    for row in skipped[:10]:
        print(f"  skipped {row['path']}: {row['reason']}")
    if len(skipped) > 10:
        print(f"  ... {len(skipped) - 10} more listed in shards.json")
    return 0


def _summary(name: str, manifest: Path, seconds: float) -> None:
    rows = read_manifest(manifest)
    hours = sum(r["duration"] for r in rows) / 3600
    print(f"{name}: {len(rows)} rows, {hours:.2f} h, {seconds:.0f} s -> {manifest}")


def main(argv: list[str]) -> int:
    if argv[:1] == ["shard"]:
        return shard_main(argv[1:])
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
