"""Tar shards in the webdataset layout: the layout, which shards a source names, how to stream one.

Layout: ``DIR/shard-000000.tar, ...`` plus the index ``DIR/shards.json``. A clip is two tar members
sharing a key: ``KEY.flac`` (16-bit FLAC) or ``KEY.pcm16`` (raw little-endian int16, no decoding)
and ``KEY.json`` ({"source", "offset_s", "num_samples", "sample_rate"}). Keys hold no dots, since
webdataset splits a member name at the first dot of its base name.

* :func:`expand_urls` / :func:`is_shard_source` / :func:`shard_index` - a source (folder, index,
  ``.tar`` path, brace pattern ``shard-{000000..000099}.tar``, ``pipe:CMD`` or a list) -> shard URLs.
* :func:`iter_tar` - stream one shard as (key, {ext: bytes}); :func:`clip_frames` / :func:`read_clip`
  - one clip's length and audio (a window of it) from those bytes.

This module is the format both sides share and imports neither of them: the writer is
:func:`bestrq2.data.shard_writer.write_shards`, the training loader
:func:`bestrq2.data.shard_reader.build_shard_loader` (both also importable from :mod:`bestrq2.data`).
"""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

INDEX_NAME = "shards.json"
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
AUDIO_EXTS = ("pcm16", "flac", "wav", "ogg", "mp3", "opus")  # the first one a sample has is its audio
FORMATS = ("flac", "pcm16")
READ_BUFFER = 1 << 20  # bytes per read of a piped shard
COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")  # gzip, bzip2, xz


# ---- sources and URLs -----------------------------------------------------------------------------


@dataclass
class Shard:
    url: str
    """A local path or ``pipe:CMD`` (the command's stdout is the tar)."""
    clips: int | None = None
    """Samples in the shard, from an index; None when unknown."""


def _split_top(text: str, seps: str) -> list[str]:
    """Split at any character of ``seps`` outside braces; empty pieces dropped."""
    out, depth, cur = [], 0, []
    for ch in text:
        depth += (ch == "{") - (ch == "}")
        if depth == 0 and ch in seps:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [p for p in out if p]


def expand_braces(pattern: str) -> list[str]:
    """``a-{000..002}.tar`` -> a-000.tar, a-001.tar, a-002.tar (zero padding kept); ``{x,y}`` alternatives."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return [pattern]
    body, head, tail = m.group(1), pattern[: m.start()], pattern[m.end() :]
    r = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if r:
        lo, hi = int(r.group(1)), int(r.group(2))
        width = len(r.group(1)) if r.group(1).startswith("0") or r.group(2).startswith("0") else 0
        step = 1 if hi >= lo else -1
        items = [str(i).zfill(width) for i in range(lo, hi + step, step)]
    elif "," in body:
        items = body.split(",")
    else:
        return [head + "{" + body + "}" + t for t in expand_braces(tail)]
    return [head + item + t for item in items for t in expand_braces(tail)]


def _items(source: str | Path) -> list[str]:
    """A source string -> its items: comma/space separated, a ``pipe:`` item runs to the next comma
    or the next word that starts with ``pipe:`` (so commands may hold spaces, not commas)."""
    if isinstance(source, Path) or Path(str(source)).exists():
        return [str(source)]
    items: list[str] = []
    for part in _split_top(str(source), ","):
        pipe: list[str] | None = None
        for word in _split_top(part, " \t\n"):
            if word.startswith("pipe:"):
                if pipe:
                    items.append(" ".join(pipe))
                pipe = [word]
            elif pipe is not None:
                pipe.append(word)
            else:
                items.append(word)
        if pipe:
            items.append(" ".join(pipe))
    return items


def _is_tar_name(name: str) -> bool:
    return name.lower().endswith(TAR_SUFFIXES)


def _read_index(path: Path) -> list[Shard]:
    index = json.loads(path.read_text())
    if not isinstance(index, dict) or not isinstance(index.get("shards"), list):
        raise ValueError(f"{path}: not a shard index (expected a 'shards' list)")
    shards = []
    for row in index["shards"]:
        url = row["url"]
        if not url.startswith("pipe:") and not Path(url).is_absolute():
            url = str(path.parent / url)
        shards.append(Shard(url, row.get("clips")))
    return shards


def shard_index(source: str | Path) -> list[Shard]:
    """The shards a source names, in order, with clip counts where an index (shards.json in a given
    folder, a given .json, or beside given local .tar files) has them."""
    shards: list[Shard] = []
    indexes: dict[Path, dict[str, int]] = {}  # folder -> {file name: clips} of its shards.json
    for item in _items(source):
        if item.startswith("pipe:"):
            shards += [Shard(u) for u in expand_braces(item)]
            continue
        for name in expand_braces(item):
            path = Path(name)
            if path.is_dir():
                if (path / INDEX_NAME).is_file():
                    shards += _read_index(path / INDEX_NAME)
                else:
                    tars = sorted(p for p in path.iterdir() if _is_tar_name(p.name) and p.is_file())
                    if not tars:
                        raise ValueError(f"{path}: no {INDEX_NAME} and no .tar shards")
                    shards += [Shard(str(p), _known_clips(p, indexes)) for p in tars]
            elif path.suffix == ".json":
                shards += _read_index(path)
            else:
                shards.append(Shard(str(path), _known_clips(path, indexes)))
    if not shards:
        raise ValueError(f"no shards in {source!r}")
    return shards


def _known_clips(path: Path, indexes: dict[Path, dict[str, int]]) -> int | None:
    folder = path.parent.resolve()
    if folder not in indexes:
        indexes[folder] = {}
        try:
            for s in _read_index(folder / INDEX_NAME):
                if not s.url.startswith("pipe:"):
                    indexes[folder][Path(s.url).name] = s.clips
        except (OSError, ValueError, KeyError):
            pass
    return indexes[folder].get(path.name)


def expand_urls(source: str | Path) -> list[str]:
    """The ordered shard URLs (local paths or ``pipe:CMD``) a source names."""
    return [s.url for s in shard_index(source)]


def is_shard_source(source: str | Path) -> bool:
    """True for a folder holding .tar files or shards.json, a shard index (.json), a .tar path, a brace
    pattern of them, a ``pipe:`` URL, or a comma/space list of such; False for audio folders and manifests."""

    def one(item: str) -> bool:
        if item.startswith("pipe:"):
            return True
        path = Path(item)
        if path.is_dir():
            return (path / INDEX_NAME).is_file() or any(_is_tar_name(p.name) for p in path.iterdir())
        if _is_tar_name(item):
            return True
        if path.suffix == ".json" and path.is_file():
            try:
                return isinstance(json.loads(path.read_text()).get("shards"), list)
            except (ValueError, AttributeError):
                return False
        return False

    try:
        items = _items(source)
    except OSError:
        return False
    return bool(items) and all(one(i) for i in items)


# ---- reading one shard ----------------------------------------------------------------------------


class ShardError(Exception):
    """A shard that could not be read to its end: a failing command or a truncated / corrupt tar."""

    def __init__(self, url: str, reason: str):
        super().__init__(f"{url}: {reason}")
        self.url, self.reason = url, reason


def split_name(name: str) -> tuple[str | None, str]:
    """Tar member name -> (key, extension), split at the first dot of the base name (as webdataset)."""
    m = re.fullmatch(r"((?:.*/)?[^./]+)\.([^/]*)", name)
    return (m.group(1), m.group(2).lower()) if m else (None, "")


def _default_stop_signals() -> None:
    """In a pipe's command: SIGTERM / SIGINT end it again (loader workers ignore them; children inherit that)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def iter_tar(url: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Stream a shard's samples in tar order. Raises :class:`ShardError` (after yielding the samples
    before the damage) when the command fails or the tar is truncated or corrupt."""
    proc, err, stream = None, None, None
    try:
        if url.startswith("pipe:"):
            err = tempfile.TemporaryFile()
            proc = subprocess.Popen(
                url[5:], shell=True, stdout=subprocess.PIPE, stderr=err, preexec_fn=_default_stop_signals
            )
            stream = io.BufferedReader(proc.stdout, READ_BUFFER)
            # a plain tar streams through tarfile's fast path; "r|*" (any compression) is 2x slower
            mode = "r|*" if stream.peek(6)[:6].startswith(COMPRESSED_MAGIC) else "r|"
        else:
            stream = open(url, "rb")  # closed in finally
            mode = "r:*"  # random access: member data read straight from the file, 3x faster than a stream
        key, group, failure = None, {}, None
        try:
            with tarfile.open(fileobj=stream, mode=mode) as tar:
                for member in tar:
                    k, ext = split_name(member.name)
                    if not member.isfile() or k is None:
                        continue
                    data = tar.extractfile(member).read()
                    if len(data) != member.size:
                        raise tarfile.ReadError(f"member {member.name} is truncated")
                    if k != key and group:
                        yield key, group
                        group = {}
                    key, group[ext] = k, data
        except (tarfile.TarError, EOFError, OSError, ValueError) as e:
            # a truncated or corrupt tar: the samples before the damage were yielded, a partial one is dropped
            failure = f"unreadable tar ({type(e).__name__}: {e})"
        else:
            if group:
                yield key, group
        if proc is not None:
            while stream.read(1 << 16):  # the tar's end padding, so that the command can exit
                pass
            rc = proc.wait()
            if rc != 0:
                err.seek(0)
                tail = err.read()[-400:].decode(errors="replace").strip()
                failure = f"command exited with status {rc}" + (f": {tail}" if tail else "")
        if failure:
            raise ShardError(url, failure)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if stream is not None:
            stream.close()
        if err is not None:
            err.close()


# ---- one clip's audio from its members -------------------------------------------------------------


def _audio_member(members: dict[str, bytes]) -> str:
    for ext in AUDIO_EXTS:
        if ext in members:
            return ext
    raise ValueError(f"no audio member (one of {', '.join(AUDIO_EXTS)}; has {', '.join(sorted(members))})")


def clip_frames(members: dict[str, bytes]) -> tuple[int, int]:
    """(frames, sample rate) of a sample's audio, without decoding it. Raises ValueError if unusable."""
    ext = _audio_member(members)
    if ext == "pcm16":
        meta = json.loads(members.get("json", b"{}"))
        if not isinstance(meta, dict) or not meta.get("sample_rate"):
            raise ValueError("pcm16 audio without a sample_rate in its .json")
        return len(members[ext]) // 2, int(meta["sample_rate"])
    try:
        info = sf.info(io.BytesIO(members[ext]))
    except Exception as e:  # soundfile raises several types for corrupt data
        raise ValueError(f"undecodable {ext} ({type(e).__name__})") from e
    return int(info.frames), int(info.samplerate)


def read_clip(members: dict[str, bytes], start: int = 0, count: int | None = None) -> np.ndarray:
    """A sample's audio (frames ``start`` .. ``start + count``) as mono float32; int16 -> x / 32768.
    Raises ValueError if unusable."""
    ext = _audio_member(members)
    data = members[ext]
    if ext == "pcm16":
        total = len(data) // 2
        count = total - start if count is None else min(count, total - start)
        pcm = np.frombuffer(data, dtype="<i2", count=max(count, 0), offset=2 * start)
        return np.multiply(pcm, np.float32(1 / 32768), dtype=np.float32)  # one pass: convert and scale
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            if start:
                f.seek(start)
            x = f.read(-1 if count is None else count, dtype="float32", always_2d=True)
    except Exception as e:
        raise ValueError(f"undecodable {ext} ({type(e).__name__}: {str(e)[:80]})") from e
    return x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]
