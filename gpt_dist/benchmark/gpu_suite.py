"""The whole GPU table in one process: `GPU_RUNS=1 tools/bench_train_step.sh OUT` runs

    python -m gpt_dist.benchmark.gpu_suite --out OUT            # on one GPU, bf16, seq 1024
    python -m gpt_dist.benchmark.gpu_suite --out OUT --dry-run  # tiny shapes on a CPU (a test)

and writes OUT/gpu_table.json and OUT/gpu_table.md. Per model (`MODELS`, llama-124m among them:
GPT-2 124M's shape with grouped-query attention; any other preset joins with `--models`):

1. the largest micro-batch that fits, with the chunked LM-head loss and with the plain one
   (doubling from 1 until CUDA runs out of memory, one step each);
2. `chunked`: tokens/s, MFU and peak memory at the chunked loss's largest micro-batch;
3. `compiled`: the same under torch.compile (the compiled model alone);
4. `plain loss + HF`: the plain loss at its own largest micro-batch that fits beside Hugging Face's
   GPT2LMHeadModel (LlamaForCausalLM for llama-124m), both trained alternately (`speedup_vs_hf`);
5. for the first model only, `ZeRO-1` / `ZeRO-3`: DeepSpeed engines at the micro-batch of row 2,
   and their overhead over the bare model. Without deepspeed installed these rows say so and the
   table keeps the bare-model rows.

Before any of it, the attention kernel is checked: on CUDA a profiled forward must run a kernel
whose name says flash (FlashAttention-2: the flash-attn package, or SDPA pinned to its flash
backend), and the same kernel with 4 key/value heads for 12 query heads (grouped-query attention,
k/v not repeated for flash-attn) must match the math reference; the kernel's name goes into the
table. A row that runs out of memory is retried at
half the micro-batch, and says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.util
import json
from pathlib import Path
from typing import Any

import torch

from gpt_dist.benchmark.training import BenchSettings, run_training_benchmark
from gpt_dist.planning import load_model_config

MODELS = ("gpt2", "llama-124m", "gpt2-medium", "gpt2-large")
ZERO_STAGES = (1, 3)


@dataclasses.dataclass
class SuiteSettings:
    models: tuple[str, ...] = MODELS
    seq_len: int = 1024
    precision: str = "bf16"
    steps: int = 10
    warmup: int = 3
    max_micro_batch: int = 256  # the doubling search stops here
    dry_run: bool = False  # tiny shapes on any device: the code path, not the figures

    @classmethod
    def dry(cls) -> "SuiteSettings":
        return cls(models=("tiny",), seq_len=16, precision="bf16", steps=1, warmup=1, max_micro_batch=2, dry_run=True)


def run_suite(s: SuiteSettings) -> dict[str, Any]:
    """Every row of the table (a dict each) and the attention-kernel check."""
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    out: dict[str, Any] = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                           "precision": s.precision, "seq_len": s.seq_len, "dry_run": s.dry_run,
                           "deepspeed": importlib.util.find_spec("deepspeed") is not None,
                           "transformers": importlib.util.find_spec("transformers") is not None,
                           "attention_check": check_flash_kernel(device), "rows": []}
    rows = out["rows"]
    for i, name in enumerate(s.models):
        mb_chunked = largest_micro_batch(s, name, loss_chunk_tokens=None)
        mb_plain = largest_micro_batch(s, name, loss_chunk_tokens=0)
        chunked = _row(s, name, "chunked loss", mb_chunked, largest_micro_batch=mb_chunked)
        rows.append(chunked)
        rows.append(_row(s, name, "chunked loss, compiled", mb_chunked, compile="on"))
        rows.append(_row(s, name, "plain loss + HF" if out["transformers"] else "plain loss (transformers not installed)",
                         mb_plain, loss_chunk_tokens=0, compare_hf=out["transformers"], largest_micro_batch=mb_plain))
        if i == 0:
            for stage in ZERO_STAGES:
                if not out["deepspeed"]:
                    rows.append({"model": name, "variant": f"ZeRO-{stage}", "note": "deepspeed not installed: not run"})
                    continue
                row = _row(s, name, f"ZeRO-{stage}", chunked["micro_batch"], zero_stage=stage)
                if "tokens_per_s" in row and "tokens_per_s" in chunked:
                    row["overhead_vs_bare"] = chunked["tokens_per_s"] / row["tokens_per_s"] - 1
                rows.append(row)
    return out


def largest_micro_batch(s: SuiteSettings, model: str, loss_chunk_tokens: int | None) -> int:
    """The largest power-of-two micro-batch (up to s.max_micro_batch) whose training step fits."""
    fits, mb = 0, 1
    while mb <= s.max_micro_batch:
        try:
            _bench(s, model, mb, steps=1, warmup=0, loss_chunk_tokens=loss_chunk_tokens)
        except torch.OutOfMemoryError:
            break
        finally:
            _release()
        fits, mb = mb, mb * 2
    if fits == 0:
        raise RuntimeError(f"{model}: one sequence of {s.seq_len} tokens does not fit")
    return fits


def _row(s: SuiteSettings, model: str, variant: str, micro_batch: int, **kw) -> dict[str, Any]:
    """One timed run; on running out of memory, again at half the micro-batch."""
    extra = {k: kw.pop(k) for k in ("largest_micro_batch",) if k in kw}
    note = ""
    while True:
        try:
            r = _bench(s, model, micro_batch, steps=s.steps, warmup=s.warmup, **kw)
            break
        except torch.OutOfMemoryError:
            _release()
            if micro_batch == 1:
                return {"model": model, "variant": variant, "note": "out of memory at micro-batch 1"}
            micro_batch //= 2
            note = f"out of memory at {micro_batch * 2}; run at {micro_batch}"
        finally:
            _release()
    row = {"model": model, "variant": variant, "micro_batch": r["micro_batch"], "tokens_per_s": r["tokens_per_s"],
           "mfu": r["mfu"], "peak_memory_gb": r["peak_memory_gb"], "step_ms": r["step_ms"],
           "attn_kernel": r["attn_kernel"], "loss_chunk_tokens": r["loss_chunk_tokens"], "compile": r["compile"],
           "zero_stage": r["zero_stage"], "first_loss": r["first_loss"], **extra}
    if "speedup_vs_hf" in r:
        row.update(speedup_vs_hf=r["speedup_vs_hf"], hf_tokens_per_s=r["hf_tokens_per_s"])
    if note:
        row["note"] = note
    return row


def _bench(s: SuiteSettings, model: str, micro_batch: int, *, steps: int, warmup: int, **kw) -> dict[str, Any]:
    m = load_model_config(model)
    return run_training_benchmark(BenchSettings(model=m, seq_len=s.seq_len, micro_batch=micro_batch, steps=steps,
                                                warmup=warmup, precision=s.precision, **kw))


def _release() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def check_flash_kernel(device: torch.device) -> dict[str, Any]:
    """On CUDA: the GPU kernels a bf16 forward of our attention runs, and whether one of them is
    FlashAttention's. Elsewhere: {"checked": False}."""
    if device.type != "cuda":
        return {"checked": False, "why": f"no CUDA device ({device.type})"}
    from torch.profiler import ProfilerActivity, profile

    from gpt_dist.model.attention import attention_kernel, kernel_name, math_attention

    kernel = attention_kernel("auto", device, torch.bfloat16)
    q, k, v = (torch.randn(2, 1024, 12, 64, device=device, dtype=torch.bfloat16) for _ in range(3))
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        kernel(q, k, v)
        torch.cuda.synchronize()
    names = sorted({e.key for e in prof.key_averages() if "flash" in e.key.lower() or "attention" in e.key.lower()})
    flash = [n for n in names if "flash" in n.lower()]
    if not flash:
        raise RuntimeError(f"attention ran no FlashAttention kernel on {torch.cuda.get_device_name()}: {names}")
    # Grouped-query attention as llama-124m runs it (12 query heads over 4 key/value heads),
    # the kv heads as they are, against the math reference.
    k, v = k[:, :, :4].contiguous(), v[:, :, :4].contiguous()
    gqa_diff = (kernel(q, k, v).float() - math_attention(q, k, v).float()).abs().max().item()
    if gqa_diff > 3e-2:
        raise RuntimeError(f"grouped-query attention ({kernel_name(kernel)}) differs from math by {gqa_diff:.3g}")
    return {"checked": True, "attn_kernel": kernel_name(kernel), "gpu_kernels": flash, "gqa_max_abs_diff": gqa_diff}


def format_markdown(t: dict[str, Any]) -> str:
    a = t["attention_check"]
    lines = [f"device: {t['device']}; precision {t['precision']}; seq {t['seq_len']}; deepspeed "
             f"{'installed' if t['deepspeed'] else 'not installed'}" + ("; DRY RUN (tiny shapes)" if t["dry_run"] else ""),
             "attention: " + (f"{a['attn_kernel']} running {', '.join(a['gpu_kernels'])}; GQA 12/4 heads within "
                              f"{a['gqa_max_abs_diff']:.2g} of math" if a["checked"]
                              else f"not checked ({a['why']})"),
             "",
             "| model | variant | micro-batch (largest) | tokens/s | MFU | peak GiB | vs HF | ZeRO overhead | note |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in t["rows"]:
        def f(key, fmt):
            return fmt.format(r[key]) if r.get(key) is not None else ""
        mb = f"{r['micro_batch']}" + (f" ({r['largest_micro_batch']})" if "largest_micro_batch" in r else "") \
            if "micro_batch" in r else ""
        lines.append(f"| {r['model']} | {r['variant']} | {mb} | {f('tokens_per_s', '{:,.0f}')} | {f('mfu', '{:.1%}')} "
                     f"| {f('peak_memory_gb', '{:.2f}')} | {f('speedup_vs_hf', '{:.2f}x')} "
                     f"| {f('overhead_vs_bare', '{:+.1%}')} | {r.get('note', '')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="the GPU benchmark table (module docstring)")
    p.add_argument("--out", required=True, help="directory for gpu_table.json and gpu_table.md")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated presets (default: {','.join(MODELS)})")
    p.add_argument("--dry-run", action="store_true", help="tiny shapes, one step each: checks the code path anywhere")
    args = p.parse_args(argv)
    s = SuiteSettings.dry() if args.dry_run else SuiteSettings(models=tuple(args.models.split(",")))
    table = run_suite(s)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_table.json").write_text(json.dumps(table, indent=2))
    (out / "gpu_table.md").write_text(format_markdown(table))
    print(format_markdown(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
