"""Move an export through a size-limited channel: int8 weights per output row, rebuilt to fp32 on arrival.

A lent GPU machine returns at most 16 MiB per file and 64 MiB in all, and a `small` encoder is 86 MB in
fp32. ``pack`` stores every float matrix of an export's ``model.safetensors`` as int8 with one fp32 scale
per output row (symmetric, max-abs), other tensors (norms, biases, scales) in fp32, split over files of
at most ``--max-file-mib``; ``unpack`` writes an ordinary fp32 export from them; ``check`` runs the
original and the rebuilt encoder on the same audio and prints how far apart their features are, so the
rounding is measured where both exist, not assumed.

    python scripts/weights_transport.py pack runs/x/export /out/x --max-file-mib 15
    python scripts/weights_transport.py check runs/x/export /out/x
    python scripts/weights_transport.py unpack /out/x models/x
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

MIN_QUANT_NUMEL = 4096  # smaller tensors stay fp32: they cost nothing to send


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 codes and one fp32 scale per row (dim 0) of a float tensor: w ~ q * scale."""
    rows = w.float().reshape(w.shape[0], -1)  # [R, C]
    scale = rows.abs().amax(dim=1).clamp_min(1e-12) / 127.0  # [R]
    q = torch.round(rows / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.reshape(w.shape), scale


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (q.float().reshape(q.shape[0], -1) * scale[:, None]).reshape(q.shape)


def pack(export: Path, out: Path, max_file_mib: float) -> None:
    state = load_file(str(export / "model.safetensors"))
    out.mkdir(parents=True, exist_ok=True)
    packed: dict[str, torch.Tensor] = {}
    worst = 0.0
    for name, w in state.items():
        if w.is_floating_point() and w.ndim >= 2 and w.numel() >= MIN_QUANT_NUMEL:
            q, scale = quantize_rows(w)
            packed[f"{name}::q"], packed[f"{name}::scale"] = q, scale
            err = (dequantize_rows(q, scale) - w.float()).norm() / w.float().norm().clamp_min(1e-12)
            worst = max(worst, float(err))
        else:
            packed[name] = w.float() if w.is_floating_point() else w
    limit = int(max_file_mib * 2**20)
    parts: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in packed.items():
        nbytes = t.numel() * t.element_size()
        if parts[-1] and size + nbytes > limit:
            parts.append({})
            size = 0
        parts[-1][name] = t.contiguous()
        size += nbytes
    for i, part in enumerate(parts):
        save_file(part, str(out / f"weights-{i:02d}.safetensors"))
    shutil.copy(export / "config.json", out / "config.json")
    total = sum(p.stat().st_size for p in out.glob("weights-*.safetensors"))
    print(f"packed {len(state)} tensors into {len(parts)} files, {total / 2**20:.1f} MiB "
          f"(fp32: {(export / 'model.safetensors').stat().st_size / 2**20:.1f} MiB); "
          f"worst relative weight error {worst:.4f}")  # fmt: skip


def unpack(packdir: Path, export: Path) -> None:
    packed: dict[str, torch.Tensor] = {}
    for f in sorted(packdir.glob("weights-*.safetensors")):
        packed.update(load_file(str(f)))
    if not packed:
        sys.exit(f"no weights-*.safetensors in {packdir}")
    state = {}
    for name, t in packed.items():
        if name.endswith("::scale"):
            continue
        if name.endswith("::q"):
            base = name[: -len("::q")]
            state[base] = dequantize_rows(t, packed[f"{base}::scale"])
        else:
            state[name] = t
    export.mkdir(parents=True, exist_ok=True)
    save_file(state, str(export / "model.safetensors"))
    cfg = json.loads((packdir / "config.json").read_text())
    cfg["weights_transport"] = "int8 per output row, rebuilt to fp32"  # provenance, beside method, step, ...
    (export / "config.json").write_text(json.dumps(cfg, indent=2))
    print(f"unpacked {len(state)} tensors to {export}")


@torch.inference_mode()
def check(export: Path, packdir: Path, seconds: float = 10.0) -> dict[str, float]:
    """Features of the original and the rebuilt encoder on the same audio: cosine of frames and of clip means."""
    import tempfile

    from bestrq2 import load_encoder

    with tempfile.TemporaryDirectory() as tmp:
        unpack(packdir, Path(tmp))
        a, b = load_encoder(str(export)).eval(), load_encoder(tmp).eval()
        g = torch.Generator().manual_seed(0)
        n = int(seconds * a.sampling_rate)
        t = torch.arange(n) / a.sampling_rate
        tones = torch.stack([torch.sin(2 * torch.pi * f * t) * (1 + torch.sin(2 * torch.pi * 0.7 * t)) / 4 for f in (220.0, 1330.0)])
        wav = torch.cat([0.1 * torch.randn(2, n, generator=g), tones])  # [4, n]
        fa, fb = a(wav), b(wav)  # [4, T', D]
    frame_cos = torch.nn.functional.cosine_similarity(fa, fb, dim=-1)  # [4, T']
    clip_cos = torch.nn.functional.cosine_similarity(fa.mean(1), fb.mean(1), dim=-1)
    rel = float((fa - fb).norm() / fa.norm())
    res = {"min_frame_cosine": float(frame_cos.min()), "min_clip_cosine": float(clip_cos.min()), "relative_error": rel}
    print(json.dumps(res))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("export", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--max-file-mib", type=float, default=15.0)
    u = sub.add_parser("unpack")
    u.add_argument("packdir", type=Path)
    u.add_argument("export", type=Path)
    c = sub.add_parser("check")
    c.add_argument("export", type=Path)
    c.add_argument("packdir", type=Path)
    args = ap.parse_args()
    if args.cmd == "pack":
        pack(args.export, args.out, args.max_file_mib)
    elif args.cmd == "unpack":
        unpack(args.packdir, args.export)
    else:
        check(args.export, args.packdir)


if __name__ == "__main__":
    main()
