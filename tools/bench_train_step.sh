#!/usr/bin/env bash
# The runs recorded in docs/benchmarks.md: gpt_dist's training step against Hugging Face
# GPT2LMHeadModel (same weights, batches, dtype and AdamW, alternating), and the loader alone.
#
#   tools/bench_train_step.sh OUT_DIR [SHARDS_DIR]
#
# Writes OUT_DIR/<name>.json (one `gpt-dist bench --json` object each) and OUT_DIR/machine.txt
# (CPU, cores, load average before and after: other processes on the machine show up there).
# SHARDS_DIR (e.g. data/sample from `gpt-dist prepare --sample`) adds the loader runs.
# GPU_RUNS=1 (on one GPU) runs only the GPU table instead (gpt_dist/benchmark/gpu_suite.py):
# bf16 tokens/s, MFU, peak memory and largest micro-batch of gpt2, llama-124m, gpt2-medium/-large at seq 1024,
# FlashAttention checked, compile and chunked loss on/off, HF speedup, ZeRO-1/3 overhead;
# OUT_DIR/gpu_table.md and .json. GPU_RUNS=dry runs that table on tiny shapes (any machine).
# GPT_DIST / PYTHON: the gpt-dist and python to run (default: the repository's .venv).
set -euo pipefail

[ $# -ge 1 ] || { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
out=$1
shards=${2:-}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
gpt_dist=${GPT_DIST:-$repo/.venv/bin/gpt-dist}
python=${PYTHON:-$repo/.venv/bin/python}
mkdir -p "$out"

machine() {
    {
        echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
        echo "cores: $(nproc)"
        echo "load average ($1): $(cut -d' ' -f1-3 /proc/loadavg)"
        command -v nvidia-smi >/dev/null && nvidia-smi -L || true
    } >>"$out/machine.txt"
}

run() {
    local name=$1
    shift
    echo "== $name: gpt-dist bench $*" >&2
    echo "$name: gpt-dist bench $*" >>"$out/commands.txt"
    "$gpt_dist" bench "$@" --json >"$out/$name.json"
}

: >"$out/machine.txt"
: >"$out/commands.txt"
machine before

case ${GPU_RUNS:-0} in
    1|dry)
        flags=(); [ "$GPU_RUNS" = dry ] && flags=(--dry-run)
        echo "gpu table: python -m gpt_dist.benchmark.gpu_suite --out $out ${flags[*]}" >>"$out/commands.txt"
        "$python" -m gpt_dist.benchmark.gpu_suite --out "$out" "${flags[@]}"
        machine after
        echo "results in $out/gpu_table.md" >&2
        exit 0 ;;
esac

# The target: a small preset, fp32, on the CPU.
run mini_fp32 --model mini --compare-hf --steps 20
# Without vocabulary padding (50257 rows instead of 50304), to show what the padding costs on a CPU.
cat >"$out/mini_pad1.yaml" <<'EOF'
model: {preset: mini, vocab_pad_multiple: 1}
EOF
run mini_pad1_fp32 --model "$out/mini_pad1.yaml" --compare-hf --steps 20
# GPT-2 124M, short sequences so that a CPU finishes in minutes.
run gpt2_fp32_seq128 --model gpt2 --seq-len 128 --micro-batch 2 --steps 5 --warmup 2 --compare-hf

if [ -n "$shards" ]; then
    run loader_w0 --data "$shards" --workers 0 --batches 2000
    run loader_w1 --data "$shards" --workers 1 --batches 2000
fi

machine after
echo "results in $out" >&2
