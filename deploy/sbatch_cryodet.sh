#!/bin/bash
# One SLURM allocation that runs a whole cryodet-dask job: a Dask scheduler on
# the first task, GPU workers on the others, and the client (cryodet-dask
# detect) beside the scheduler. Submit from the login node:
#
#     sbatch deploy/sbatch_cryodet.sh /data/tomos/*.mrc
#
# For the alternative where cryodet-dask submits worker jobs itself, see
# deploy/README.md (`--cluster slurm` with deploy/jobqueue.yaml).
#SBATCH --job-name=cryodet
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=2
#SBATCH --gres=gpu:2
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
#SBATCH --output=cryodet-%j.log
set -euo pipefail

VENV=${VENV:-$HOME/cryodet-dask/.venv}
OUT=${OUT:-$PWD/results}
SCHED=$PWD/.scheduler-$SLURM_JOB_ID.json
source "$VENV/bin/activate"
export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK

# scheduler: one process, on the first node
srun --nodes=1 --ntasks=1 --exclusive dask scheduler --scheduler-file "$SCHED" &
while [ ! -f "$SCHED" ]; do sleep 1; done

# workers: one per task, one GPU each, advertising the GPU resource
srun --ntasks=$((SLURM_NTASKS - 1)) --gpus-per-task=1 \
    dask worker --scheduler-file "$SCHED" --nthreads 1 --resources "GPU=1" \
    --memory-limit "$((SLURM_MEM_PER_NODE / SLURM_NTASKS_PER_NODE))MiB" \
    --local-directory "${TMPDIR:-/tmp}" &

# the client: waits for the workers and runs the batch
python - <<PY
from distributed import Client
Client(scheduler_file="$SCHED").wait_for_workers($((SLURM_NTASKS - 1)), timeout=600)
PY
cryodet-dask detect "$@" -o "$OUT" --scheduler-file "$SCHED" --device cuda
rm -f "$SCHED"
