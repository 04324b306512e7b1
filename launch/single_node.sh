#!/usr/bin/env bash
# Train on one machine with the DeepSpeed launcher: one process (rank) per GPU.
#
#   launch/single_node.sh CONFIG.yaml [MORE.yaml ...] [NUM_GPUS] [--set key.path=value ...]
#
#   launch/single_node.sh configs/gpt2_124m.yaml              # every GPU of this machine
#   launch/single_node.sh configs/gpt2_124m.yaml 4            # GPUs 0-3
#   CUDA_VISIBLE_DEVICES=4,5 launch/single_node.sh configs/gpt2_124m.yaml   # GPUs 4 and 5
#   launch/single_node.sh configs/sample_cpu.yaml 2 --set engine.zero_stage=3
#
# On a machine without a GPU, NUM_GPUS CPU processes (default 1) train together over gloo; each
# gets an equal share of the cores (OMP_NUM_THREADS), unless OMP_NUM_THREADS is already set.
#
# Stopping: Ctrl-C, SIGTERM or SIGUSR1 sent to this script reaches every rank (the launchers
# are kept out of it), and each one finishes its step, saves a checkpoint and exits 0; the next
# run with `checkpoint.resume: auto` continues from there. SIGKILL loses the steps since the last
# checkpoint. Ctrl-C before any rank has started just stops the launcher.
#
# Environment: LAUNCH_DRY_RUN=1 prints the launcher command and starts nothing.
# MASTER_PORT (default 29500; pick another to run two jobs on one machine).
# The `deepspeed` launcher is taken from the active environment, else from the repo's .venv.
set -euo pipefail

usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
launch_parse_args single_node.sh "$@"
launch_find_tool single_node.sh deepspeed
launch_resolve_gpus single_node.sh  # no GPU: DeepSpeed's CPU accelerator starts NUM_GPUS gloo ranks

# DeepSpeed's launcher ignores CUDA_VISIBLE_DEVICES once --num_gpus is given; --include keeps it.
devices=(--num_gpus "$num_gpus")
if [ ${#visible[@]} -gt 0 ]; then
    devices=(--include "localhost:$(IFS=,; echo "${visible[*]:0:num_gpus}")")
fi
# --no_local_rank: ranks read LOCAL_RANK from the environment, not from a --local_rank flag.
# The deepspeed runner starts deepspeed.launcher.launch, which starts the ranks: depth 2.
launch_run single_node.sh 2 deepspeed "${devices[@]}" --master_port "${MASTER_PORT:-29500}" --no_local_rank \
    --module gpt_dist train "${configs[@]}" "${launch_rest[@]}"
