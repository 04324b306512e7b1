#!/usr/bin/env bash
# Train on one machine with torchrun (torch.distributed.run) instead of the DeepSpeed launcher.
#
#   launch/torchrun.sh CONFIG.yaml [MORE.yaml ...] [NUM_GPUS] [--set key.path=value ...]
#
#   launch/torchrun.sh configs/gpt2_124m.yaml 8
#   launch/torchrun.sh configs/sample_cpu.yaml 2 --set engine.zero_stage=1
#
# Same arguments and behaviour as launch/single_node.sh: one rank per GPU (NUM_GPUS: default
# all visible ones), NUM_GPUS CPU ranks over gloo on a machine without a GPU (default 1), and Ctrl-C,
# SIGTERM or SIGUSR1 make every rank finish its step, save a checkpoint and exit 0.
# LAUNCH_DRY_RUN=1 prints the torchrun command and starts nothing.
# `--standalone` runs its own rendezvous on a free port, so several runs can share a machine.
# For several machines, see slurm/pretrain.sbatch (torchrun on each node, c10d rendezvous).
set -euo pipefail

usage() {
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
launch_parse_args torchrun.sh "$@"
launch_find_tool torchrun.sh torchrun
launch_resolve_gpus torchrun.sh

# torchrun starts the ranks itself: depth 1. (It answers SIGTERM with SIGKILL after a 30 s
# grace, so signals go to the ranks directly; see launch/common.sh.)
launch_run torchrun.sh 1 torchrun --standalone --nnodes 1 --nproc_per_node "$num_gpus" -m gpt_dist train \
    "${configs[@]}" "${launch_rest[@]}"
