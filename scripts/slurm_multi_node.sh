#!/bin/bash
# alignkit training on several nodes under SLURM: srun starts ONE `accelerate launch` per node, and each
# launcher starts that node's GPU processes. Submit from the alignkit checkout, on a shared file system:
#   sbatch --nodes 2 scripts/slurm_multi_node.sh RECIPE.yaml [--key value ...]
#   ACCELERATE_CONFIG=accelerate_configs/multi_node_ddp.yaml sbatch --nodes 4 scripts/slurm_multi_node.sh RECIPE.yaml
# Settings (environment, all optional):
#   ACCELERATE_CONFIG  default accelerate_configs/multi_node_zero3.yaml (or multi_node_ddp.yaml)
#   GPUS_PER_NODE      default 8 (processes per node; --num_processes is nodes x this)
#   MAIN_PORT          default 29500 (node 0 hosts the rendezvous there; free it on node 0)
#   ACCELERATE_ARGS    more launcher flags, e.g. "--mixed_precision no" or "--rdzv_backend c10d"
#   ALIGNKIT_CACHE, HF_HOME   node-local disk (e.g. /local/$USER/...) to build caches once per node,
#                      or a shared folder to build them once per job
#   NCCL_SOCKET_IFNAME the network interface between the nodes when they have several (e.g. ib0, eth0)
# Output: output_dir on a shared file system (default), or `save_on_each_node: true` in the recipe with
# an output_dir on each node's local disk (README, "Several machines").
#SBATCH --job-name=alignkit
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --exclusive
#SBATCH --output=%x-%j.log
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "error: usage: sbatch --nodes N scripts/slurm_multi_node.sh RECIPE.yaml [--key value ...]" >&2
  exit 2
fi

export ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-accelerate_configs/multi_node_zero3.yaml}
export GPUS_PER_NODE=${GPUS_PER_NODE:-8}
export MAIN_PORT=${MAIN_PORT:-29500}
export ACCELERATE_ARGS=${ACCELERATE_ARGS:-}
# Node 0 of the allocation hosts the rendezvous; every node must reach it at this name.
MAIN_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MAIN_HOST
export TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}

echo "alignkit: $SLURM_NNODES nodes x $GPUS_PER_NODE processes, rendezvous $MAIN_HOST:$MAIN_PORT, $ACCELERATE_CONFIG"

# One task per node; SLURM_NODEID (0..N-1, set per task) is the node's --machine_rank. The single quotes
# keep $SLURM_NODEID for the task's own shell. --kill-on-bad-exit: one failed node ends the job.
srun --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c '
  exec accelerate launch --config_file "$ACCELERATE_CONFIG" \
    --num_machines "$SLURM_NNODES" --num_processes $((SLURM_NNODES * GPUS_PER_NODE)) \
    --machine_rank "$SLURM_NODEID" --main_process_ip "$MAIN_HOST" --main_process_port "$MAIN_PORT" \
    $ACCELERATE_ARGS -m alignkit.cli train "$@"' alignkit-node "$@"
