#!/usr/bin/env bash
# Pretrain on a SLURM cluster: one torchrun launcher per node, meeting through torchrun's c10d
# rendezvous on the first node of the allocation. Submit with, for example,
#
#   DATA=/shared/shards OUT=/shared/runs/base sbatch --nodes 4 --gpus-per-node 8 scripts/slurm_pretrain.sh \
#       --preset base --batch-size 256 --set parallel.strategy=fsdp
#
# Arguments after the script go to `bestrq2 pretrain`. DATA is a folder or manifest of audio, or tar
# shards from `bestrq2 data shard` (a folder, "dir/shard-{000000..000999}.tar", or "pipe:CMD" URLs).
# Time limit and pre-emption: SLURM sends SIGTERM to this script 5 minutes before the time limit
# (--signal below). The script passes it on to the job step: torchrun forwards it to every rank, each
# saves the checkpoint at the end of its current step and exits (torchrun waits SHUTDOWN_TIMEOUT
# seconds, default 240, before it kills them). Then the script requeues the job (`scontrol requeue`),
# and the requeued job finds the checkpoint and continues with --resume. A pre-empted job (SIGTERM
# from SLURM to every process) saves and is requeued the same way.
#
#SBATCH --job-name=bestrq2
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=96
#SBATCH --time=48:00:00
#SBATCH --signal=B:TERM@300
#SBATCH --requeue
#SBATCH --output=%x-%j.out
set -euo pipefail

: "${DATA:?set DATA to the training audio (folder, manifest or tar shards)}"
OUT="${OUT:-runs/bestrq2-${SLURM_JOB_ID:-local}}"
NODES="${SLURM_NNODES:-1}"
PROCS="${PROCS_PER_NODE:-${SLURM_GPUS_ON_NODE:-1}}"      # one rank per GPU
HEAD="$(scontrol show hostnames "${SLURM_JOB_NODELIST:-localhost}" | head -n 1)"
PORT="${RDZV_PORT:-29500}"
# loader workers per rank: the CPUs of the node shared by its ranks, a few left for the trainers
WORKERS="${WORKERS:-$(( ${SLURM_CPUS_PER_TASK:-$(nproc)} / PROCS - 2 ))}"
(( WORKERS < 1 )) && WORKERS=1
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"

RESUME=()
[ -f "$OUT/checkpoints/last.pt" ] && RESUME=(--resume)

echo "slurm_pretrain: $NODES node(s) x $PROCS rank(s), rendezvous $HEAD:$PORT, $WORKERS loader workers per rank, out $OUT ${RESUME[*]}"
srun --kill-on-bad-exit=1 python -m torch.distributed.run \
    --nnodes "$NODES" --nproc-per-node "$PROCS" \
    --rdzv-backend c10d --rdzv-endpoint "$HEAD:$PORT" --rdzv-id "${SLURM_JOB_ID:-bestrq2}" \
    --shutdown-timeout "${SHUTDOWN_TIMEOUT:-240}" \
    -m bestrq2.cli pretrain --data "$DATA" --out "$OUT" "${RESUME[@]}" --no-progress \
    --set "data.num_workers=$WORKERS" "$@" &
STEP=$!
REQUEUE=0
on_term() {
    echo "slurm_pretrain: SIGTERM: the ranks save a checkpoint, then the job is requeued"
    REQUEUE=1
    kill -TERM "$STEP" 2>/dev/null || true
}
trap on_term TERM
set +e
wait "$STEP"; rc=$?
while [ "$rc" -gt 128 ] && kill -0 "$STEP" 2>/dev/null; do  # a trapped signal interrupts wait
    wait "$STEP"; rc=$?
done
set -e
if [ "$REQUEUE" = 1 ] && [ -n "${SLURM_JOB_ID:-}" ]; then
    scontrol requeue "$SLURM_JOB_ID"
fi
exit "$rc"
