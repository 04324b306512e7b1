#!/usr/bin/env bash
# The training loop's own cost, per ZeRO stage, on 2 ranks: the median step time of
# `gpt-dist train` (data, logging every step, bookkeeping) against `gpt-dist bench`, which times
# the same DeepSpeed engine's forward/backward/step alone with the same geometry.
#
#   tools/bench_engine.sh OUT_DIR SHARDS_DIR [RANKS]
#
# SHARDS_DIR: output of `gpt-dist prepare --sample` (seq_len 256). Writes OUT_DIR/summary.json.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
out=$1; shards=$2; ranks=${3:-2}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=$repo/.venv/bin
cores=$(nproc --all)
export PATH=$bin:$PATH OMP_NUM_THREADS=$(( cores / ranks > 0 ? cores / ranks : 1 ))
mkdir -p "$out"
micro=4; seq=256; steps=30
{ echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"; echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)";
  echo "cores: $cores, ranks: $ranks, OMP_NUM_THREADS: $OMP_NUM_THREADS"; echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"; } >"$out/machine.txt"
for stage in 1 2 3; do
    port=$((29700 + stage))
    deepspeed --num_gpus "$ranks" --master_port "$port" "$bin/gpt-dist" bench --model mini --seq-len $seq \
        --micro-batch $micro --steps $steps --warmup 5 --zero-stage "$stage" --json >"$out/bench_zero$stage.log" 2>&1
    # rank 0 prints one indented JSON object among the launcher's log lines
    awk '/^\{/{p=1} p{print} /^\}/{p=0}' "$out/bench_zero$stage.log" >"$out/bench_zero$stage.json"
    rm -rf "$out/train_zero$stage"
    deepspeed --num_gpus "$ranks" --master_port "$((port + 10))" "$bin/gpt-dist" train "$repo/configs/sample_cpu.yaml" \
        --set run_dir="$out/train_zero$stage" --set engine.zero_stage="$stage" \
        --set "data.train=[{path: $shards/train, weight: 1.0}]" --set data.val="$shards/val" \
        --set train.micro_batch_size=$micro --set train.global_batch_tokens=$((micro * seq * ranks)) \
        --set train.max_steps=$((steps + 5)) --set log.every_steps=1 --set log.progress_bar=false \
        --set checkpoint.every_steps=100000 --set eval.every_steps=100000 >"$out/train_zero$stage.log" 2>&1
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/machine.txt"
"$bin/python" - "$out" <<'PY'
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = {}
for stage in (1, 2, 3):
    bench = json.loads((out / f"bench_zero{stage}.json").read_text())
    train = [json.loads(l) for l in (out / f"train_zero{stage}" / "metrics.jsonl").read_text().splitlines()]
    loop_ms = statistics.median(r["step_ms"] for r in train if r["split"] == "train" and r["step"] > 5)
    rows[f"zero{stage}"] = {"engine_step_ms": bench["step_ms"], "loop_step_ms": loop_ms,
                            "loop_overhead": loop_ms / bench["step_ms"] - 1}
(out / "summary.json").write_text(json.dumps(rows, indent=2))
print(json.dumps(rows, indent=2))
PY
