"""`gpt-dist bench --model PRESET|model.yaml [...]`: timed training steps (tokens/s, step time,
MFU, peak memory) of either family, optionally against Hugging Face's model of it (`--compare-hf`);
`gpt-dist bench --data SHARDS_DIR`: the training loader alone. Method: gpt_dist.benchmark."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

HELP = "time training steps (tokens/s, MFU, memory), against HF's model with --compare-hf; or the data loader"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help=HELP, description=HELP)
    p.add_argument("--model", metavar="PRESET|model.yaml",
                   help="a preset (gpt2, gpt2-medium, gpt2-large, gpt2-xl, mini, tiny, llama-124m ... llama-1.5b, "
                        "llama-mini, llama-tiny) or a YAML file with a model: section")
    p.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default: model.block_size)")
    p.add_argument("--micro-batch", type=int, default=8, help="sequences per step per rank (default: 8)")
    p.add_argument("--steps", type=int, default=10, help="timed steps (default: 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: 3)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                   help="fp32, or bf16/fp16 autocast over fp32 weights (with --zero-stage: DeepSpeed's bf16/fp16) (default: fp32)")
    p.add_argument("--zero-stage", type=int, default=None, choices=(0, 1, 2, 3),
                   help="time a DeepSpeed ZeRO engine as training runs it (default: the bare model with torch AdamW)")
    p.add_argument("--loss-chunk-tokens", type=int, default=None, metavar="N",
                   help="tokens per piece of the chunked LM-head loss; 0 = the plain loss over all logits at once "
                        "(default: model.loss_chunk_tokens, 1024)")
    p.add_argument("--loss-fraction", type=float, default=1.0, metavar="F",
                   help="the share of each row's tokens with a loss, the rest a prompt without one, as in SFT "
                        "(default: 1, pre-training)")
    p.add_argument("--compile", nargs="?", const="both", default="off", choices=("off", "both", "on"),
                   help="torch.compile (engine.compile: true): `--compile` also times a compiled copy, alternating "
                        "with eager; `--compile on` times the compiled model alone (default: off)")
    p.add_argument("--compare-hf", action="store_true",
                   help="also time Hugging Face's GPT2LMHeadModel / LlamaForCausalLM with the same weights, batches and "
                        "optimizer, alternating")
    p.add_argument("--data", metavar="SHARDS_DIR",
                   help="time the training loader alone over these shards (tokens/s per rank); "
                        "a shard dir or a `gpt-dist prepare` output (its train/)")
    p.add_argument("--batches", type=int, default=200, help="with --data: batches to time (default: 200)")
    p.add_argument("--workers", type=int, default=None,
                   help="with --data: DataLoader worker processes (default: data.num_workers's default, 1)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gpt_dist.errors import UserError

    if not args.model and not args.data:
        raise UserError("give --model PRESET|model.yaml (training steps) and/or --data SHARDS_DIR (the loader alone)")
    import torch

    had_group = torch.distributed.is_initialized()
    # DeepSpeed logs and prints to stdout; with --json, stdout carries the JSON object alone.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        result = _measure(args)
    if _rank() == 0:
        print(json.dumps(result, indent=2) if args.json else _format(result))
    if not had_group:  # --zero-stage started one
        from gpt_dist.engine.distributed import leave_distributed

        leave_distributed()
    return 0


def _measure(args: argparse.Namespace) -> dict:
    result: dict = {}
    if args.model:
        from gpt_dist.benchmark.training import BenchSettings, run_training_benchmark
        from gpt_dist.planning import load_model_config

        settings = BenchSettings(
            model=load_model_config(args.model), seq_len=args.seq_len, micro_batch=args.micro_batch,
            steps=args.steps, warmup=args.warmup, precision=args.precision, zero_stage=args.zero_stage,
            compare_hf=args.compare_hf, compile=args.compile, loss_chunk_tokens=args.loss_chunk_tokens,
            loss_fraction=args.loss_fraction,
        )
        result.update(run_training_benchmark(settings))
    if args.data:
        from gpt_dist.benchmark.data_loader import run_loader_benchmark

        loader = run_loader_benchmark(args.data, micro_batch=args.micro_batch, batches=args.batches,
                                      warmup=args.warmup, workers=args.workers)
        result["loader"] = loader
    return result


def _rank() -> int:
    """This process's rank when a launcher started several (then only rank 0 prints)."""
    import torch

    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def _format(r: dict) -> str:
    lines = []
    if "step_ms" in r:
        from gpt_dist.benchmark.training import format_result

        lines.append(format_result(r))
    if "loader" in r:
        from gpt_dist.benchmark.data_loader import format_loader_result

        lines.append(format_loader_result(r["loader"]))
    return "\n".join(lines)
