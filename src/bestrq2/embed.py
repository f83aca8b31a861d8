"""Per-file embeddings from an exported encoder -> one .npz file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bestrq2.data.audio import AudioError, load_audio
from bestrq2.export import load_encoder


def embed_files(
    model_dir: str | Path, paths: list[str | Path], out: str | Path, device: str = "cpu", layer: int | None = None
) -> dict[str, int]:
    """Write ``out`` (.npz) with ``paths`` [N], ``emb_{i}`` [T'_i, D] frames, ``pooled`` [N, D] time means
    and ``hop_size_in_ms``. Unreadable files are reported and left out."""
    encoder = load_encoder(model_dir, device)
    arrays: dict[str, np.ndarray] = {}
    kept, pooled, failed = [], [], []
    for p in tqdm(paths, desc="embed", dynamic_ncols=True):
        try:
            wav = load_audio(p, encoder.sampling_rate, check_silence=False)
        except AudioError as e:
            failed.append(f"{e.path}: {e.reason}")
            continue
        with torch.inference_mode():
            frames = encoder(torch.from_numpy(wav)[None].to(device), layer=layer)[0].float().cpu().numpy()
        arrays[f"emb_{len(kept)}"] = frames
        pooled.append(frames.mean(0))
        kept.append(str(p))
    if not kept:
        raise ValueError("no file could be embedded:\n" + "\n".join(failed))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        out,
        paths=np.array(kept),
        pooled=np.stack(pooled),
        hop_size_in_ms=np.array(encoder.hop_size_in_ms),
        **arrays,
    )
    for f in failed:
        print(f"skipped {f}")
    return {"embedded": len(kept), "skipped": len(failed)}
