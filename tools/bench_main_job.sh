#!/usr/bin/env bash
# The README's main job, timed as a new user runs it, for docs/benchmarks.md:
#
#   tools/bench_main_job.sh OUT_DIR [ROUNDS]
#
# In a fresh OUT_DIR/round_N (a copy of configs/ and nothing else): `gpt-dist prepare --sample
# --output data/sample`, then `gpt-dist train configs/sample_cpu.yaml`, each timed wall-clock.
# Writes OUT_DIR/times.tsv (round, command, seconds) and OUT_DIR/machine.txt (date, CPU, cores,
# load average before and after each round: other processes on the machine show up there).
# GPT_DIST selects the gpt-dist executable (default: the one on PATH).
set -euo pipefail

[ $# -ge 1 ] || { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
out=$(mkdir -p "$1" && cd "$1" && pwd)
rounds=${2:-1}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
gpt_dist=${GPT_DIST:-$(command -v gpt-dist)}

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "cores: $(nproc)"
} >"$out/machine.txt"
printf 'round\tcommand\tseconds\n' >"$out/times.tsv"

timed() {  # timed ROUND LOG COMMAND...: run, append the wall-clock seconds to times.tsv
    local round=$1 log=$2 start end
    shift 2
    start=$(date +%s.%N)
    "$@" >"$log" 2>&1 || { echo "failed: $* (see $log)" >&2; exit 1; }
    end=$(date +%s.%N)
    awk -v r="$round" -v c="gpt-dist ${*:2}" -v s="$start" -v e="$end" 'BEGIN { printf "%s\t%s\t%.1f\n", r, c, e - s }' >>"$out/times.tsv"
}

for ((r = 1; r <= rounds; r++)); do
    dir=$out/round_$r
    rm -rf "$dir" && mkdir -p "$dir" && cp -r "$repo/configs" "$dir/configs"
    echo "load average before round $r: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/machine.txt"
    cd "$dir"
    timed "$r" prepare.log "$gpt_dist" prepare --sample --output data/sample
    timed "$r" train.log "$gpt_dist" train configs/sample_cpu.yaml
    cd - >/dev/null
    echo "load average after round $r: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/machine.txt"
done
cat "$out/machine.txt" "$out/times.tsv"
