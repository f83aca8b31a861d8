"""What ``bestrq2 evaluate MODEL`` accepts, and a cache key that changes whenever the model does.

``MODEL`` is one of
  ``DIR``                an export folder (config.json + model.safetensors), or a run folder / checkpoint
  ``logmel``             log-mel statistics baseline (reference frontend)
  ``randfeat[:DIM[:SEED[:WINDOW]]]`` random ReLU features of each 128 x 4 log-mel patch (default 2048, 0, 1)
  ``pca:DIM:DATA``       the top DIM principal components of each 128 x 4 log-mel patch, fitted on crops of
                         the audio under DATA (a folder or manifest; the pretraining corpus)
  ``random:PRESET[:SEED]`` a random-init encoder of a preset (``random:tiny``, ``random:base:3``)
  ``random:DIR[:SEED]``    a random-init encoder with the architecture of an export folder
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from torch import nn

from bestrq2.config import (
    PRESETS,
    Config,
    ConformerConfig,
    EncoderConfig,
    FrontendConfig,
    _from_dict,
    get_preset,
)
from bestrq2.evaluation.baselines import (
    LogMelStatsEncoder,
    PatchPCAEncoder,
    RandomPatchFeaturesEncoder,
    random_encoder,
)

KEY_VERSION = "1"
"""Bump when the way embeddings are computed changes, so old cache entries are not reused."""


@dataclass
class ModelSpec:
    spec: str
    """What the user passed."""
    name: str
    """Short display name (table columns, result folders)."""
    key: str
    """Hex digest of everything the embeddings depend on."""
    build: Callable[[], nn.Module]
    layer: int | None = None


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256(KEY_VERSION.encode())
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _listing_digest(data: Path) -> str:
    """A manifest's bytes, or a folder's audio files with their sizes and times: what a fit on it depends on."""
    if data.is_file():
        return _file_digest(data)
    from bestrq2.data.files import list_audio

    return _digest(*(f"{f}\t{f.stat().st_size}\t{f.stat().st_mtime_ns}" for f in map(Path, list_audio(data))))


def _is_export(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "model.safetensors").is_file()


@dataclass
class _Arch:
    """What a random-init encoder needs: configs, architecture, a short name and the pooling."""

    frontend: FrontendConfig
    encoder: EncoderConfig
    name: str
    pooling: str
    arch: str = "vit"
    conformer: ConformerConfig | None = None


def _configs(source: str) -> _Arch:
    """Configs of a preset name, an export folder or a run (pooling: an export's own; 'mean' otherwise)."""
    path = Path(source)
    if _is_export(path):
        meta = json.loads((path / "config.json").read_text())
        return _Arch(
            _from_dict(FrontendConfig, meta["frontend"]),
            _from_dict(EncoderConfig, meta["encoder"]),
            path.name,
            meta.get("pooling", "mean"),
            meta.get("arch", "vit"),
            _from_dict(ConformerConfig, meta["conformer"]) if "conformer" in meta else None,
        )
    if source in PRESETS:
        cfg = get_preset(source)
        return _Arch(cfg.frontend, cfg.encoder, source, "mean")
    if path.is_file() or (path / "checkpoints").is_dir():
        from bestrq2.export import arch_of
        from bestrq2.training.checkpoint import load_checkpoint

        cfg = Config.from_dict(load_checkpoint(path)["config"])
        name = path.resolve().name if path.is_dir() else path.stem
        return _Arch(cfg.frontend, cfg.encoder, name, "mean", arch_of(cfg), cfg.conformer)
    raise ValueError(f"random:{source}: not a preset ({sorted(PRESETS)}), an export folder nor a run")


def _config_json(*cfgs: object) -> str:
    return json.dumps([asdict(c) for c in cfgs], sort_keys=True)  # type: ignore[call-overload]


def resolve_model(spec: str, layer: int | None = None) -> ModelSpec:
    """Parse a model argument (see the module docstring) without building the model."""
    tag = f"layer={layer}"
    if spec == "logmel":
        fe = FrontendConfig()
        return ModelSpec(
            spec, "logmel", _digest("logmel", _config_json(fe)), lambda: LogMelStatsEncoder(fe).eval()
        )
    if spec == "randfeat" or spec.startswith("randfeat:"):
        m = re.fullmatch(r"randfeat(?::(\d+)(?::(\d+)(?::(\d+))?)?)?", spec)
        if not m:
            raise ValueError(f"{spec!r}: expected randfeat[:DIM[:SEED[:WINDOW]]] with whole numbers")
        dim, seed, window = (int(g) if g else d for g, d in zip(m.groups(), (2048, 0, 1), strict=True))
        fe = FrontendConfig(patch_freq=128, patch_time=4)
        name = f"randfeat-{dim}" + (f"-{seed}" if seed else "") + (f"-w{window}" if window > 1 else "")
        key = _digest("randfeat", _config_json(fe), str(dim), str(seed), str(window))
        return ModelSpec(spec, name, key, lambda: RandomPatchFeaturesEncoder(fe, dim, seed, window).eval())
    if spec.startswith("pca:"):
        m = re.fullmatch(r"pca:(\d+):(.+)", spec)
        if not m:
            raise ValueError(f"{spec!r}: expected pca:DIM:DATA (DATA: the audio folder or manifest to fit on)")
        dim, data = int(m.group(1)), m.group(2)
        if not Path(data).exists():
            raise FileNotFoundError(f"{spec!r}: no such folder or manifest {data}")
        fe = FrontendConfig(patch_freq=128, patch_time=4)
        key = _digest("pca", _config_json(fe), str(dim), _listing_digest(Path(data)))
        return ModelSpec(spec, f"pca-{dim}", key, lambda: PatchPCAEncoder(data, fe, dim).eval())
    if spec.startswith("random:"):
        source, seed = spec[len("random:") :], 0
        m = re.fullmatch(r"(.+):(\d+)", source)
        if m and not Path(source).exists():
            source, seed = m.group(1), int(m.group(2))
        a = _configs(source)
        name = f"random-{a.name}" + (f"-{seed}" if seed else "") + ("" if layer is None else f"-layer{layer}")
        parts = (a.frontend, a.encoder) + ((a.conformer,) if a.arch == "conformer" else ())
        key = _digest("random", _config_json(*parts), str(seed), a.pooling, tag)
        return ModelSpec(
            spec, name, key, lambda: random_encoder(a.frontend, a.encoder, seed, a.pooling, a.arch, a.conformer), layer
        )
    path = Path(spec)
    if _is_export(path):
        key = _digest(
            "export", (path / "config.json").read_bytes(), _file_digest(path / "model.safetensors"), tag
        )
    elif path.is_file():
        key = _digest("checkpoint", _file_digest(path), tag)
    elif path.is_dir():
        from bestrq2.training.checkpoint import checkpoint_path

        ckpt = checkpoint_path(path)
        if not ckpt.is_file():
            raise FileNotFoundError(
                f"{path} is neither an export folder (config.json + model.safetensors) nor a run"
            )
        key = _digest("checkpoint", _file_digest(ckpt), tag)
    else:
        raise FileNotFoundError(
            f"model {spec!r}: no such folder or file (or use logmel, randfeat, pca:DIM:DATA, random:PRESET)"
        )

    def build() -> nn.Module:
        from bestrq2.export import load_encoder

        return load_encoder(path)

    name = (path.resolve().name if path.is_dir() else path.stem) + ("" if layer is None else f"-layer{layer}")
    return ModelSpec(spec, name, key, build, layer)
