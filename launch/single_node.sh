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
# Environment: MASTER_PORT (default 29500; pick another to run two jobs on one machine).
# The `deepspeed` launcher is taken from the active environment, else from the repo's .venv.
set -euo pipefail

usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[ $# -ge 1 ] || usage
case "$1" in -h | --help) usage ;; esac

# Config files and the optional GPU count come before the first option (--set ...).
configs=()
num_gpus=""
while [ $# -gt 0 ] && [[ "$1" != -* ]]; do
    if [[ "$1" =~ ^[0-9]+$ ]]; then
        [ -z "$num_gpus" ] || { echo "single_node.sh: two GPU counts given ($num_gpus and $1)" >&2; exit 2; }
        num_gpus=$1
    else
        configs+=("$1")
    fi
    shift
done
[ ${#configs[@]} -ge 1 ] || { echo "single_node.sh: no config file given" >&2; usage; }
for c in "${configs[@]}"; do
    [ -f "$c" ] || { echo "single_node.sh: config file not found: $c" >&2; exit 2; }
done

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if ! command -v deepspeed >/dev/null && [ -x "$repo/.venv/bin/deepspeed" ]; then
    PATH=$repo/.venv/bin:$PATH
fi
command -v deepspeed >/dev/null || { echo "single_node.sh: no 'deepspeed' on PATH; pip install -e . first" >&2; exit 2; }

gpus=0
if command -v nvidia-smi >/dev/null; then
    gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
fi
visible=()
if [ "$gpus" -gt 0 ] && [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
    # Only these GPUs, e.g. CUDA_VISIBLE_DEVICES=4,5,6,7.
    IFS=, read -ra visible <<<"$CUDA_VISIBLE_DEVICES"
    gpus=${#visible[@]}
fi
if [ "$gpus" -gt 0 ]; then
    num_gpus=${num_gpus:-$gpus}
    [ "$num_gpus" -le "$gpus" ] || { echo "single_node.sh: asked for $num_gpus GPUs, $gpus are visible" >&2; exit 2; }
else
    # DeepSpeed's CPU accelerator: --num_gpus N starts N gloo ranks.
    num_gpus=${num_gpus:-1}
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / num_gpus > 0 ? $(nproc) / num_gpus : 1 ))}
fi
[ "$num_gpus" -ge 1 ] || { echo "single_node.sh: NUM_GPUS must be at least 1" >&2; exit 2; }

# DeepSpeed's launcher ignores CUDA_VISIBLE_DEVICES once --num_gpus is given; --include keeps it.
devices=(--num_gpus "$num_gpus")
if [ ${#visible[@]} -gt 0 ]; then
    devices=(--include "localhost:$(IFS=,; echo "${visible[*]:0:num_gpus}")")
fi
# --no_local_rank: ranks read LOCAL_RANK from the environment, not from a --local_rank flag.
cmd=(deepspeed "${devices[@]}" --master_port "${MASTER_PORT:-29500}" --no_local_rank
    --module gpt_dist train "${configs[@]}" "$@")
echo "single_node.sh: ${cmd[*]}" >&2

# The launchers run in their own session with SIGUSR1 ignored (the ranks install their own
# handler), so a terminal's Ctrl-C reaches only this script, which passes the request on to the
# ranks themselves. DeepSpeed's launcher would otherwise die of SIGUSR1, and answer SIGTERM by
# killing the ranks 30 s later, possibly in the middle of a save.
setsid bash -c 'trap "" USR1; exec "$@"' launcher "${cmd[@]}" &
launcher=$!

# shellcheck disable=SC2317  # called from the traps below
signal_ranks() {
    # deepspeed (runner) -> deepspeed.launcher.launch -> one process per rank
    local launch ranks=()
    launch=$(pgrep -d, -P "$launcher" || true)
    [ -z "$launch" ] || mapfile -t ranks < <(pgrep -P "$launch" || true)
    if [ ${#ranks[@]} -gt 0 ]; then
        echo "single_node.sh: SIG$1 to ranks ${ranks[*]}: they save a checkpoint and stop" >&2
        kill -s "$1" "${ranks[@]}" 2>/dev/null || true
    else
        echo "single_node.sh: no rank started yet, nothing to save: stopping the launcher" >&2
        kill -s TERM -- "-$launcher" 2>/dev/null || true
    fi
}
trap 'signal_ranks USR1' USR1
trap 'signal_ranks TERM' TERM INT

# `wait` returns early whenever a trapped signal arrives; keep waiting for the launcher itself.
status=0
while :; do
    if wait "$launcher"; then status=0; else status=$?; fi
    kill -0 "$launcher" 2>/dev/null || break
done
exit "$status"
