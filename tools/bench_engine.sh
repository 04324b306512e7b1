#!/usr/bin/env bash
# The training loop's own cost, per ZeRO stage, on 2 ranks: the median step time of
# `gpt-dist train` (data, logging every step, bookkeeping) against `gpt-dist bench`, which times
# the same DeepSpeed engine's forward/backward/step alone with the same geometry.
#
#   tools/bench_engine.sh OUT_DIR SHARDS_DIR [RANKS] [ROUNDS]
#
# SHARDS_DIR: output of `gpt-dist prepare --sample` (seq_len 256). ROUNDS (default 1) repeats
# the whole set, engine and loop runs interleaved, so drift in the machine's load hits both;
# the summary gives each round and the median over rounds. Writes OUT_DIR/summary.json.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
out=$1; shards=$2; ranks=${3:-2}; rounds=${4:-1}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=$repo/.venv/bin
cores=$(nproc --all)
export PATH=$bin:$PATH OMP_NUM_THREADS=$(( cores / ranks > 0 ? cores / ranks : 1 ))
mkdir -p "$out"
micro=4; seq=256; steps=30
{ echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"; echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)";
  echo "cores: $cores, ranks: $ranks, OMP_NUM_THREADS: $OMP_NUM_THREADS"; echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"; } >"$out/machine.txt"
for round in $(seq 1 "$rounds"); do
for stage in 1 2 3; do
    port=$((29700 + stage))
    tag=zero${stage}_r$round
    deepspeed --num_gpus "$ranks" --master_port "$port" "$bin/gpt-dist" bench --model mini --seq-len $seq \
        --micro-batch $micro --steps $steps --warmup 5 --zero-stage "$stage" --json >"$out/bench_$tag.log" 2>&1
    # rank 0 prints one indented JSON object among the launcher's log lines
    awk '/^\{/{p=1} p{print} /^\}/{p=0}' "$out/bench_$tag.log" >"$out/bench_$tag.json"
    rm -rf "$out/train_$tag"
    deepspeed --num_gpus "$ranks" --master_port "$((port + 10))" "$bin/gpt-dist" train "$repo/configs/sample_cpu.yaml" \
        --set run_dir="$out/train_$tag" --set engine.zero_stage="$stage" \
        --set "data.train=[{path: $shards/train, weight: 1.0}]" --set data.val="$shards/val" \
        --set train.micro_batch_size=$micro --set train.global_batch_tokens=$((micro * seq * ranks)) \
        --set train.max_steps=$((steps + 5)) --set log.every_steps=1 --set log.progress_bar=false \
        --set checkpoint.every_steps=100000 --set eval.every_steps=100000 >"$out/train_$tag.log" 2>&1
    rm -rf "$out/train_$tag/ckpt"
done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/machine.txt"
"$bin/python" - "$out" "$rounds" <<'PY'
import json, statistics, sys
from pathlib import Path
out, rounds = Path(sys.argv[1]), int(sys.argv[2])
rows = {}
for stage in (1, 2, 3):
    per_round = []
    for r in range(1, rounds + 1):
        bench = json.loads((out / f"bench_zero{stage}_r{r}.json").read_text())
        train = [json.loads(l) for l in (out / f"train_zero{stage}_r{r}" / "metrics.jsonl").read_text().splitlines()]
        steps = [x for x in train if x["split"] == "train" and x["step"] > 5]
        loop_ms = statistics.median(x["step_ms"] for x in steps)
        per_round.append({"engine_step_ms": bench["step_ms"], "loop_step_ms": loop_ms,
                          "loop_overhead": loop_ms / bench["step_ms"] - 1,
                          "data_wait_frac": statistics.median(x["data_wait_frac"] for x in steps)})
    rows[f"zero{stage}"] = {"rounds": per_round,
                            "median_loop_overhead": statistics.median(x["loop_overhead"] for x in per_round)}
(out / "summary.json").write_text(json.dumps(rows, indent=2))
print(json.dumps({k: round(v["median_loop_overhead"], 4) for k, v in rows.items()}))
PY
