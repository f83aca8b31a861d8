"""Real audio from Debian packages: a pretraining corpus and a labelled downstream suite.

    from bestrq2.corpora import build_corpus, build_suite, default_corpus_dir, default_suite_dir
    corpus_manifest = build_corpus(default_corpus_dir(), small=True)
    suite_manifest = build_suite(default_suite_dir(), small=True)

Command line: `bestrq2 data {corpus,suite,all} [--out DIR] [--small]`. See README.md beside this file.
"""

from __future__ import annotations

import os
from pathlib import Path

from bestrq2.corpora.corpus import build_corpus
from bestrq2.corpora.suite import build_suite

__all__ = ["build_corpus", "build_suite", "default_cache_dir", "default_corpus_dir", "default_suite_dir"]


def _data_root() -> Path:
    return Path(os.environ.get("BESTRQ2_DATA", "data"))


def default_corpus_dir() -> Path:
    """data/corpus under the current directory (or $BESTRQ2_DATA/corpus)."""
    return _data_root() / "corpus"


def default_suite_dir() -> Path:
    """data/suite under the current directory (or $BESTRQ2_DATA/suite)."""
    return _data_root() / "suite"


def default_cache_dir() -> Path:
    """Downloaded and unpacked Debian packages: data/cache (or $BESTRQ2_DATA_CACHE)."""
    return Path(os.environ.get("BESTRQ2_DATA_CACHE", _data_root() / "cache"))
