"""Hugging Face Hub layout: an export folder is a model repository.

A repository holds what ``bestrq2 export`` writes: ``config.json`` (the export's config, which
:func:`bestrq2.load_encoder` rebuilds the module from), ``model.safetensors`` (encoder and frontend
tensors only; nothing is unpickled on load), ``README.md`` (a model card with the configuration and,
when given, the X-ARES-protocol table) and optionally ``model.onnx``.

- ``save_pretrained(encoder, dir)`` / ``encoder.save_pretrained(dir)``: write that folder;
- ``from_pretrained("org/name" | dir)`` / ``bestrq2.load_encoder("org/name")``: read it, a hub id
  through the Hugging Face cache (``HF_HUB_OFFLINE=1`` reads the cache only, ``HF_HUB_CACHE`` moves it);
- ``push_to_hub(dir, "org/name")`` / ``bestrq2 push EXPORT --repo org/name``: upload it.

Downloads and uploads need ``huggingface_hub`` (``pip install 'bestrq2[hub]'``); the layout and the
card do not.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

METHOD_NAMES = {"bestrq2": "BEST-RQ-2", "bestrq-vit": "BEST-RQ ViT", "bestrq-conformer": "BEST-RQ Conformer",
                "audiojepa": "Audio-JEPA"}  # fmt: skip
HUB_FILES = ("config.json", "model.safetensors", "README.md", "model.onnx")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _hf():
    try:
        import huggingface_hub
    except ImportError as e:
        raise RuntimeError(f"hub ids need huggingface_hub: pip install 'bestrq2[hub]' ({e})") from e
    return huggingface_hub


def is_hub_id(name: str | Path) -> bool:
    """``org/name`` that is not an existing local path."""
    return isinstance(name, str) and bool(_HUB_ID.match(name)) and not Path(name).exists()


def resolve(path_or_id: str | Path, revision: str | None = None, cache_dir: str | Path | None = None,
            token: str | bool | None = None) -> Path:  # fmt: skip
    """A local path as it is; a hub id -> the local snapshot folder of its encoder files (downloaded
    into the Hugging Face cache, or read from it when offline)."""
    if not is_hub_id(path_or_id):
        return Path(path_or_id)
    hf = _hf()
    try:
        folder = hf.snapshot_download(
            repo_id=str(path_or_id), revision=revision, cache_dir=cache_dir, token=token,
            allow_patterns=["config.json", "model.safetensors", "README.md"],
        )  # fmt: skip
    except (hf.errors.LocalEntryNotFoundError, hf.errors.OfflineModeIsEnabled) as e:
        raise FileNotFoundError(
            f"{path_or_id}: not a local folder, not in the Hugging Face cache, and the hub cannot be reached ({e})"
        ) from e
    except hf.errors.RepositoryNotFoundError as e:
        raise FileNotFoundError(f"{path_or_id}: no such model repository on the hub ({e})") from e
    folder = Path(folder)
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"{path_or_id}: the repository holds no bestrq2 export (config.json + model.safetensors)")
    return folder


def model_card(meta: dict[str, Any], results: dict[str, Any] | None = None, name: str | None = None) -> str:
    """README.md for an export: front matter for the hub, what goes in and out, how to load it, the
    configuration, and the evaluation table of ``results`` (a ``bestrq2 evaluate`` results.json)."""
    from bestrq2 import __version__

    fe, enc = meta["frontend"], meta["encoder"]
    method = meta.get("method", "unknown")
    name = name or f"{METHOD_NAMES.get(method, method)} audio encoder"
    tags = list(dict.fromkeys(["audio", "self-supervised-learning", "bestrq2", method]))
    pooled = fe["n_mels"] // fe["patch_freq"] > 1
    pooling = f" (`{meta.get('pooling', 'mean')}` pooling of {fe['n_mels'] // fe['patch_freq']} mel blocks)" if pooled else ""
    lines = [
        "---",
        "library_name: bestrq2",
        "pipeline_tag: feature-extraction",
        "tags:",
        *[f"- {t}" for t in tags],
        "---",
        "",
        f"# {name}",
        "",
        f"A frozen audio encoder pretrained with bestrq2 (method `{method}`, "
        f"preset `{meta.get('preset', '?')}`, {meta.get('step', '?')} steps; bestrq2 {meta.get('bestrq2_version', __version__)}).",
        "",
        f"- input: mono float waveform at {meta['sampling_rate']} Hz, any length (processed in "
        f"{fe['chunk_seconds']:g} s chunks)",
        f"- output: one {meta['output_dim']}-d frame every {meta['hop_size_in_ms']:g} ms{pooling}",
        "",
        "## Use",
        "",
        "```python",
        "import torch, bestrq2",
        f'encoder = bestrq2.load_encoder("{name if "/" in name else "PATH_OR_ORG/NAME"}")  # nothing is unpickled',
        f"frames = encoder(torch.randn(2, {meta['sampling_rate'] * 3}))  # [B, T] -> [B, T', {meta['output_dim']}]",
        "```",
        "",
    ]
    if "onnx" in meta:
        lines += ["`model.onnx` runs the same encoder (frontend included) with onnxruntime alone: inputs `wav` "
                  "float32 [B, T] and `lengths` int64 [B], output `frames` [B, T', D].", ""]  # fmt: skip
    lines += [
        "## Configuration",
        "",
        "| part | value |",
        "|---|---|",
        f"| frontend | {fe['n_mels']} log-mel bins, n_fft {fe['n_fft']}, hop {fe['hop_length']} samples, "
        f"{fe['f_min']:g}-{fe['f_max']:g} Hz |",
        f"| patches | {fe['patch_freq']} mels x {fe['patch_time']} frames |",
        f"| encoder | {meta['arch']}: width {enc['width']}, depth {enc['depth']}, {enc['heads']} heads, "
        f"positions {enc.get('positions', '?')}, norm {enc.get('norm', 'layernorm')}, mlp {enc.get('mlp', 'gelu')} |",
        f"| weights | {meta.get('exported_encoder', '?')} |",
        "",
        "The full configuration is `config.json`.",
        "",
    ]
    if results is not None:
        from bestrq2.evaluation.report import markdown

        lines += ["## Evaluation (X-ARES protocol: linear probe and kNN on frozen features)", "",
                  f"Suite: {results.get('suite', {}).get('name', results.get('suite', {}).get('path', '?'))}.", "",
                  markdown(results)]  # fmt: skip
    return "\n".join(lines).rstrip() + "\n"


def write_card(export_dir: str | Path, results: dict[str, Any] | str | Path | None = None, name: str | None = None) -> Path:
    """(Re)write ``export_dir/README.md``; ``results``: a results dict, a results.json or its folder."""
    from bestrq2.evaluation.report import load_results

    export_dir = Path(export_dir)
    meta = json.loads((export_dir / "config.json").read_text())
    if results is not None and not isinstance(results, dict):
        results = load_results(results)
    path = export_dir / "README.md"
    path.write_text(model_card(meta, results, name))
    return path


def save_pretrained(encoder, save_directory: str | Path, results: dict[str, Any] | str | Path | None = None,
                    name: str | None = None) -> Path:  # fmt: skip
    """Write ``encoder`` (a loaded or built bestrq2 encoder) in the hub layout."""
    from bestrq2.export import save_encoder

    out = save_encoder(encoder, save_directory, getattr(encoder, "export_meta", None))
    write_card(out, results, name)
    return out


def from_pretrained(path_or_id: str | Path, device: str = "cpu", pooling: str | None = None, revision: str | None = None):
    """Load an encoder from a hub id or a local folder (the same as :func:`bestrq2.load_encoder`)."""
    from bestrq2.export import load_encoder

    return load_encoder(path_or_id, device=device, pooling=pooling, revision=revision)


def push_to_hub(export_dir: str | Path, repo_id: str, results: dict[str, Any] | str | Path | None = None,
                private: bool | None = None, token: str | None = None,
                commit_message: str = "Upload bestrq2 encoder") -> str:  # fmt: skip
    """Upload an export folder to ``repo_id`` (created if needed); the card is written first if missing or
    when ``results`` are given. Returns the commit URL."""
    export_dir = Path(export_dir)
    for f in ("config.json", "model.safetensors"):
        if not (export_dir / f).is_file():
            raise FileNotFoundError(f"{export_dir} is not an export folder: {f} is missing")
    if results is not None or not (export_dir / "README.md").is_file():
        write_card(export_dir, results, repo_id)
    hf = _hf()
    api = hf.HfApi(token=token)
    repo_id = api.create_repo(repo_id=repo_id, private=private, exist_ok=True).repo_id
    info = api.upload_folder(repo_id=repo_id, folder_path=str(export_dir), allow_patterns=list(HUB_FILES),
                             commit_message=commit_message)  # fmt: skip
    return str(getattr(info, "commit_url", info))


class HubMixin:
    """``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` on the encoder classes."""

    def save_pretrained(self, save_directory: str | Path, results: dict[str, Any] | str | Path | None = None,
                        push_to_hub: bool = False, repo_id: str | None = None, **push_kwargs: Any) -> Path:  # fmt: skip
        """Write the hub layout to ``save_directory`` (and upload it to ``repo_id`` with ``push_to_hub``)."""
        out = save_pretrained(self, save_directory, results, name=repo_id)
        if push_to_hub:
            push_to_hub(out, repo_id or out.name, **push_kwargs)
        return out

    @classmethod
    def from_pretrained(cls, path_or_id: str | Path, device: str = "cpu", pooling: str | None = None,
                        revision: str | None = None):  # fmt: skip
        enc = from_pretrained(path_or_id, device, pooling, revision)
        if not isinstance(enc, cls):
            raise TypeError(f"{path_or_id} holds a {type(enc).__name__}, not a {cls.__name__}")
        return enc

    def push_to_hub(self, repo_id: str, results: dict[str, Any] | str | Path | None = None, **kwargs: Any) -> str:
        """Save to a temporary folder and upload it to ``repo_id``."""
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            out = save_pretrained(self, Path(tmp) / "export", results, name=repo_id)
            return push_to_hub(out, repo_id, **kwargs)
