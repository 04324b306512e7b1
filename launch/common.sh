# shellcheck shell=bash
# Shared by launch/single_node.sh and launch/torchrun.sh; sourced, not run. Each function takes
# the calling script's name first, for its messages.

# launch_parse_args NAME ARGS...: config files and an optional GPU count come before the first
# option (--set ...). Sets `configs` (array), `num_gpus` (maybe empty) and `launch_rest` (array:
# everything from the first option on). Calls the script's `usage` for -h/--help, no arguments
# or no config file.
launch_parse_args() {
    local name=$1
    shift
    [ $# -ge 1 ] || usage
    case "$1" in -h | --help) usage ;; esac
    configs=()
    num_gpus=""
    while [ $# -gt 0 ] && [[ "$1" != -* ]]; do
        if [[ "$1" =~ ^[0-9]+$ ]]; then
            [ -z "$num_gpus" ] || { echo "$name: two GPU counts given ($num_gpus and $1)" >&2; exit 2; }
            num_gpus=$1
        else
            configs+=("$1")
        fi
        shift
    done
    [ ${#configs[@]} -ge 1 ] || { echo "$name: no config file given" >&2; usage; }
    local c
    for c in "${configs[@]}"; do
        [ -f "$c" ] || { echo "$name: config file not found: $c" >&2; exit 2; }
    done
    # shellcheck disable=SC2034  # read by the sourcing script
    launch_rest=("$@")
}

# launch_find_tool NAME TOOL: TOOL from the active environment, else from the repo's .venv.
launch_find_tool() {
    local name=$1 tool=$2 repo
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    if ! command -v "$tool" >/dev/null && [ -x "$repo/.venv/bin/$tool" ]; then
        PATH=$repo/.venv/bin:$PATH
    fi
    command -v "$tool" >/dev/null || { echo "$name: no '$tool' on PATH; pip install -e . first" >&2; exit 2; }
}

# launch_resolve_gpus NAME: final `num_gpus` (default: every visible GPU; on a machine without
# one, that many CPU ranks, default 1, each with an equal share of the cores in OMP_NUM_THREADS
# unless it is set) and `visible` (the CUDA_VISIBLE_DEVICES list, when given).
launch_resolve_gpus() {
    local name=$1 gpus=0
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
        [ "$num_gpus" -le "$gpus" ] || { echo "$name: asked for $num_gpus GPUs, $gpus are visible" >&2; exit 2; }
    else
        num_gpus=${num_gpus:-1}
        export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(($(nproc) / num_gpus > 0 ? $(nproc) / num_gpus : 1))}
    fi
    [ "$num_gpus" -ge 1 ] || { echo "$name: NUM_GPUS must be at least 1" >&2; exit 2; }
}

# launch_run NAME DEPTH COMMAND...: run the launcher COMMAND and exit with its status. DEPTH is
# how many process levels lie between the launcher and the ranks (torchrun: 1; the deepspeed
# runner starts deepspeed.launcher.launch, which starts the ranks: 2).
#
# The launcher runs in its own session with SIGUSR1 blocked, so a terminal's Ctrl-C reaches only
# this script, which passes SIGINT/SIGTERM (as SIGTERM) and SIGUSR1 on to the ranks themselves:
# each finishes its step, saves and exits 0. The launchers would otherwise die of SIGUSR1, or
# answer SIGTERM by killing the ranks 30 s later, possibly in the middle of a save. Blocked, not
# ignored: the ranks inherit the mask, a signal that comes while one is still starting stays
# pending, and gpt-dist unblocks it as its first step, delivering it to its handler
# (gpt_dist/engine/signals.py). An ignored signal would be inherited as ignored, and lost.
launch_run() {
    launch_name=$1
    launch_depth=$2
    shift 2
    echo "$launch_name: $*" >&2
    # LAUNCH_DRY_RUN=1: print the launcher command, shell-quoted, on stdout and start nothing:
    # what a GPU or multi-GPU command line would run, checked on a machine that cannot run it.
    if [ "${LAUNCH_DRY_RUN:-0}" = 1 ]; then
        printf '%q ' "$@" | sed 's/ $//'
        echo
        exit 0
    fi
    setsid python -m gpt_dist.engine.signals "$@" &
    launch_pid=$!
    trap '_launch_signal_ranks USR1' USR1
    trap '_launch_signal_ranks TERM' TERM INT
    # `wait` returns early whenever a trapped signal arrives; keep waiting for the launcher itself.
    local status=0
    while :; do
        if wait "$launch_pid"; then status=0; else status=$?; fi
        kill -0 "$launch_pid" 2>/dev/null || break
    done
    exit "$status"
}

# shellcheck disable=SC2317  # called from launch_run's traps
_launch_signal_ranks() {
    local parents=$launch_pid level ranks=()
    for ((level = 1; level < launch_depth; level++)); do
        parents=$(pgrep -d, -P "$parents" || true)
        [ -n "$parents" ] || break
    done
    [ -z "$parents" ] || mapfile -t ranks < <(pgrep -P "$parents" || true)
    if [ ${#ranks[@]} -gt 0 ]; then
        echo "$launch_name: SIG$1 to ranks ${ranks[*]}: they save a checkpoint and stop" >&2
        kill -s "$1" "${ranks[@]}" 2>/dev/null || true
    else
        echo "$launch_name: no rank started yet, nothing to save: stopping the launcher" >&2
        kill -s TERM -- "-$launch_pid" 2>/dev/null || true
    fi
}
