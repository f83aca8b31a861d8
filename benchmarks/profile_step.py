"""Where a training step and an inference pass spend their time, by kind of operator (torch.profiler).

    python benchmarks/profile_step.py --preset small --batch-size 16 --steps 3

Runs ``--steps`` profiled training steps of the preset's method after one warm-up step (the same
TrainStep as ``bestrq2 benchmark``), then inference on 10 s clips, and sums each top-level operator's
self CPU time (CUDA time on a GPU) into kinds: matmuls, attention, norms, activations and other
elementwise work, the frontend's FFT, optimiser, copies and the rest. Prints a Markdown table of
shares and the ten most expensive operators of each.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from bestrq2.bench.throughput import TrainStep, device_name
from bestrq2.config import get_preset
from bestrq2.export import arch_of, inference_encoder

KINDS = [  # (kind, substrings of aten operator names); first match wins
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear", "mkldnn", "aten::_convolution", "aten::convolution")),
    ("attention", ("scaled_dot_product", "_flash_attention", "_efficient_attention", "aten::softmax", "aten::_softmax")),
    ("norm", ("layer_norm", "rms_norm", "aten::native_layer_norm", "batch_norm")),
    ("activation", ("gelu", "silu", "aten::sigmoid", "aten::tanh")),
    ("frontend fft", ("fft", "stft", "aten::log10", "aten::abs")),
    ("optimiser", ("Optimizer", "_foreach", "adam")),
    ("copy / layout", ("aten::copy_", "aten::clone", "aten::contiguous", "aten::cat", "aten::index", "aten::gather", "aten::scatter", "aten::to", "aten::_to_copy", "aten::pad", "aten::constant_pad")),
    ("elementwise", ("aten::add", "aten::mul", "aten::sub", "aten::div", "aten::where", "aten::masked_fill", "aten::pow", "aten::sqrt", "aten::rsqrt", "aten::neg", "aten::exp", "aten::clamp", "aten::sum", "aten::mean", "aten::norm", "aten::zero_", "aten::fill_", "aten::argmax", "aten::max", "aten::cross_entropy", "nll_loss", "log_softmax", "aten::rand", "aten::bernoulli", "aten::cos", "aten::sin")),
]  # fmt: skip


def kind_of(name: str) -> str:
    low = name.lower()
    for kind, keys in KINDS:
        if any(k.lower() in low for k in keys):
            return kind
    return "other"


def breakdown(prof: profile, use_cuda: bool) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """Self time (ms) per kind and per operator, over every event (self time never double counts)."""
    per_kind: dict[str, float] = defaultdict(float)
    per_op: dict[str, float] = defaultdict(float)
    for ev in prof.key_averages():
        t = (ev.self_device_time_total if use_cuda else ev.self_cpu_time_total) / 1000.0
        if t <= 0:
            continue
        per_kind[kind_of(ev.key)] += t
        per_op[ev.key] += t
    return dict(per_kind), sorted(per_op.items(), key=lambda kv: -kv[1])[:10]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--method")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--infer-batch", type=int, default=8)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    cfg = get_preset(args.preset)
    if args.method:
        cfg.method = args.method
    cfg.validate()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    step = TrainStep(cfg, dev)
    step.run(args.batch_size)  # warm-up
    with profile(activities=activities) as prof_train:
        wall = [step.run(args.batch_size) for _ in range(args.steps)]
    del step
    enc = inference_encoder(arch_of(cfg), cfg.frontend, cfg.encoder, cfg.conformer, "mean").to(dev).eval()
    wav = torch.randn(args.infer_batch, 10 * cfg.frontend.sample_rate, device=dev) * 0.1
    with torch.inference_mode():
        enc(wav)
        with profile(activities=activities) as prof_infer:
            for _ in range(args.steps):
                enc(wav)
    print(f"device: {device_name(dev)}, torch {torch.__version__}; {cfg.method} preset={args.preset}, "
          f"train batch {args.batch_size} x {cfg.data.crop_seconds:g} s (median step {sorted(wall)[len(wall) // 2]:.2f} s "
          f"under the profiler), inference {args.infer_batch} x 10 s; {args.steps} profiled repeats each\n")  # fmt: skip
    out = {}
    rows = {}
    for label, prof in (("training step", prof_train), ("inference", prof_infer)):
        kinds, top = breakdown(prof, cuda)
        total = sum(kinds.values())
        rows[label] = {k: v / total for k, v in kinds.items()}
        out[label] = {"kinds_ms": kinds, "top_ops_ms": top, "total_ms": total}
    names = [k for k, _ in KINDS] + ["other"]
    print("| kind | " + " | ".join(rows) + " |")
    print("|---|" + "---|" * len(rows))
    for k in names:
        print(f"| {k} | " + " | ".join(f"{100 * rows[r].get(k, 0.0):.1f} %" for r in rows) + " |")
    for label in rows:
        print(f"\n{label}, top operators (self time, ms over {args.steps} repeats):")
        for name, ms in out[label]["top_ops_ms"]:
            print(f"  {ms:9.1f}  {name}  [{kind_of(name)}]")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device_name(dev), "preset": args.preset, "method": cfg.method, **out}, f, indent=1)


if __name__ == "__main__":
    main()
