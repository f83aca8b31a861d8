"""Many processes, one model: DDP, FSDP2 and two torchrun "nodes" on 127.0.0.1 (gloo on CPU).

The same global batch on 1 rank or on 2 ranks must take the same steps: the data of a step, its masks
(keyed by slot in the global batch) and the averaged gradients do not depend on the split. Every
run here uses gradient accumulation, so the no-sync micro-steps are covered too.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bestrq2.training.checkpoint import load_checkpoint
from bestrq2.training.logs import read_log

pytestmark = [pytest.mark.slow, pytest.mark.integration]

STEPS = 6
MICRO = [
    "--batch-size", "8", "--no-progress",
    "--set", "train.accum_steps=2", "--set", "data.num_workers=0", "--set", "data.crop_seconds=2.0",
    "--set", "encoder.width=64", "--set", "encoder.depth=2", "--set", "encoder.heads=2",
    "--set", "predictor.width=32", "--set", "predictor.depth=1", "--set", "predictor.heads=2",
    "--set", "quantizer.codebook_size=256", "--set", "optim.lr=2e-3", "--set", "optim.warmup_fraction=0.2",
    "--set", "train.log_every=1", "--set", "train.ckpt_every=100",
]  # fmt: skip


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pretrain_cmd(data: Path, out: Path, *extra: str, steps: int = STEPS) -> list[str]:
    return ["-m", "bestrq2.cli", "pretrain", "--data", str(data), "--out", str(out), "--max-steps", str(steps),
            *MICRO, *extra]  # fmt: skip


def _run(args: list[str], nproc: int = 1, timeout: int = 600) -> str:
    if nproc == 1:
        cmd = [sys.executable, *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _losses(run: Path) -> np.ndarray:
    return np.array([r["loss"] for r in read_log(run)])


def _assert_same_run(a: Path, b: Path, rtol: float = 2e-4) -> None:
    la, lb = _losses(a), _losses(b)
    assert len(la) == len(lb) == STEPS
    np.testing.assert_allclose(lb, la, rtol=rtol)
    wa, wb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert wa.keys() == wb.keys()
    for k in wa:
        x, y = wa[k].clone(), wb[k].clone()
        if k.endswith("attn.qkv.bias"):  # the key bias gets a zero gradient (softmax ignores it): Adam turns
            third = len(x) // 3  # summation noise there into +-lr steps, so it is left out
            x[third : 2 * third] = y[third : 2 * third] = 0
        torch.testing.assert_close(y, x, rtol=1e-3, atol=2e-5, msg=k)


@pytest.fixture(scope="module")
def one_rank(real_corpus, tmp_path_factory) -> dict[str, Path]:
    """Reference runs on one process, per method."""
    root = tmp_path_factory.mktemp("one_rank")
    runs = {}
    for method in ("bestrq2", "audiojepa"):
        runs[method] = root / method
        _run(_pretrain_cmd(real_corpus, runs[method], "--method", method))
    return runs


@pytest.mark.parametrize(
    "method,strategy", [("bestrq2", "ddp"), ("bestrq2", "fsdp"), ("audiojepa", "fsdp")]
)
def test_two_ranks_take_the_same_steps_as_one(real_corpus, one_rank, tmp_path, method, strategy):
    run = tmp_path / "two"
    extra = ["--method", method, "--set", f"parallel.strategy={strategy}"]
    if strategy == "fsdp":
        extra += ["--set", "parallel.activation_checkpointing=true"]
    out = _run(_pretrain_cmd(real_corpus, run, *extra), nproc=2)
    assert f"world=2 {strategy}" in out
    ckpt = load_checkpoint(run)
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
    assert not any("_checkpoint_wrapped_module" in k for k in ckpt["model"])  # plain names in checkpoints
    _assert_same_run(one_rank[method], run)


def test_frozen_teacher_targets_under_fsdp_match_one_rank(real_corpus, one_rank, tmp_path):
    """quantizer.teacher: the frozen teacher's blocks are sharded and checkpoint-wrapped like the
    encoder's, take no step, and two FSDP ranks take the same steps as one."""
    from bestrq2.export import export

    teacher = export(one_rank["bestrq2"], tmp_path / "teacher")
    extra = ["--set", f"quantizer.teacher={teacher}", "--set", "quantizer.codebook_lifters="]  # lifters: patches only
    one, two = tmp_path / "one", tmp_path / "two"
    _run(_pretrain_cmd(real_corpus, one, *extra))
    _run(_pretrain_cmd(real_corpus, two, *extra, "--set", "parallel.strategy=fsdp",
                       "--set", "parallel.activation_checkpointing=true"), nproc=2)  # fmt: skip
    _assert_same_run(one, two)
    start, end = load_checkpoint(one_rank["bestrq2"])["model"], load_checkpoint(two)["model"]
    frozen = [k for k in end if k.startswith("quantizer.teacher.encoder.")]
    assert frozen and all(torch.equal(end[k], start["encoder." + k[len("quantizer.teacher.encoder."):]]) for k in frozen)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_bf16_gradient_reduction_stays_close(real_corpus, one_rank, tmp_path, strategy):
    """parallel.reduce_dtype=bf16 (half the gradient traffic) runs and stays near the fp32 trajectory."""
    run = tmp_path / "bf16"
    _run(_pretrain_cmd(real_corpus, run, "--set", f"parallel.strategy={strategy}", "--set", "parallel.reduce_dtype=bf16"),
         nproc=2)  # fmt: skip
    np.testing.assert_allclose(_losses(run), _losses(one_rank["bestrq2"]), rtol=1e-2)


def test_resume_under_another_strategy_and_world_size(real_corpus, one_rank, tmp_path):
    """Checkpoints hold the full state under plain names: a 1-rank run resumed on 2 FSDP ranks
    continues exactly as the uninterrupted 1-rank run."""
    run = tmp_path / "moved"
    _run(_pretrain_cmd(real_corpus, run, "--stop-after", "3"))
    assert load_checkpoint(run)["step"] == 3
    _run(_pretrain_cmd(real_corpus, run, "--resume", "--set", "parallel.strategy=fsdp"), nproc=2)
    _assert_same_run(one_rank["bestrq2"], run)


def test_two_nodes_on_localhost(real_corpus, one_rank, tmp_path):
    """Two torchrun launchers, node ranks 0 and 1, one process each, meeting at 127.0.0.1: they train
    together (the checkpoint's save checks that both hold the same weights) and match one rank."""
    run = tmp_path / "nodes"
    port = _free_port()
    procs = []
    for node in (0, 1):
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node),
            "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port),
            *_pretrain_cmd(real_corpus, run),
        ]  # fmt: skip
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env()))
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=600)[0])
        finally:
            p.kill()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    assert "world=2" in outs[0]
    ckpt = load_checkpoint(run)
    assert ckpt["world_size"] == 2
    _assert_same_run(one_rank["bestrq2"], run)


def test_slurm_script_checkpoints_requeues_and_resumes(real_corpus, tmp_path):
    """scripts/slurm_pretrain.sh under stand-in `srun` / `scontrol` (one node, two ranks, c10d rendezvous
    on 127.0.0.1). SLURM's time-limit SIGTERM to the batch script: the ranks save a checkpoint, the job
    is requeued; the requeued job finds the checkpoint and resumes."""
    import signal
    import time

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    requeued = tmp_path / "requeued.txt"
    (bin_dir / "srun").write_text('#!/usr/bin/env bash\nwhile [[ "$1" == --* ]]; do shift; done\nexec "$@"\n')
    (bin_dir / "scontrol").write_text(
        f'#!/usr/bin/env bash\nif [ "$1" = requeue ]; then echo "$2" >> {requeued}; else echo 127.0.0.1; fi\n'
    )
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    run = tmp_path / "run"
    env = dict(_env(), PATH=f"{bin_dir}:{os.environ['PATH']}", DATA=str(real_corpus), OUT=str(run),
               SLURM_JOB_ID="4242", SLURM_NNODES="1", SLURM_JOB_NODELIST="node1", PROCS_PER_NODE="2",
               WORKERS="1", RDZV_PORT=str(_free_port()))  # fmt: skip
    script = Path(__file__).parents[1] / "scripts" / "slurm_pretrain.sh"
    long = ["--max-steps", "100000", *MICRO, "--set", "train.ckpt_every=100000"]
    job = subprocess.Popen(["bash", str(script), *long], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, env=env)  # fmt: skip
    try:
        log = run / "log.csv"
        deadline = time.time() + 300
        while time.time() < deadline and not (log.is_file() and len(log.read_text().splitlines()) >= 3):
            time.sleep(0.5)
        job.send_signal(signal.SIGTERM)  # to the batch script only, as --signal=B:TERM does
        out = job.communicate(timeout=300)[0]
    finally:
        job.kill()
    assert "2 rank(s), rendezvous 127.0.0.1" in out and "SIGTERM" in out, out[-3000:]
    assert requeued.read_text().split() == ["4242"]
    step = load_checkpoint(run)["step"]
    assert step >= 2
    rerun = subprocess.run(["bash", str(script), *long, "--stop-after", str(step + 2)], capture_output=True,
                           text=True, timeout=600, env=env)  # fmt: skip
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "--resume" in rerun.stdout and "world=2" in rerun.stdout
    assert load_checkpoint(run)["step"] == step + 2
    assert len(read_log(run)) == step + 2
    assert requeued.read_text().split() == ["4242"]  # a job that ends by itself is not requeued


def test_bad_data_fails_every_rank_clearly(tmp_path):
    """Rank 0 lists the data once for all; its error reaches every rank (no rank left waiting)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           *_pretrain_cmd(tmp_path / "missing", tmp_path / "run")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env())
    assert proc.returncode != 0
    assert (proc.stdout + proc.stderr).count("does not exist") >= 2  # both ranks report it
