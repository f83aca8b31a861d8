"""The device a benchmark runs on: its name, its dense bf16 peak, and the peak memory of a run.

Peaks are NVIDIA's dense (not 2:4-sparse) bf16 Tensor Core figures in TFLOP/s, half of the datasheets'
"with sparsity" numbers; the SXM H100 figure (989.4) is the Hopper whitepaper's. They are matched
against ``torch.cuda.get_device_name`` (e.g. "NVIDIA H100 80GB HBM3" is the SXM part); anything else
(or the CPU) has no known peak, so MFU is reported only with an explicit ``--peak-tflops``.
"""

from __future__ import annotations

import platform
import re
import resource
from pathlib import Path

import torch

PEAK_BF16_TFLOPS: list[tuple[str, str, float]] = [
    # (pattern on the device name, label, dense bf16 TFLOP/s); first match wins, most specific first
    (r"H100.*PCIe", "H100 PCIe", 756.0),
    (r"H100.*NVL", "H100 NVL", 835.0),
    (r"H100", "H100 SXM", 989.4),
    (r"H200.*NVL", "H200 NVL", 835.0),
    (r"H200", "H200", 989.4),
    (r"A100", "A100", 312.0),
    (r"L40S", "L40S", 362.0),
    (r"\bL4\b", "L4", 121.0),
    (r"\bA10\b", "A10", 125.0),
]


def resolve_device(name: str | None) -> str:
    """A ``--device`` argument as torch takes it: 'auto' or nothing is the GPU when there is one, else the CPU."""
    if name in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def peak_bf16_tflops(name: str) -> tuple[float, str] | None:
    """(dense bf16 TFLOP/s, matched label) for a CUDA device name, or None if unknown."""
    for pattern, label, tflops in PEAK_BF16_TFLOPS:
        if re.search(pattern, name):
            return tflops, label
    return None


def measure_matmul_tflops(device: torch.device, dtype: torch.dtype = torch.float32, n: int | None = None,
                          repeats: int = 7) -> float:  # fmt: skip
    """The device's own dense matmul rate at ``dtype`` and the current thread count: the median of
    ``repeats`` n x n x n GEMMs (2 n^3 FLOPs each) after two warm-up ones, in TFLOP/s."""
    import statistics
    import time

    n = n or (8192 if device.type == "cuda" else 1536)
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    times = []
    for i in range(repeats + 2):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= 2:
            times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e12


def resolve_peak(device: torch.device, override: float | None) -> tuple[float | None, str]:
    """The peak used for MFU and where it came from: ``--peak-tflops``, the datasheet table (CUDA), or
    the device's measured fp32 matmul rate (CPU: training and inference run in fp32 there)."""
    if override:
        return override, "--peak-tflops"
    if device.type != "cuda":
        tflops = measure_matmul_tflops(device)
        return tflops, f"measured fp32 1536^3 matmul, {torch.get_num_threads()} threads"
    found = peak_bf16_tflops(device_name(device))
    if found is None:
        return None, f"unknown device {device_name(device)!r} (pass --peak-tflops)"
    return found[0], f"{found[1]} dense bf16 (datasheet)"


class PeakMemory:
    """Peak memory of a stretch of work: CUDA max allocated bytes, or on the CPU the process's peak
    resident set (VmHWM, which Linux lets a process reset; where it cannot, getrusage's lifetime peak)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "CUDA max allocated" if device.type == "cuda" else self._cpu_kind()

    @staticmethod
    def _cpu_kind() -> str:
        return (
            "peak RSS of the process (VmHWM, reset per run)"
            if _can_reset_hwm()
            else "peak RSS of the process since start (getrusage)"
        )

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif _can_reset_hwm():
            Path("/proc/self/clear_refs").write_text("5")

    def read(self) -> int:
        """Bytes."""
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return cpu_peak_rss()

    def reserved(self) -> int | None:
        return int(torch.cuda.max_memory_reserved(self.device)) if self.device.type == "cuda" else None


def cpu_peak_rss() -> int:
    """Peak resident set of this process in bytes (VmHWM, else getrusage's ru_maxrss in KiB on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


_HWM_RESETTABLE: bool | None = None


def _can_reset_hwm() -> bool:
    global _HWM_RESETTABLE
    if _HWM_RESETTABLE is None:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            _HWM_RESETTABLE = True
        except OSError:
            _HWM_RESETTABLE = False
    return _HWM_RESETTABLE
