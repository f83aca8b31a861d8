"""Speed benchmark: training clips/s and inference real-time factor for a preset on this device.

Inputs are noise of the configured crop length (speed does not depend on content); every
figure is a median over timed repeats after warm-up, with the device synchronised.
"""

from __future__ import annotations

import platform
import statistics
import time

import torch

from bestrq2.config import Config
from bestrq2.export import arch_of, inference_encoder
from bestrq2.layers import num_params
from bestrq2.masking import mask_generator
from bestrq2.objectives import build_objective, sample_batch_masks
from bestrq2.optim import build_optimizer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def bench_train(cfg: Config, batch_size: int, steps: int, warmup: int, device: torch.device) -> dict[str, float]:
    torch.manual_seed(0)
    model = build_objective(cfg).to(device).train()
    opt = build_optimizer(model, cfg.optim, device)
    S = int(round(cfg.data.crop_seconds * cfg.frontend.sample_rate))
    wav = torch.randn(batch_size, S, device=device) * 0.1
    lengths = torch.full((batch_size,), S, dtype=torch.long)
    use_bf16 = cfg.train.bf16 and device.type == "cuda"
    times = []
    for i in range(warmup + steps):
        masks = sample_batch_masks(cfg, lengths, S, mask_generator(0, 0, i)).to(device)
        _sync(device)
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            out = model(wav, lengths.to(device), masks)
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if hasattr(model, "update_target"):
            model.update_target(i)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    med = statistics.median(times)
    return {"step_s": med, "clips_per_s": batch_size / med, "params_m": num_params(model) / 1e6}


@torch.inference_mode()
def bench_inference(cfg: Config, batch_size: int, seconds: float, repeats: int, device: torch.device) -> dict[str, float]:
    enc = inference_encoder(arch_of(cfg), cfg.frontend, cfg.encoder, cfg.conformer, "mean").to(device).eval()
    wav = torch.randn(batch_size, int(seconds * cfg.frontend.sample_rate), device=device) * 0.1
    use_bf16 = cfg.train.bf16 and device.type == "cuda"
    times = []
    for i in range(repeats + 2):
        _sync(device)
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            enc(wav)
        _sync(device)
        if i >= 2:
            times.append(time.perf_counter() - t)
    med = statistics.median(times)
    audio_s = batch_size * seconds
    return {"batch_s": med, "rtf": med / audio_s, "x_realtime": audio_s / med, "encoder_params_m": num_params(enc) / 1e6}


def run_benchmark(
    cfg: Config, batch_size: int, steps: int = 10, warmup: int = 3, device: str | None = None, infer_seconds: float = 60.0
) -> dict[str, object]:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    train = bench_train(cfg, batch_size, steps, warmup, dev)
    infer = bench_inference(cfg, batch_size, infer_seconds, max(3, steps // 2), dev)
    return {
        "device": device_name(dev),
        "preset": cfg.preset,
        "method": cfg.method,
        "batch_size": batch_size,
        "crop_seconds": cfg.data.crop_seconds,
        "bf16": cfg.train.bf16 and dev.type == "cuda",
        "infer_seconds": infer_seconds,
        "train": train,
        "inference": infer,
        "torch": torch.__version__,
    }


def format_report(r: dict) -> str:
    t, i = r["train"], r["inference"]
    return "\n".join(
        [
            f"device: {r['device']}  torch {r['torch']}  bf16={r['bf16']}",
            f"{r['method']} preset={r['preset']}  ({t['params_m']:.2f}M params in training, {i['encoder_params_m']:.2f}M at inference)",
            f"training : batch {r['batch_size']} x {r['crop_seconds']:g} s  median step {t['step_s'] * 1000:.1f} ms  "
            f"-> {t['clips_per_s']:.1f} clips/s",
            f"inference: batch {r['batch_size']} x {r['infer_seconds']:g} s  median {i['batch_s'] * 1000:.1f} ms  "
            f"-> real-time factor {i['rtf']:.5f} ({i['x_realtime']:.0f}x faster than real time)",
        ]
    )
