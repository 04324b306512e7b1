"""`gpt-dist eval --model CKPT_OR_HF_DIR (--data SHARDS_DIR | --mc FILE.jsonl) [--json]`

Loss and perplexity on a validation shard set, and/or multiple-choice accuracy on a
HellaSwag-format file. Under a launcher (torchrun, deepspeed, srun) every rank evaluates its
share and the sums are added across ranks; rank 0 prints.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

HELP = "evaluate a checkpoint or HF model: validation loss/perplexity, multiple-choice accuracy"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help=HELP, description=HELP)
    p.add_argument("--model", required=True, metavar="CKPT_OR_HF_DIR",
                   help="a gpt_dist checkpoint dir (latest complete tag), a step_NNNNNNNN tag folder, or a Hugging Face GPT-2 or Llama dir")
    p.add_argument("--tag", default=None, help="checkpoint tag to evaluate (default: the latest complete one)")
    p.add_argument("--data", metavar="SHARDS_DIR",
                   help="validation shards: a dir with manifest.json, or the output of `gpt-dist prepare` (its val/ is used)")
    p.add_argument("--mc", metavar="FILE.jsonl", help="HellaSwag-format multiple-choice items {ctx, endings, label}, one per line")
    p.add_argument("--batches", type=int, default=None,
                   help="at most this many micro-batches per rank from --data (default: the whole validation set)")
    p.add_argument("--micro-batch", type=int, default=8, help="sequences per forward pass (default: 8)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                   help="fp32, or bf16/fp16 autocast over fp32 weights (default: fp32)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    # The deepspeed launcher appends --local_rank=N; LOCAL_RANK in the environment says the same.
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gpt_dist.errors import UserError

    if not args.data and not args.mc:
        raise UserError("give --data SHARDS_DIR (loss, perplexity) and/or --mc FILE.jsonl (multiple-choice accuracy)")
    if args.micro_batch < 1:
        raise UserError(f"--micro-batch: {args.micro_batch} must be at least 1")
    if args.batches is not None and args.batches < 1:
        raise UserError(f"--batches: {args.batches} must be at least 1 (leave it out for the whole set)")

    import torch

    had_group = torch.distributed.is_initialized()
    # DeepSpeed logs and prints to stdout; with --json, stdout carries the JSON object alone.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        rank, result = _evaluate(args)
    if rank == 0:
        print(json.dumps(result, indent=2) if args.json else _format(result))
    if not had_group:
        from gpt_dist.engine.distributed import leave_distributed

        leave_distributed()
    return 0


def _evaluate(args: argparse.Namespace) -> tuple[int, dict]:
    from gpt_dist.checkpoint.model_loader import load_model

    rank, world, device = _distributed()
    source = load_model(args.model, device, dtype="fp32", tag=args.tag)
    result: dict = {"model": str(args.model), "source": source.kind, "world_size": world}
    if args.data:
        result.update(_eval_data(args, source, rank, world, device))
    if args.mc:
        from gpt_dist.evaluation.multiple_choice import read_mc_file, score_items

        items = read_mc_file(args.mc)
        mc = score_items(source.model, source.tokenizer, items, device, micro_batch=args.micro_batch,
                         precision=args.precision, rank=rank, world_size=world)
        result["mc"] = {"file": str(args.mc), **mc}
    return rank, result


def _distributed():
    """(rank, world size, device): a process group only when a launcher started several ranks."""
    import torch

    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1 or int(os.environ.get("SLURM_NTASKS", "1")) > 1
    if launched:
        from gpt_dist.engine.distributed import init_distributed

        d = init_distributed()
        return d.rank, d.world_size, d.device
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    return 0, 1, device


def _eval_data(args, source, rank: int, world: int, device) -> dict:
    import logging

    from gpt_dist.data.shard_loader import check_tokenizer_matches
    from gpt_dist.data.shards import read_manifest
    from gpt_dist.errors import UserError
    from gpt_dist.evaluation.lm_loss import evaluate_loss, every_sequence

    val = _split_dir(args.data, "val")
    manifest = read_manifest(val, key="--data")
    block_size = source.model.config.block_size
    if manifest.seq_len > block_size:
        raise UserError(
            f"--data {val}: sequences of {manifest.seq_len} tokens, but the model's block_size is {block_size}; "
            f"evaluate on shards made with `gpt-dist prepare --seq-len {block_size}` (or less)"
        )
    if source.metadata.get("tokenizer"):
        check_tokenizer_matches(manifest.tokenizer, source.tokenizer, where=f"--data {val}")
    else:
        logging.getLogger(__name__).warning("%s records no tokenizer; cannot check it matches %s", args.model, val)
    loader = every_sequence(val, manifest, args.micro_batch, rank, world, max_batches=args.batches)
    try:
        res = evaluate_loss(source.model, loader, device, precision=args.precision)
    except ValueError as e:
        raise UserError(f"--data {val}: {e}") from None
    return {"data": str(val), **res.to_dict()}


def _split_dir(path: str, split: str):
    """A shard set with manifest.json, or a `gpt-dist prepare` output holding `split`/."""
    from pathlib import Path

    from gpt_dist.errors import UserError

    p = Path(path)
    if (p / "manifest.json").is_file():
        return p
    if (p / split / "manifest.json").is_file():
        return p / split
    raise UserError(
        f"--data {p}: no manifest.json in it or in {p / split}; give a shard dir written by `gpt-dist prepare`"
    )


def _format(r: dict) -> str:
    lines = [f"model       {r['model']} ({r['source']}), {r['world_size']} rank(s)"]
    if "loss" in r:
        lines.append(
            f"data        {r['data']}: loss {r['loss']:.4f}, perplexity {r['perplexity']:.2f} over "
            f"{r['tokens']:,} tokens ({r['sequences']:,} sequences)"
        )
    if "mc" in r:
        mc = r["mc"]
        lines.append(
            f"mc          {mc['file']}: acc {mc['acc']:.4f}, acc_norm {mc['acc_norm']:.4f} (per token), "
            f"acc_norm_chars {mc['acc_norm_chars']:.4f} (lm-eval) over {mc['items']:,} items"
        )
    return "\n".join(lines)
