"""Audio in, batches out: decoding (:mod:`.audio`), the folder/manifest loader (:mod:`.files`), and tar
shards: the format both sides share (:mod:`.shards`), the reader (:mod:`.shard_reader`) and the writer
(:mod:`.shard_writer`). Imports only :mod:`bestrq2.config` from outside this package."""

from bestrq2.data.audio import AudioError, load_audio
from bestrq2.data.files import build_loader, collate, list_audio, loader_settings
from bestrq2.data.shard_reader import build_shard_loader, counted_shards
from bestrq2.data.shard_writer import write_shards
from bestrq2.data.shards import expand_urls, is_shard_source

__all__ = [
    "AudioError",
    "build_loader",
    "build_shard_loader",
    "collate",
    "counted_shards",
    "expand_urls",
    "is_shard_source",
    "list_audio",
    "load_audio",
    "loader_settings",
    "write_shards",
]
