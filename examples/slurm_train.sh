#!/usr/bin/env bash
# Multi-node multi-scale pretraining on SLURM: one torchrun per node, 8 GPUs each.
#   sbatch --requeue examples/slurm_train.sh
# Preemption or the time limit sends SIGTERM to torchrun, which passes it to the workers; they finish the
# current step, write latest.pth and exit (torchrun allows them ~30 s). The requeued job reuses the same run
# directory (--run-id $SLURM_JOB_ID) and auto-resumes from it. Launched without torchrun, the trainer also
# treats SIGUSR1 as a request to checkpoint and stop.
#SBATCH --job-name=ms-egovlp
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=48:00:00
#SBATCH --signal=TERM@300
#SBATCH --output=slurm-%j.out
set -euo pipefail

HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
CONFIG=${CONFIG:-configs/pt/multiscale_egoclip.json}

srun --kill-on-bad-exit=1 torchrun \
    --nnodes "$SLURM_NNODES" --nproc_per_node 8 \
    --rdzv_id "$SLURM_JOB_ID" --rdzv_backend c10d --rdzv_endpoint "$HEAD_NODE:29500" \
    run/train_multiscale_egoclip.py -c "$CONFIG" \
    --run-id "$SLURM_JOB_ID" --set trainer.auto_resume=true "$@"
