"""The explicit pretraining loop (plain PyTorch; one process, or many under torchrun).

    step:  for each accumulation micro-batch: frontend + masks -> objective -> loss.backward()
           all-reduced loss check (non-finite: skip the update) -> clip -> AdamW -> schedule
           every ckpt_every steps and at the end: atomic checkpoint (model, optimiser, step,
           RNG states of every rank, data position, config)

Parallelism is applied from outside the model (:mod:`bestrq2.training.parallel`: DDP or FSDP2 when world > 1,
activation checkpointing, torch.compile). Everything random is seeded: model init by ``train.seed``;
masks by (seed, micro-step, slot in the global batch); data crops by (seed, epoch, index); drop-path by
per-rank torch RNG states saved in the checkpoint. So ``--resume`` continues exactly where an
interrupted run stopped, and the same global batch on 1 or N ranks takes the same steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from bestrq2.config import Config, ConfigError
from bestrq2.data.files import build_loader, list_audio
from bestrq2.data.shard_reader import build_shard_loader, counted_shards
from bestrq2.data.shards import is_shard_source
from bestrq2.frontend import token_lengths
from bestrq2.masking import mask_generator, repeat_slots, slot_generators
from bestrq2.mixing import sample_mix
from bestrq2.models.layers import num_params
from bestrq2.objectives import build_objective, sample_batch_masks
from bestrq2.quantizer import code_usage
from bestrq2.training.checkpoint import (
    atomic_save,
    checkpoint_path,
    load_checkpoint,
    rng_state,
    set_rng_state,
)
from bestrq2.training.distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_mean,
    all_reduce_sum,
    barrier,
    cleanup,
    init_distributed,
    on_main,
)
from bestrq2.training.logs import RunLogger
from bestrq2.training.optim import build_optimizer, set_lr
from bestrq2.training.parallel import (
    full_state,
    grad_norm_value,
    load_optimizer_state,
    no_gradient_sync,
    params_checksum,
    prepare_model,
)


@dataclass
class TrainResult:
    step: int
    run_dir: Path
    last_loss: float
    stopped: bool = False
    """Stopped early by SIGTERM / SIGINT (on any rank), with a checkpoint to resume from."""


class _StopFlag:
    """Set by SIGTERM / SIGINT (e.g. a cluster's pre-emption notice): save and exit cleanly."""

    def __init__(self) -> None:
        self.set = False
        self._old: dict[int, object] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread
                pass
        return self

    def _handler(self, signum, frame) -> None:  # noqa: ANN001
        self.set = True

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def _workers_stopped(batches: object) -> Iterator[None]:
    """Shut the loader's worker processes down however the loop ends. They ignore SIGTERM (the trainer
    owns it), so a live iterator left to the interpreter's exit would wait on them for ever."""
    try:
        yield
    finally:
        shutdown = getattr(batches, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        for w in getattr(batches, "_workers", []):  # stuck on I/O past the shutdown: SIGKILL
            if w.is_alive():
                w.kill()


DATA_FILE = "data.json"


def recorded_data(run_dir: str | Path) -> str:
    """The data source a run was started on (``RUN/data.json``), for resuming without ``--data``."""
    f = Path(run_dir) / DATA_FILE
    if not f.is_file():
        raise FileNotFoundError(f"{run_dir} records no data source ({DATA_FILE}): pass --data")
    return json.loads(f.read_text())["source"]


def _config_changes(saved: Config, given: Config) -> str:
    """'section.field=given (run: saved)' for every setting in which ``given`` differs from the run's config."""

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    a, b = flat(saved.to_dict()), flat(given.to_dict())
    return ", ".join(f"{k}={b.get(k)!r} (run: {a.get(k)!r})" for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k))


def _write_text(path: Path, text: str) -> None:
    """Write beside ``path``, then rename over it: a crash leaves the old file or the new one, never half of one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _record_data(run_dir: Path, data: Path, info: DistInfo) -> None:
    if not info.is_main:
        return
    source = str(data)  # resolved by pretrain() when it is a local path; shard URLs stay as given
    f = run_dir / DATA_FILE
    if f.is_file() and (old := json.loads(f.read_text())["source"]) != source:
        print(f"note: {run_dir} was started on {old}; continuing on {source}")
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_text(f, json.dumps({"source": source}, indent=1))


def pretrain(
    cfg: Config,
    data: str | Path | None,
    run_dir: str | Path,
    resume: bool = False,
    stop_after: int | None = None,
    device: str | None = None,
    progress: bool = True,
    tensorboard: bool = True,
    probe_factory: ProbeFactory | None = None,
) -> TrainResult:
    """Pretrain ``cfg.method`` on the audio in ``data``; write checkpoints and logs to ``run_dir``.
    ``data=None`` resumes on the source the run recorded (``RUN/data.json``).

    ``probe_factory(cfg)`` builds the online probe that ``train.probe_every`` / ``train.probe_suite`` ask
    for (``bestrq2.evaluation.online.OnlineProbe.from_config``; the ``bestrq2 pretrain`` command passes
    it: training does not import the evaluation package)."""
    data = Path(recorded_data(run_dir) if data is None else data)
    if data.exists():  # one spelling of every file's path, whatever the working folder: skipped files stay keyed alike on resume
        data = data.resolve()
    info = init_distributed(device)
    finished = False
    try:
        result = _pretrain(cfg, data, Path(run_dir), resume, stop_after, info, progress, tensorboard, probe_factory)
        finished = True
        return result
    finally:
        cleanup(info, finished)


@dataclass
class _Run:
    """What set-up hands the loop: the resolved config, the model (plain and wrapped), the optimiser,
    the data, and where to start."""

    cfg: Config
    core: torch.nn.Module  # the plain objective: EMA updates and checkpoints go through it
    model: torch.nn.Module  # the same, wrapped for DDP / FSDP2 / compile
    optimizer: torch.optim.Optimizer
    step: int
    position: tuple[int, int]  # (epoch, next micro-batch) of the data stream
    files: list[Path]
    shards: list
    micro: int  # examples per micro-batch on this rank
    use_bf16: bool
    resumed: bool
    elapsed: float = 0.0  # training seconds of the steps before this part of the run (a resume's checkpoint)


def _set_up(cfg: Config, data: Path, run_dir: Path, resume: bool, info: DistInfo) -> _Run:
    """Resolve the config (the saved one on resume), list the data once, build and wrap the model and the
    optimiser, and restore their state and the RNGs from the checkpoint when resuming."""
    if cfg.data.num_workers < 0:  # auto: resolved for this device, and saved as resolved
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, num_workers=cfg.data.workers_on(info.device.type)))
    ckpt = None
    ckpt_file = checkpoint_path(run_dir)
    if ckpt_file.exists():
        if not resume:
            raise FileExistsError(f"{run_dir} already holds a checkpoint: pass --resume to continue it, or another --out")
        ckpt = load_checkpoint(ckpt_file)
        saved = Config.from_dict(ckpt["config"])
        saved.parallel = cfg.parallel  # how to run may change on resume; what to compute may not
        if info.is_main and saved != cfg:
            ignored = _config_changes(saved, cfg)
            print(f"resuming {run_dir}: using the run's saved config; ignored: {ignored} (only parallel.* may change "
                  "on resume: the learning-rate schedule, the model and the data stream are the run's; for more steps "
                  "start a new run with a larger train.max_steps)")  # fmt: skip
        cfg = saved
    elif resume and info.is_main:
        print(f"note: no checkpoint in {run_dir}: starting a new run")
    cfg.validate()
    tc = cfg.train
    per_rank = tc.batch_size // info.world
    if tc.batch_size % (info.world * tc.accum_steps):
        raise ConfigError(
            f"train.batch_size {tc.batch_size} must divide by world size {info.world} x accum_steps {tc.accum_steps}"
        )
    sharded = is_shard_source(str(data))
    # the data are listed (files) or counted (shards) once, on rank 0, not once per rank
    if sharded:
        files, shards = [], on_main(lambda: counted_shards(str(data)), info)
    else:
        files, shards = on_main(lambda: list_audio(data, cfg.data.extensions), info), []
    _record_data(run_dir, data, info)

    torch.manual_seed(tc.seed)  # identical initial weights on every rank
    core = build_objective(cfg).to(info.device)
    step, position = 0, (0, 0)
    if ckpt is not None:
        core.load_state_dict(ckpt["model"])
    use_bf16 = tc.bf16 and info.device.type == "cuda"
    model = prepare_model(core, cfg.parallel, info, use_bf16)  # `core` stays the plain handle (EMA, checkpoints)
    optimizer = build_optimizer(core, cfg.optim, info.device)  # after sharding: FSDP2 parameters are DTensors
    if ckpt is not None:
        load_optimizer_state(core, optimizer, ckpt["optimizer"])
        step, position = int(ckpt["step"]), tuple(ckpt["data_position"])
        rngs = ckpt["rng"]
        if len(rngs) == info.world:
            set_rng_state(rngs[info.rank])
        if ckpt.get("world_size", info.world) != info.world and info.is_main:
            # files: data and masks do not depend on the split; shards: each rank's stream does
            what = "the shard streams restart from other positions" if sharded else "drop-path draws differ"
            print(f"warning: resuming a run made with {ckpt['world_size']} ranks on {info.world}: {what}")
    else:
        torch.manual_seed(tc.seed * 1000 + info.rank + 1)  # per-rank stream for drop-path
    micro = per_rank // tc.accum_steps
    if cfg.method == "bestrq2" and cfg.predictor.contrast_weight > 0 and micro < 2:
        raise ConfigError(
            f"predictor.contrast_weight needs >= 2 clips per micro-batch (the other clips are its negatives); "
            f"batch {tc.batch_size} over {info.world} rank(s) x {tc.accum_steps} accumulation steps gives {micro}"
        )
    elapsed = float(ckpt.get("elapsed_s", 0.0)) if ckpt is not None else 0.0
    return _Run(cfg, core, model, optimizer, step, position, files, shards, micro, use_bf16, ckpt is not None, elapsed)


def _save(run: _Run, run_dir: Path, at_step: int, pos: tuple[int, int], info: DistInfo, elapsed: float = 0.0) -> None:
    """Write the full-state checkpoint atomically (a collective: every rank calls it)."""
    rngs = all_gather_objects(rng_state(), info)
    sums = params_checksum(run.core, info)  # replicas must hold the same weights; a divergence is a bug
    if sums and max(sums) - min(sums) > 1e-6 * (1 + abs(sums[0])):
        raise RuntimeError(f"ranks disagree on the weights at step {at_step}: checksums {sums}")
    model_state, optim_state = full_state(run.core, run.optimizer)  # a collective under FSDP2
    if info.is_main:
        atomic_save(
            {
                "config": run.cfg.to_dict(),
                "model": model_state,
                "optimizer": optim_state,
                "step": at_step,
                "data_position": list(pos),
                "rng": rngs,
                "world_size": info.world,
                "elapsed_s": elapsed,  # training seconds up to this step, over every part of a resumed run
            },
            checkpoint_path(run_dir),
        )
    barrier(info)


def _aux_losses(cfg: Config) -> list[str]:
    """The log columns of a two-step run's optional extra loss terms that are switched on."""
    if cfg.method != "bestrq2":
        return []
    pc = cfg.predictor
    terms = {"clip_loss": pc.clip_weight, "contrast_loss": pc.contrast_weight, "regress_loss": pc.regress_weight}
    cols = [col for col, weight in terms.items() if weight > 0]
    return cols + (["code_loss"] if pc.code_weight != 1.0 else [])


SKIPPED_FILES = "skipped_files.txt"


def _read_skipped(run_dir: Path) -> dict[str, str]:
    """The files an earlier part of a resumed run skipped (``RUN/skipped_files.txt``), path -> reason."""
    path = run_dir / SKIPPED_FILES
    if not path.is_file():
        return {}
    return dict(line.split("\t", 1) if "\t" in line else (line, "") for line in path.read_text().splitlines() if line)


def _record_skipped(run_dir: Path, bad_files: dict[str, str], info: DistInfo) -> dict[str, str]:
    """Every rank's skipped files, merged (a collective: every rank calls it at the same step); the main rank
    rewrites ``RUN/skipped_files.txt``, one 'file<TAB>reason' line each, so a crash loses none of them."""
    merged = {path: why for rank_files in all_gather_objects(bad_files, info) for path, why in rank_files.items()}
    if info.is_main and merged:
        _write_text(run_dir / SKIPPED_FILES, "".join(f"{path}\t{why}\n" for path, why in sorted(merged.items())))
    return merged


def _skipped_summary(bad_files: dict[str, str]) -> str:
    """Counts by kind of failure (the reason before any detail in brackets): one short line even when a corpus
    has thousands of corrupt files."""
    kinds = Counter(why.split(" (", 1)[0] for why in bad_files.values())
    return f"skipped {len(bad_files)} unusable files ({', '.join(f'{k}: {n}' for k, n in kinds.most_common())})"


def _read_step(run: _Run, batches: Iterator, slots: list[int], info: DistInfo, bad_files: dict[str, str]):
    """Read and mask every micro-batch of the step first: the loss is a mean over all real masked patches
    of the global batch, so each micro-batch weighs by its count (one tiny all-reduce). With masks keyed
    by slot, the step does not depend on how the global batch is split over ranks.
    Returns [(batch, masks, weight)]."""
    cfg, tc = run.cfg, run.cfg.train
    micro_batches, counts = [], torch.zeros(tc.accum_steps, dtype=torch.float64)
    for k in range(tc.accum_steps):
        batch = next(batches)
        for path, reason in batch["skipped"]:
            bad_files.setdefault(path, reason)
        micro_step = run.step * tc.accum_steps + k
        gen = mask_generator(tc.seed, 0, micro_step)
        rows = slot_generators(tc.seed, repeat_slots(slots, cfg.mask.repeats, run.micro * info.world), micro_step)
        masks = sample_batch_masks(cfg, batch["lengths"], batch["wav"].shape[1], gen, rows)
        if cfg.mix.prob > 0:  # drawn after the masks, from repeat 0's generators (one per clip)
            batch["mix"] = sample_mix(cfg.mix, token_lengths(cfg.frontend, batch["lengths"]), rows[: len(batch["lengths"])])
        counts[k] = masks.num_scored
        micro_batches.append((batch, masks))
    total = counts.sum().to(torch.float32).to(info.device, non_blocking=True)  # a blocking copy would sync
    total = all_reduce_sum(total, info).clamp(min=1.0)
    # x world: DDP / FSDP average gradients over ranks
    return [(b, m, float(counts[k]) * info.world / total) for k, (b, m) in enumerate(micro_batches)]


def _forward_backward(run: _Run, micro_batches: list, stop: _StopFlag, info: DistInfo) -> tuple[float, float, bool, dict]:
    """Forward and backward every micro-batch (gradients synchronised on the last one); returns the
    global-batch loss and accuracy, whether any rank asked to stop, and the last micro-batch's outputs."""
    tc = run.cfg.train
    stats = torch.zeros(3, device=info.device)  # loss, acc, stop flag
    for k, (batch, masks, weight) in enumerate(micro_batches):
        wav = batch["wav"].to(info.device, non_blocking=True)  # pinned by the loader on CUDA
        lengths = batch["lengths"].to(info.device, non_blocking=True)
        sync = no_gradient_sync(run.model, run.cfg.parallel, info, skip=k < tc.accum_steps - 1)
        with sync, torch.autocast(info.device.type, dtype=torch.bfloat16, enabled=run.use_bf16):
            extra = {"mix": batch["mix"].to(info.device)} if "mix" in batch else {}
            out = run.model(wav, lengths, masks.to(info.device), **extra)
            (out["loss"] * weight).backward()
        stats[0] += out["loss"].detach() * weight
        stats[1] += out["acc"] * weight
    stats[2] = float(stop.set)  # read after the backward pass: a signal during it stops this step
    stats = all_reduce_mean(stats, info)
    return float(stats[0]), float(stats[1]), bool(stats[2] > 0), out


ProbeFactory = Callable[[Config], Callable[..., dict[str, float]]]
"""Config -> online probe: ``probe(encoder, frontend) -> {name: value}``, with ``.columns`` (the names)
and ``.line(step, scores)`` (a console line); see ``bestrq2.evaluation.online.OnlineProbe``."""


class _Prober:
    """The online probe's side of the loop: on rank 0 only (with FSDP2 every rank first gathers the
    encoder's full weights into a plain copy on rank 0). Its time is kept out of ``clips_per_s``."""

    def __init__(self, run: _Run, factory: ProbeFactory | None, info: DistInfo):
        tc = run.cfg.train
        self.every = tc.probe_every if tc.probe_suite else 0
        self.run, self.info, self.probe, self.copy = run, info, None, None
        self.seconds = 0.0  # spent probing since the last log row
        if self.every and factory is None:
            raise ConfigError(
                "train.probe_every needs an online probe: run `bestrq2 pretrain`, or pass "
                "probe_factory=bestrq2.evaluation.online.OnlineProbe.from_config to pretrain()"
            )
        if self.every and info.is_main:
            self.probe = factory(run.cfg)
            describe = getattr(self.probe, "describe", None)
            if describe is not None:
                print(describe())

    @property
    def columns(self) -> list[str]:
        return list(getattr(self.probe, "columns", []))

    def due(self, step: int, end: int) -> bool:
        return bool(self.every) and (step % self.every == 0 or step == end)

    def __call__(self, step: int) -> dict[str, float] | None:
        """Probe the current encoder (rank 0 gets the scores; the others None)."""
        t0 = time.time()
        core = self.run.core
        encoder = core.encoder
        if any(hasattr(p, "full_tensor") for p in encoder.parameters()):  # FSDP2 shards: a collective
            state = {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in encoder.state_dict().items()}
            if self.info.is_main:
                if self.copy is None:
                    with torch.random.fork_rng(devices=[]):
                        bare = dataclasses.replace(self.run.cfg, quantizer=dataclasses.replace(self.run.cfg.quantizer, teacher=""))
                        self.copy = build_objective(bare).encoder.to(self.info.device)  # no teacher to load
                self.copy.load_state_dict(state)
            encoder = self.copy
        scores = None
        if self.info.is_main:
            scores = self.probe(encoder, core.frontend)
            tqdm.write(self.probe.line(step, scores) if hasattr(self.probe, "line") else f"probe step {step}: {scores}")
        self.seconds += time.time() - t0
        return scores


def _pretrain(
    cfg: Config,
    data: Path,
    run_dir: Path,
    resume: bool,
    stop_after: int | None,
    info: DistInfo,
    progress: bool,
    tensorboard: bool,
    probe_factory: ProbeFactory | None = None,
) -> TrainResult:
    run = _set_up(cfg, data, run_dir, resume, info)
    cfg, tc, core, optimizer = run.cfg, run.cfg.train, run.core, run.optimizer
    sharded = bool(run.shards)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(cfg.to_json())
        print(
            f"bestrq2: {cfg.method} preset={cfg.preset} encoder={num_params(core.encoder) / 1e6:.2f}M "
            f"total={num_params(core) / 1e6:.2f}M params | {'shards ' + str(data) if sharded else str(len(run.files)) + ' files'} "
            f"({cfg.data.num_workers or 'no'} loader worker{'' if cfg.data.num_workers == 1 else 's'}) "
            f"| world={info.world} {cfg.parallel.strategy if info.enabled else ''} "
            f"batch={tc.batch_size} (micro {run.micro} x accum {tc.accum_steps}) | device={info.device} | step {run.step}/{tc.max_steps}"
        )
    prober = _Prober(run, probe_factory, info)
    aux_cols = _aux_losses(cfg)
    logger = RunLogger(run_dir, run.step, tensorboard, [*aux_cols, *prober.columns]) if info.is_main else None

    end = tc.max_steps if stop_after is None else min(tc.max_steps, stop_after)
    if prober.every and run.step == 0:  # the curve starts from the random init
        scores = prober(0)
        if logger and scores is not None:
            logger.log({"step": 0, **scores})
        prober.seconds = 0.0
    if run.step >= end:
        if not run.resumed:  # --max-steps 0: a random-init checkpoint (a baseline)
            _save(run, run_dir, 0, run.position, info)
        if logger:
            logger.close()
        return TrainResult(run.step, run_dir, float("nan"))

    where = (cfg.data, cfg.frontend.sample_rate, run.micro, info.rank, info.world, tc.seed, run.position)
    pin = info.device.type == "cuda"
    if sharded:
        loader = build_shard_loader(run.shards, *where, pin_memory=pin)
    else:
        loader = build_loader(run.files, *where, pin_memory=pin)
    batches = iter(loader)
    bad_files = _read_skipped(run_dir) if info.is_main and run.resumed else {}  # path -> why it was skipped (this rank)
    window: dict[str, float] = Counter()
    bad_steps, last_loss, stop_now = 0, float("nan"), False
    slots = [info.rank + i * info.world for i in range(run.micro)]  # this rank's examples in the global batch
    t_log = time.time()
    t0 = t_log - run.elapsed  # elapsed_s counts the whole run, not only this part of it
    bar = tqdm(total=end, initial=run.step, disable=not (progress and info.is_main), dynamic_ncols=True, desc="pretrain")
    with _StopFlag() as stop, _workers_stopped(batches):
        while run.step < end:
            run.model.train()
            lr = set_lr(optimizer, run.step, tc.max_steps, cfg.optim)
            micro_batches = _read_step(run, batches, slots, info, bad_files)
            loss, acc, stop_now, out = _forward_backward(run, micro_batches, stop, info)
            last_batch, masks, _ = micro_batches[-1]
            run.position = (last_batch["position"][0], last_batch["position"][1] + 1)  # next micro-batch to read
            clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")
            grad_norm = grad_norm_value(torch.nn.utils.clip_grad_norm_(core.parameters(), clip))
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                optimizer.zero_grad(set_to_none=True)
                bad_steps += 1
                if info.is_main:
                    tqdm.write(f"step {run.step}: non-finite loss or gradient, update skipped ({bad_steps} in a row)")
                if bad_steps >= tc.max_bad_steps:
                    raise FloatingPointError(f"{bad_steps} consecutive non-finite steps; stopping (last checkpoint kept)")
                continue
            bad_steps = 0
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if hasattr(core, "update_target"):  # an EMA teacher (audiojepa) follows the updated weights
                core.update_target(run.step)
            run.step += 1
            step = run.step
            last_loss = loss
            window["loss"] += loss
            window["acc"] += acc
            for col in aux_cols:  # the optional extra terms, last micro-batch, this rank
                window[col] += out[col]  # a tensor: read at the log step only
            window["n"] += 1
            window["crop_redraws"] += sum(b.get("crop_redraws", 0) for b, _, _ in micro_batches)
            if info.is_main:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.3f}")
            probed = prober(step) if prober.due(step, end) and not stop_now else None
            if step % tc.log_every == 0 or step == end:
                now = time.time()
                clips = window["n"] * tc.batch_size
                usage = code_usage(out["targets"], cfg.quantizer.codebook_size) if "targets" in out else {}
                row = {
                    "step": step,
                    "loss": window["loss"] / window["n"],
                    "acc": window["acc"] / window["n"],
                    "lr": lr,
                    "grad_norm": grad_norm,
                    "clips_per_s": clips / max(now - t_log - prober.seconds, 1e-9),
                    "mask_ratio": masks.ratio,
                    **usage,  # codes_used, perplexity (methods with code targets)
                    "skipped_files": len(bad_files),
                    "crop_redraws": window["crop_redraws"],  # energy-aware crops redrawn since the last row (this rank)
                    "bad_steps": bad_steps,
                    "elapsed_s": now - t0,
                    **{col: float(window[col]) / window["n"] for col in aux_cols},
                    **(probed or {}),
                }
                if logger:
                    logger.log(row)
                    bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['acc']:.3f}", clips_s=f"{row['clips_per_s']:.1f}")
                window, t_log = Counter(), now
                prober.seconds = 0.0
            elif probed is not None and logger:  # a probe step between log steps: a row of its own
                logger.log({"step": step, **probed})
            if step % tc.ckpt_every == 0 or step == end or stop_now:
                _save(run, run_dir, step, run.position, info, time.time() - t0)
                bad_files = _record_skipped(run_dir, bad_files, info)
            if stop_now:
                if info.is_main:
                    tqdm.write(f"stop requested: checkpoint saved at step {step}; continue with --resume")
                break
    bar.close()  # the last step checkpointed, so bad_files is already every rank's, and written
    if info.is_main:
        if bad_files:
            print(f"{_skipped_summary(bad_files)}; list in {run_dir / SKIPPED_FILES}")
        summary = {"step": run.step, "last_loss": last_loss, "elapsed_s": time.time() - t0, "skipped_files": len(bad_files),
                   "stopped": stop_now}  # fmt: skip
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if logger:
        logger.close()
    return TrainResult(run.step, run_dir, last_loss, stopped=stop_now)
