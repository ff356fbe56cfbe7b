#!/bin/bash
# One SLURM task of experiments/slurm/train.sbatch: the training process of one host.
#
# jax.distributed.initialize() (alexnet_jax.main --distributed) finds the cluster in SLURM's
# variables: SLURM_JOB_ID, SLURM_STEP_NODELIST, SLURM_NTASKS, SLURM_PROCID and SLURM_LOCALID.
# The coordinator listens on the first node, on a port derived from the job id
# (JAX_COORDINATOR_PORT sets another). By itself JAX gives each task one GPU, number
# SLURM_LOCALID, as for one task per GPU; a task per node should use all of its node's GPUs,
# so that the towers of a pair share a process (alexnet_jax/sharding.py), hence
# JAX_LOCAL_DEVICE_IDS below.
set -euo pipefail
if [[ -n "${SLURM_GPUS_ON_NODE:-}" && -z "${JAX_LOCAL_DEVICE_IDS:-}" ]]; then
  JAX_LOCAL_DEVICE_IDS=$(seq -s, 0 $((SLURM_GPUS_ON_NODE - 1)))
  export JAX_LOCAL_DEVICE_IDS
fi
exec "${PYTHON:-python}" -m alexnet_jax.main --distributed "$@"
