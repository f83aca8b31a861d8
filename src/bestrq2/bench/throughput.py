"""Speed benchmark: training throughput, memory and MFU, and inference real-time factor, on this device.

One training step here is a training step of ``bestrq2.training.loop``: the objective prepared by
``bestrq2.training.parallel.prepare_model`` (so ``parallel.activation_checkpointing`` and ``parallel.compile``
act exactly as in training), bf16 autocast on CUDA, backward, gradient clipping, AdamW (fused on
CUDA), and the EMA update of a target encoder. Inputs are noise of the configured crop length (speed
does not depend on content), masks are drawn per step as in training; every figure is a median over
timed steps after warm-up, with the device synchronised. Model FLOPs are counted analytically
(:mod:`bestrq2.bench.flops`) at the mean mask ratio.
"""

from __future__ import annotations

import ctypes
import gc
import statistics
import time

import torch

from bestrq2.bench.devices import PeakMemory, device_name, measure_matmul_tflops, resolve_peak
from bestrq2.bench.flops import inference_flops, step_flops
from bestrq2.config import Config
from bestrq2.export import arch_of, inference_encoder
from bestrq2.masking import mask_generator
from bestrq2.models.layers import num_params
from bestrq2.objectives import build_objective, sample_batch_masks
from bestrq2.training.distributed import DistInfo
from bestrq2.training.optim import build_optimizer
from bestrq2.training.parallel import prepare_model

__all__ = ["TrainStep", "bench_train", "bench_inference", "run_benchmark", "format_report", "device_name", "release"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def num_samples(cfg: Config) -> int:
    return int(round(cfg.data.crop_seconds * cfg.frontend.sample_rate))


class TrainStep:
    """A model and optimiser set up as ``bestrq2.training.loop`` sets them up on one device; ``run(batch)``
    takes one full optimiser step on a noise batch and returns its wall time in seconds."""

    def __init__(self, cfg: Config, device: torch.device):
        self.cfg, self.device = cfg, device
        torch.manual_seed(cfg.train.seed)
        self.core = build_objective(cfg).to(device).train()
        self.model = prepare_model(self.core, cfg.parallel, DistInfo(0, 1, 0, device))
        self.optimizer = build_optimizer(self.core, cfg.optim, device)
        self.bf16 = cfg.train.bf16 and device.type == "cuda"
        self.steps = 0

    def run(self, batch_size: int) -> float:
        cfg, dev = self.cfg, self.device
        S = num_samples(cfg)
        wav = torch.randn(batch_size, S, device=dev) * 0.1
        lengths = torch.full((batch_size,), S, dtype=torch.long)
        masks = sample_batch_masks(cfg, lengths, S, mask_generator(cfg.train.seed, 0, self.steps)).to(dev)
        lengths = lengths.to(dev)
        _sync(dev)
        t = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(wav, lengths, masks)
            out["loss"].backward()
        clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")
        torch.nn.utils.clip_grad_norm_(self.core.parameters(), clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if hasattr(self.core, "update_target"):
            self.core.update_target(self.steps)
        _sync(dev)
        self.steps += 1
        return time.perf_counter() - t


def release(device: torch.device) -> None:
    """Free what the last model left behind (between runs and after an out-of-memory error), compiled
    graphs included (each configuration compiles its own; left over, they would count against
    torch.compile's recompile limit)."""
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    else:
        _malloc_trim()


def _malloc_trim() -> None:
    """Hand freed heap memory back to the OS (glibc), so that the next run's peak RSS starts low."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def bench_train(
    cfg: Config, batch_size: int, steps: int, warmup: int, device: torch.device, peak_tflops: float | None = None
) -> dict[str, float | str | None]:
    release(device)
    memory = PeakMemory(device)
    memory.reset()
    runner = TrainStep(cfg, device)
    times = [runner.run(batch_size) for _ in range(warmup + steps)][warmup:]
    peak = memory.read()
    med = statistics.median(times)
    flops = step_flops(cfg, batch_size, num_samples(cfg))
    ac = cfg.parallel.activation_checkpointing
    out: dict[str, float | str | None] = {
        "step_s": med,
        "clips_per_s": batch_size / med,
        "tokens_per_s": batch_size * flops.tokens_per_clip / med,
        "tokens_per_clip": flops.tokens_per_clip,
        "params_m": num_params(runner.core) / 1e6,
        "peak_memory_bytes": peak,
        "peak_memory_kind": memory.kind,
        "peak_reserved_bytes": memory.reserved(),
        "model_flops_per_step": flops.model,
        "hardware_flops_per_step": flops.hardware(ac),
        "model_tflops": flops.model / med / 1e12,
        "hardware_tflops": flops.hardware(ac) / med / 1e12,
        "mfu": flops.model / med / 1e12 / peak_tflops if peak_tflops else None,
        "hfu": flops.hardware(ac) / med / 1e12 / peak_tflops if peak_tflops else None,
    }
    del runner
    release(device)
    return out


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
    flops = inference_flops(cfg, batch_size, int(seconds * cfg.frontend.sample_rate))
    return {"batch_s": med, "rtf": med / audio_s, "x_realtime": audio_s / med, "encoder_params_m": num_params(enc) / 1e6,
            "model_tflops": flops / med / 1e12 if flops else None}  # fmt: skip


def run_benchmark(
    cfg: Config,
    batch_size: int,
    steps: int = 10,
    warmup: int = 3,
    device: str | None = None,
    infer_seconds: float | None = 60.0,
    peak_tflops: float | None = None,
) -> dict[str, object]:
    """Training (and, unless ``infer_seconds`` is None or 0, inference) figures of one config.
    A CUDA out-of-memory error is reported in ``train["error"]`` instead of raised."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    peak, peak_source = resolve_peak(dev, peak_tflops)
    report: dict[str, object] = {
        "device": device_name(dev),
        "preset": cfg.preset,
        "method": cfg.method,
        "batch_size": batch_size,
        "crop_seconds": cfg.data.crop_seconds,
        "bf16": cfg.train.bf16 and dev.type == "cuda",
        "activation_checkpointing": cfg.parallel.activation_checkpointing,
        "compile": cfg.parallel.compile,
        "peak_tflops": peak,
        "peak_source": peak_source,
        "torch": torch.__version__,
    }
    if dev.type == "cuda":  # the datasheet peak is used; the probe says what this device reaches
        report["probe_tflops"] = measure_matmul_tflops(dev, torch.bfloat16 if cfg.train.bf16 else torch.float32)
    try:
        report["train"] = bench_train(cfg, batch_size, steps, warmup, dev, peak)
    except torch.cuda.OutOfMemoryError:
        report["train"] = {"error": f"out of memory at batch {batch_size}"}
    release(dev)
    if infer_seconds:
        report["infer_seconds"] = infer_seconds
        try:
            report["inference"] = bench_inference(cfg, batch_size, infer_seconds, max(3, steps // 2), dev)
        except torch.cuda.OutOfMemoryError:
            report.pop("infer_seconds")
            report["inference_error"] = f"out of memory at batch {batch_size} x {infer_seconds:g} s"
        release(dev)
    return report


# ----------------------------------------------------------------------------- text output


def _gib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 2**30:.2f} GiB"


def _tf(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def format_report(r: dict) -> str:
    """One run, several lines."""
    t = r["train"]
    lines = [f"device: {r['device']}  torch {r['torch']}  bf16={r['bf16']}  "
             f"activation_checkpointing={r['activation_checkpointing']}  compile={r['compile']}"]  # fmt: skip
    if "error" in t:
        return "\n".join([*lines, f"{r['method']} preset={r['preset']}: {t['error']}"])
    i = r.get("inference")
    at_inference = f", {i['encoder_params_m']:.2f}M at inference" if i else ""
    lines += [
        f"{r['method']} preset={r['preset']}  ({t['params_m']:.2f}M params in training{at_inference})",
        f"training : batch {r['batch_size']} x {r['crop_seconds']:g} s  median step {t['step_s'] * 1000:.1f} ms  "
        f"-> {t['clips_per_s']:.1f} clips/s, {t['tokens_per_s']:.0f} tokens/s ({t['tokens_per_clip']} per clip)",
        f"memory   : {_gib(t['peak_memory_bytes'])} ({t['peak_memory_kind']})",
        f"compute  : {t['model_flops_per_step'] / 1e9:.4g} GFLOP/step (model, analytic) -> {t['model_tflops']:.3f} TFLOP/s, "
        f"MFU {_pct(t['mfu'])} (peak: {_tf(r['peak_tflops'])} TFLOP/s, {r['peak_source']})",
    ]
    if r.get("probe_tflops"):
        lines.append(f"           matmul probe on this device: {r['probe_tflops']:.1f} TFLOP/s")
    if r["activation_checkpointing"]:
        lines.append(f"           hardware FLOPs with recompute: {t['hardware_tflops']:.3f} TFLOP/s, HFU {_pct(t['hfu'])}")
    if "inference_error" in r:
        lines.append(f"inference: {r['inference_error']}")
    if i:
        lines.append(
            f"inference: batch {r['batch_size']} x {r['infer_seconds']:g} s  median {i['batch_s'] * 1000:.1f} ms  "
            f"-> real-time factor {i['rtf']:.5f} ({i['x_realtime']:.0f}x faster than real time)"
        )
        if i.get("model_tflops") is not None:
            frac = f", {_pct(i['model_tflops'] / r['peak_tflops'])} of peak" if r["peak_tflops"] else ""
            lines.append(f"           {i['model_tflops']:.3f} TFLOP/s of model FLOPs{frac}")
    return "\n".join(lines)


def format_table(reports: list[dict]) -> str:
    """Several runs, one Markdown row each."""
    head = ("| method | preset | AC | compile | params | batch | median step | clips/s | tokens/s | peak memory "
            "| GFLOP/step | TFLOP/s | MFU | inference x RT |")  # fmt: skip
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in reports:
        t, i = r["train"], r.get("inference")
        flags = f"| {r['method']} | {r['preset']} | {'on' if r['activation_checkpointing'] else 'off'} | {'on' if r['compile'] else 'off'} "
        if "error" in t:
            rows.append(flags + f"| | {r['batch_size']} | {t['error']} | | | | | | | |")
            continue
        x_rt = f"{i['x_realtime']:.0f}" if i else "-"
        rows.append(
            flags + f"| {t['params_m']:.1f} M | {r['batch_size']} x {r['crop_seconds']:g} s | {t['step_s'] * 1000:.0f} ms "
            f"| {t['clips_per_s']:.1f} | {t['tokens_per_s']:.0f} | {_gib(t['peak_memory_bytes'])} "
            f"| {t['model_flops_per_step'] / 1e9:.4g} | {t['model_tflops']:.3f} | {_pct(t['mfu'])} "
            f"| {x_rt} |"
        )
    return "\n".join(rows)
