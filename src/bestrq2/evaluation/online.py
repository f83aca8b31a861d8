"""Online probe during pretraining: kNN accuracy of the current encoder on a small, fixed suite subset.

    probe = OnlineProbe.from_config(cfg)            # reads the clips once, into memory
    scores = probe(core.encoder, core.frontend)      # {"probe_knn": mean, "probe_knn/<task>": ..., ...}

The subset: for each clip task of ``train.probe_suite`` (``train.probe_tasks``, default all), at most
``train.probe_clips`` train and as many test clips, drawn with a fixed seed per (task, split), so every
probe of every run sees the same clips. A call wraps the training encoder (the same weights, no copy) in
the inference module (:func:`bestrq2.export.inference_encoder`, concat pooling), embeds the clips in eval
mode under ``torch.no_grad``, takes each clip's mean frame and scores kNN exactly as ``evaluate`` (k = 10,
cosine, softmax(sim / 0.07) votes); a ViT's mean-pooled features (the mean of the concat feature's
frequency blocks) are scored too, as ``probe_knn_meanpool``. Every module's train/eval mode and the
global RNG states are restored afterwards, so a probed run trains exactly like an unprobed one.
"""

from __future__ import annotations

import dataclasses
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from bestrq2.config import Config, ConformerConfig, EncoderConfig, FrontendConfig
from bestrq2.data.audio import AudioError, load_audio
from bestrq2.evaluation.embeddings import length_batches
from bestrq2.evaluation.knn import knn_accuracy
from bestrq2.evaluation.tasks import load_suite

PREFIX = "probe_knn"
SUBSET_SEED = 0
"""Seed of the clip subset (fixed: runs with different training seeds probe the same clips)."""


class OnlineProbe:
    """kNN accuracy of an encoder on a fixed subset of a suite's clip tasks, its audio held in memory."""

    def __init__(
        self,
        suite: str | Path,
        frontend: FrontendConfig,
        encoder: EncoderConfig,
        *,
        arch: str = "vit",
        conformer: ConformerConfig | None = None,
        tasks: tuple[str, ...] | list[str] = (),
        max_clips: int = 300,
        k: int = 10,
        temperature: float = 0.07,
        batch_seconds: float = 60.0,
    ):
        self.frontend_cfg, self.encoder_cfg, self.arch, self.conformer_cfg = (
            frontend,
            encoder,
            arch,
            conformer,
        )
        self.k, self.temperature = k, temperature
        loaded = load_suite(suite, list(tasks) or None)
        frame = [t.name for t in loaded.tasks if t.kind != "clip"]
        if tasks and frame:
            raise ValueError(f"online probe: {frame} are frame tasks; it scores clip tasks (kNN) only")
        self.skipped: dict[str, str] = {}
        chosen: dict[str, dict[str, list]] = {}
        for task in loaded.tasks:
            if task.kind != "clip":
                continue
            picked = {}
            for split in ("train", "test"):
                clips = task.splits.get(split, [])
                if len(clips) > max_clips:
                    rng = np.random.default_rng([SUBSET_SEED, zlib.crc32(f"{task.name}/{split}".encode())])
                    clips = [
                        clips[i] for i in sorted(rng.choice(len(clips), max_clips, replace=False).tolist())
                    ]
                picked[split] = clips
            if not picked["train"] or not picked["test"]:
                self.skipped[task.name] = "needs train and test clips"
                continue
            chosen[task.name] = picked | {"classes": task.classes}  # type: ignore[dict-item]
        # every distinct clip once, decoded once
        paths = sorted({c.path for t in chosen.values() for s in ("train", "test") for c in t[s]})
        sr = frontend.sample_rate
        wavs: dict[str, np.ndarray] = {}
        for p in paths:
            try:
                wavs[p] = load_audio(loaded.root / p, sr, check_silence=False)
            except AudioError as e:
                self.skipped[f"clip {p}"] = e.reason
        order = sorted(wavs)
        index = {p: i for i, p in enumerate(order)}
        self.num_clips = len(order)
        self.tasks: dict[str, dict[str, Tensor | int]] = {}
        for name, t in chosen.items():
            ids = {c: i for i, c in enumerate(t["classes"])}
            entry: dict[str, Tensor | int] = {"classes": len(t["classes"])}
            for split in ("train", "test"):
                kept = [c for c in t[split] if c.path in index]
                entry[f"{split}_idx"] = torch.tensor([index[c.path] for c in kept], dtype=torch.long)
                entry[f"{split}_y"] = torch.tensor([ids[c.label] for c in kept], dtype=torch.long)
            if len(entry["train_idx"]) and len(entry["test_idx"]):  # type: ignore[arg-type]
                self.tasks[name] = entry
            else:
                self.skipped[name] = "no readable train or test clip"
        if not self.tasks:
            raise ValueError(
                f"online probe: no clip task with train and test clips in {suite} ({self.skipped})"
            )
        # batches of similar length, padded once here
        lengths = [len(wavs[p]) for p in order]
        self.batches: list[tuple[Tensor, Tensor, Tensor]] = []
        for b in length_batches(lengths, int(batch_seconds * sr)):
            lens = torch.tensor([lengths[i] for i in b], dtype=torch.long)
            x = torch.zeros(len(b), int(lens.max()))  # [B, T]
            for r, i in enumerate(b):
                x[r, : lengths[i]] = torch.from_numpy(wavs[order[i]])
            self.batches.append((x, lens, torch.tensor(b, dtype=torch.long)))
        self.seconds = sum(lengths) / sr
        self._view: tuple[nn.Module, nn.Module | None, nn.Module] | None = None

    @classmethod
    def from_config(cls, cfg: Config) -> OnlineProbe:
        """The probe a run's config asks for (``train.probe_suite``, ``probe_tasks``, ``probe_clips``)."""
        from bestrq2.export import arch_of

        tc = cfg.train
        return cls(
            tc.probe_suite, cfg.frontend, cfg.encoder, arch=arch_of(cfg), conformer=cfg.conformer,
            tasks=tc.probe_tasks, max_clips=tc.probe_clips,
        )  # fmt: skip

    @property
    def meanpool(self) -> bool:
        """Whether the mean-pooled (over frequency blocks) kNN is scored too (ViTs with several blocks)."""
        return self.arch == "vit" and self.frontend_cfg.freq_patches > 1

    @property
    def columns(self) -> list[str]:
        """Every key a call returns, in order (the run log's extra columns)."""
        names = [PREFIX] + [f"{PREFIX}/{t}" for t in self.tasks]
        if self.meanpool:
            names += [f"{PREFIX}_meanpool"] + [f"{PREFIX}_meanpool/{t}" for t in self.tasks]
        return names + ["probe_s"]

    def describe(self) -> str:
        n = {t: int(len(e["train_idx"])) for t, e in self.tasks.items()}  # type: ignore[arg-type]
        return (f"online probe: {len(self.tasks)} tasks, {self.num_clips} clips ({self.seconds / 60:.1f} min of audio) "
                f"in memory; train clips per task {n}")  # fmt: skip

    def view(self, encoder: nn.Module, frontend: nn.Module | None = None) -> nn.Module:
        """The inference module around ``encoder`` (its weights, shared, no copy): the module is built
        with a one-block placeholder encoder (cheap; the global RNG untouched), which is then swapped for
        ``encoder``, and its frontend for the training one when given; reused while those stay the same."""
        if self._view is not None and self._view[0] is encoder and self._view[1] is frontend:
            return self._view[2]
        from bestrq2.export import inference_encoder

        device = next(encoder.parameters()).device
        placeholder = dataclasses.replace(self.encoder_cfg, depth=1)
        with torch.random.fork_rng(devices=[]):
            view = inference_encoder(self.arch, self.frontend_cfg, placeholder, self.conformer_cfg, "concat")
        view.encoder = encoder
        view.encoder_cfg = self.encoder_cfg
        view.frontend = frontend if frontend is not None else view.frontend.to(device)
        self._view = (encoder, frontend, view)
        return view

    def embed(self, encoder: nn.Module, frontend: nn.Module | None = None) -> Tensor:
        """Clip-mean features [num_clips, D] of the subset (eval mode, no_grad; modes and RNG restored)."""
        view = self.view(encoder, frontend)
        device = next(encoder.parameters()).device
        modes = [(m, m.training) for m in view.modules()]
        cuda = (
            [device.index if device.index is not None else torch.cuda.current_device()]
            if device.type == "cuda"
            else []
        )
        feats = torch.zeros(self.num_clips, int(view.output_dim))
        try:
            with torch.random.fork_rng(devices=cuda), torch.no_grad():
                view.eval()
                for x, lens, idx in self.batches:
                    y = view(x.to(device), lens.to(device)).float()  # [B, T', D]
                    n = view.output_lengths(lens).to(device)  # [B]
                    keep = (torch.arange(y.shape[1], device=device)[None] < n[:, None]).float()  # [B, T']
                    feats[idx] = ((y * keep[..., None]).sum(1) / n[:, None].float()).cpu()
        finally:
            for m, mode in modes:
                m.training = mode
        return feats

    def score(self, feats: Tensor, prefix: str = PREFIX) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, e in self.tasks.items():
            tr, te = e["train_idx"], e["test_idx"]
            out[f"{prefix}/{name}"] = knn_accuracy(
                feats[tr],
                e["train_y"],
                feats[te],
                e["test_y"],
                int(e["classes"]),
                self.k,
                self.temperature,  # type: ignore[index, arg-type]
            )
        return {prefix: float(np.mean(list(out.values())))} | out

    def __call__(self, encoder: nn.Module, frontend: nn.Module | None = None) -> dict[str, float]:
        """kNN accuracy per task and their (unweighted) mean, concat pooling (and mean pooling for a ViT)."""
        t0 = time.perf_counter()
        feats = self.embed(encoder, frontend)
        out = self.score(feats)
        if self.meanpool:
            fb = self.frontend_cfg.freq_patches
            out |= self.score(feats.reshape(len(feats), fb, -1).mean(1), f"{PREFIX}_meanpool")
        out["probe_s"] = time.perf_counter() - t0
        return out

    def line(self, step: int, scores: dict[str, float]) -> str:
        """One line for the console."""
        tasks = " ".join(f"{t} {scores[f'{PREFIX}/{t}']:.3f}" for t in self.tasks)
        mean = f" | mean-pooled {scores[PREFIX + '_meanpool']:.3f}" if self.meanpool else ""
        return f"probe step {step}: kNN {scores[PREFIX]:.3f} (concat){mean} | {tasks} ({scores['probe_s']:.1f} s)"
