"""`gpt-dist plan`: parameters, FLOPs, memory per GPU, training time and scaling-law
suggestions for a model shape, before booking a cluster. The figures come from
gpt_dist.planning."""

from __future__ import annotations

import argparse
import json

HELP = "size a run: memory per GPU for ZeRO 0-3, the stage and micro-batch that fit, batch layout, time, lr"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("plan", help=HELP, description=HELP)
    p.add_argument("--model", required=True, metavar="PRESET|model.yaml",
                   help="a preset (gpt2, gpt2-medium, gpt2-large, gpt2-xl, mini, tiny) or a YAML file with a model: section")
    p.add_argument("--seq-len", type=int, default=None, help="training sequence length (default: model.block_size)")
    p.add_argument("--tokens", type=_count("--tokens"), default=None,
                   help="training tokens, e.g. 10B, 300M or 3e10 (default: Chinchilla, 20 x params)")
    p.add_argument("--global-batch-tokens", type=_count("--global-batch-tokens"), default=None,
                   help="tokens per optimizer step, e.g. 524288 or 0.5M (default: DeepSeek-LLM's suggestion)")
    p.add_argument("--gpus", type=int, default=8, help="data-parallel GPUs (default: 8)")
    p.add_argument("--gpu", default="h100-80gb", help="a100-40gb | a100-80gb | h100-80gb | h200 (default: h100-80gb)")
    p.add_argument("--zero-stage", type=int, default=None,
                   help="the ZeRO stage you intend to use, 0-3 (default: the cheapest that fits)")
    p.add_argument("--micro-batch", type=int, default=8, help="sequences per GPU per forward pass (default: 8)")
    p.add_argument("--activation-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                   help="recompute each layer in backward, keeping only its input (default: the model's setting, off)")
    p.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation to assume (default: 0.4)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.set_defaults(func=run)


def _count(flag: str):
    """An argparse type for token counts with K/M/B/T suffixes; errors name the flag."""

    def parse(text: str) -> float:
        from gpt_dist.planning import parse_count

        try:
            return parse_count(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{e}") from None

    parse.__name__ = flag  # argparse names the type in its message: "invalid --tokens value"
    return parse


def run(args: argparse.Namespace) -> int:
    from gpt_dist.planning import format_plan, load_model_config, make_plan

    plan = make_plan(
        load_model_config(args.model),
        seq_len=args.seq_len,
        tokens=args.tokens,
        gpus=args.gpus,
        gpu=args.gpu,
        zero_stage=args.zero_stage,
        micro_batch=args.micro_batch,
        global_batch_tokens=args.global_batch_tokens,
        activation_checkpointing=args.activation_checkpointing,
        mfu=args.mfu,
    )
    print(json.dumps(plan, indent=2) if args.json else format_plan(plan))
    return 0
