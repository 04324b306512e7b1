"""Benchmark `gpt-dist convert to-hf` on a large ZeRO-3 checkpoint written by several ranks.

    python tools/bench_convert.py --preset gpt2-xl --ranks 2 --work /tmp/bench_convert --dtype fp32
    (--zero-stage 1 or 2 measures those layouts instead)

1. Build WORK/ckpt with tools/bench_convert_build.py under the deepspeed launcher (skipped when
   WORK/ckpt already holds a complete checkpoint of that preset and rank count).
2. Convert it with the real command, `gpt-dist convert to-hf WORK/ckpt WORK/hf --dtype DTYPE`, in
   a child process: wall time, and peak memory = the child's ru_maxrss from wait4 (the kernel's
   high-water mark of its resident set, memory-mapped file pages included).
3. Check every converted tensor against checksums taken from the live engine's fp32 master
   weights, so a fast but wrong conversion cannot pass.

While anything runs, a watchdog stops it (its own process group only) if the machine's
available memory falls below --min-free-gb, so a benchmark cannot take a shared machine down.
Prints one JSON line with the results.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GiB = 2**30


def run_guarded(cmd: list[str], min_free_gb: float, env: dict[str, str]) -> tuple[int, float, int]:
    """Run `cmd` in its own process group; returns (exit status, seconds, peak RSS bytes of the child
    and its descendants). Killed (status -9) if available memory drops under `min_free_gb`."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True)
    stop = threading.Event()

    def watchdog() -> None:
        while not stop.wait(0.5):
            if psutil.virtual_memory().available < min_free_gb * GiB:
                print(f"watchdog: available memory under {min_free_gb} GiB; stopping {cmd[0]}", file=sys.stderr)
                os.killpg(proc.pid, signal.SIGKILL)
                return

    guard = threading.Thread(target=watchdog, daemon=True)
    guard.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    return proc.returncode, time.perf_counter() - t0, usage.ru_maxrss * 1024  # ru_maxrss is in KiB on Linux


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def check_against_engine(hf_dir: Path, checksums: dict, dtype: str) -> int:
    """Compare every tensor of model.safetensors with the engine's checksums; returns how many."""
    from safetensors import safe_open

    rel = 1e-9 if dtype == "fp32" else 2e-2  # summation order only / 16-bit rounding
    with safe_open(hf_dir / "model.safetensors", "pt") as f:
        keys = set(f.keys())
        if keys != set(checksums):
            raise SystemExit(f"tensor names differ: {sorted(keys ^ set(checksums))[:5]}")
        for name in sorted(keys):
            t = f.get_tensor(name).double()
            want = checksums[name]
            if sorted(t.shape) != sorted(want["shape"]):
                raise SystemExit(f"{name}: shape {list(t.shape)} vs engine {want['shape']}")
            got_abs = t.abs().sum().item()
            if not math.isclose(got_abs, want["abs_sum"], rel_tol=rel):
                raise SystemExit(f"{name}: |sum| {got_abs} vs engine {want['abs_sum']}")
            if not math.isclose(t.sum().item(), want["sum"], rel_tol=rel, abs_tol=rel * want["abs_sum"]):
                raise SystemExit(f"{name}: sum {t.sum().item()} vs engine {want['sum']}")
            del t
    return len(keys)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="gpt2-xl")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--zero-stage", type=int, default=3, choices=[1, 2, 3])
    p.add_argument("--steps", type=int, default=0, help="optimizer steps before the save (Adam moments on disk)")
    p.add_argument("--work", type=Path, default=Path("/tmp/bench_convert"))
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--min-free-gb", type=float, default=1.5)
    p.add_argument("--clean", action="store_true", help="delete WORK when done")
    args = p.parse_args()
    args.work = args.work.resolve()  # the ranks and the converter run from the repository root

    from gpt_dist.checkpoint.layout import latest_complete_tag, read_metadata
    from gpt_dist.checkpoint.state_dict_adapter import param_shapes
    from gpt_dist.config import ModelConfig, resolve_model_config

    cfg = resolve_model_config(ModelConfig(preset=args.preset))
    n_params = sum(math.prod(s) for s in param_shapes(cfg).values())
    fp32_bytes = 4 * n_params
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
    vocab = REPO.parent / "shared" / "data" / "gpt2.tiktoken"  # machines here have no internet
    if "GPT_DIST_GPT2_VOCAB" not in env and vocab.is_file():
        env["GPT_DIST_GPT2_VOCAB"] = str(vocab)
    ckpt, hf = args.work / "ckpt", args.work / "hf"

    tag = latest_complete_tag(ckpt)
    meta = read_metadata(ckpt / tag) if tag else {}
    build_s = None
    wanted = (args.steps, args.ranks, args.zero_stage, args.preset)
    if (
        meta.get("step"),
        meta.get("world_size"),
        meta.get("zero_stage"),
        meta.get("config", {}).get("model", {}).get("preset"),
    ) != wanted:
        shutil.rmtree(ckpt, ignore_errors=True)
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(BIN / "deepspeed"),
            "--num_gpus",
            str(args.ranks),
            "--master_port",
            str(free_port()),
            str(REPO / "tools" / "bench_convert_build.py"),
            "--out",
            str(ckpt),
            "--preset",
            args.preset,
            "--zero-stage",
            str(args.zero_stage),
            "--steps",
            str(args.steps),
        ]
        status, build_s, _ = run_guarded(cmd, args.min_free_gb, env)
        if status != 0:
            raise SystemExit(f"building the checkpoint failed (status {status})")

    shutil.rmtree(hf, ignore_errors=True)
    cmd = [str(BIN / "gpt-dist"), "convert", "to-hf", str(ckpt), str(hf), "--dtype", args.dtype]
    status, seconds, peak = run_guarded(cmd, args.min_free_gb, env)
    if status != 0:
        raise SystemExit(f"conversion failed (status {status})")
    checked = check_against_engine(hf, json.loads((ckpt / "checksums.json").read_text()), args.dtype)

    result = {
        "preset": args.preset,
        "params": n_params,
        "ranks": args.ranks,
        "zero_stage": args.zero_stage,
        "steps": args.steps,
        "fp32_model_gib": round(fp32_bytes / GiB, 2),
        "checkpoint_gib": round(du(ckpt / latest_complete_tag(ckpt)) / GiB, 2),
        "build_s": round(build_s, 1) if build_s is not None else None,
        "dtype": args.dtype,
        "convert_s": round(seconds, 1),
        "peak_rss_gib": round(peak / GiB, 2),
        "peak_over_fp32": round(peak / fp32_bytes, 2),
        "output_gib": round(du(hf) / GiB, 2),
        "tensors_checked": checked,
    }
    print(json.dumps(result))
    if args.clean:
        shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
