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
# `--standalone` runs its own rendezvous on a free port, so several runs can share a machine.
# For several machines, see slurm/pretrain.sbatch (torchrun on each node, c10d rendezvous).
set -euo pipefail

usage() {
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[ $# -ge 1 ] || usage
case "$1" in -h | --help) usage ;; esac

configs=()
num_gpus=""
while [ $# -gt 0 ] && [[ "$1" != -* ]]; do
    if [[ "$1" =~ ^[0-9]+$ ]]; then
        [ -z "$num_gpus" ] || { echo "torchrun.sh: two GPU counts given ($num_gpus and $1)" >&2; exit 2; }
        num_gpus=$1
    else
        configs+=("$1")
    fi
    shift
done
[ ${#configs[@]} -ge 1 ] || { echo "torchrun.sh: no config file given" >&2; usage; }
for c in "${configs[@]}"; do
    [ -f "$c" ] || { echo "torchrun.sh: config file not found: $c" >&2; exit 2; }
done

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if ! command -v torchrun >/dev/null && [ -x "$repo/.venv/bin/torchrun" ]; then
    PATH=$repo/.venv/bin:$PATH
fi
command -v torchrun >/dev/null || { echo "torchrun.sh: no 'torchrun' on PATH; pip install -e . first" >&2; exit 2; }

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
    [ "$num_gpus" -le "$gpus" ] || { echo "torchrun.sh: asked for $num_gpus GPUs, $gpus are visible" >&2; exit 2; }
else
    num_gpus=${num_gpus:-1}
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / num_gpus > 0 ? $(nproc) / num_gpus : 1 ))}
fi
[ "$num_gpus" -ge 1 ] || { echo "torchrun.sh: NUM_GPUS must be at least 1" >&2; exit 2; }

cmd=(torchrun --standalone --nnodes 1 --nproc_per_node "$num_gpus" -m gpt_dist train "${configs[@]}" "$@")
echo "torchrun.sh: ${cmd[*]}" >&2

# torchrun runs in its own session with SIGUSR1 ignored (the ranks install their own handler);
# signals to this script go to the ranks directly, so none is killed in the middle of a save
# (torchrun itself answers SIGTERM with SIGKILL after a 30 s grace).
setsid bash -c 'trap "" USR1; exec "$@"' launcher "${cmd[@]}" &
launcher=$!

# shellcheck disable=SC2317  # called from the traps below
signal_ranks() {
    local ranks=()
    mapfile -t ranks < <(pgrep -P "$launcher" || true)   # torchrun -> one process per rank
    if [ ${#ranks[@]} -gt 0 ]; then
        echo "torchrun.sh: SIG$1 to ranks ${ranks[*]}: they save a checkpoint and stop" >&2
        kill -s "$1" "${ranks[@]}" 2>/dev/null || true
    else
        echo "torchrun.sh: no rank started yet, nothing to save: stopping the launcher" >&2
        kill -s TERM -- "-$launcher" 2>/dev/null || true
    fi
}
trap 'signal_ranks USR1' USR1
trap 'signal_ranks TERM' TERM INT

status=0
while :; do
    if wait "$launcher"; then status=0; else status=$?; fi
    kill -0 "$launcher" 2>/dev/null || break
done
exit "$status"
