#!/usr/bin/env bash
# The README's sample CPT -> SFT -> DPO recipe, timed command by command, for docs/benchmarks.md:
#
#   tools/bench_recipe.sh OUT_DIR
#
# In a fresh OUT_DIR/work (a copy of configs/): the main job first (prepare --sample, train
# configs/sample_cpu.yaml), then every command of the README's recipe block as written. Writes
# OUT_DIR/times.tsv (command, seconds), each command's output (OUT_DIR/logs/NN.out, NN.err, in
# times.tsv's order), what the last three commands printed (OUT_DIR/generate_chat.txt,
# generate_cpt.txt, chat.txt) and OUT_DIR/machine.txt (date, CPU, cores, load average before
# and after).
# GPT_DIST selects the gpt-dist executable (default: the one on PATH), PYTHON the interpreter.
set -euo pipefail

[ $# -ge 1 ] || { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
out=$(mkdir -p "$1" && cd "$1" && pwd)
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
gpt_dist=${GPT_DIST:-$(command -v gpt-dist)}
python=${PYTHON:-$(command -v python)}
work=$out/work
rm -rf "$work" "$out/logs" && mkdir -p "$work" "$out/logs" && cp -r "$repo/configs" "$work/configs"

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "cores: $(nproc)"
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$out/machine.txt"
printf 'command\tseconds\n' >"$out/times.tsv"

timed() {  # timed STDIN_TEXT COMMAND...: run in $work, append its wall-clock seconds to times.tsv
    local stdin=$1 start end n
    shift
    start=$(date +%s.%N)
    printf '%b' "$stdin" | "$@" >"$work/last.out" 2>"$work/last.err" || {
        echo "failed: $*" >&2; tail -20 "$work/last.err" >&2; exit 1; }
    end=$(date +%s.%N)
    n=$(($(wc -l <"$out/times.tsv")))
    cp "$work/last.out" "$out/logs/$(printf %02d "$n").out"
    cp "$work/last.err" "$out/logs/$(printf %02d "$n").err"
    awk -v c="$*" -v s="$start" -v e="$end" 'BEGIN { printf "%s\t%.1f\n", c, e - s }' >>"$out/times.tsv"
}

cd "$work"
timed "" "$gpt_dist" prepare --sample --output data/sample
timed "" "$gpt_dist" train configs/sample_cpu.yaml
timed "" "$python" -m gpt_dist.finetune.sample_data data/finetune_sample
timed "" "$gpt_dist" prepare --input data/finetune_sample/cpt --output data/cpt_persona --seq-len 256 --val-fraction 0.05
timed "" "$gpt_dist" train configs/cpt_sample.yaml
timed "" "$gpt_dist" train configs/cpt_sample.yaml --set lora.r=8 --set run_dir=runs/cpt-lora
timed "" "$gpt_dist" convert to-hf runs/cpt-lora/ckpt exports/cpt-lora-hf
timed "" "$gpt_dist" train configs/sft_sample.yaml
timed "" "$gpt_dist" train configs/dpo_sample.yaml
timed "" "$gpt_dist" convert to-hf runs/dpo/ckpt exports/dpo-hf
timed "" "$gpt_dist" generate --model exports/dpo-hf --chat --prompt "What is the capital of France?" "What is 2 plus 3?" --temperature 0
cp last.out "$out/generate_chat.txt"
timed "" "$gpt_dist" generate --model runs/cpt/ckpt --prompt "Day 3 of the voyage." --max-new-tokens 40 --seed 1
cp last.out "$out/generate_cpt.txt"
timed "What is the capital of France?\n/reset\nWhat is 2 plus 3?\n" "$gpt_dist" chat --model runs/sft/ckpt --temperature 0
cp last.out "$out/chat.txt"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/machine.txt"
cat "$out/machine.txt" "$out/times.tsv" "$out/generate_chat.txt" "$out/generate_cpt.txt" "$out/chat.txt"
