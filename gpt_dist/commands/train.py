"""`gpt-dist train CONFIG.yaml [MORE.yaml ...] [--set key=value ...]`"""

from __future__ import annotations


CONFIG_REFERENCE = "docs/config.md"


def register(sub) -> None:
    import argparse

    p = sub.add_parser(
        "train", help="pre-train / fine-tune with DeepSpeed (run under any launcher)",
        description="Pre-train, continue pre-training, fine-tune (SFT) or align (DPO) a GPT-2 model from one typed "
                    "config; the same command runs on one process or under any launcher.",
        epilog=f"Every config key with its default and meaning: {CONFIG_REFERENCE} (generated from "
               f"gpt_dist/config.py). Example configs: configs/sample_cpu.yaml (the sample run), configs/gpt2_124m.yaml.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("configs", nargs="+", metavar="CONFIG.yaml", help="YAML files, later ones override earlier ones")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override one config value, e.g. --set train.lr=3e-4 (repeatable; keys: {CONFIG_REFERENCE})")
    p.set_defaults(func=run)


def run(args) -> int:
    from gpt_dist.config import load_config
    from gpt_dist.engine.trainer import train

    cfg = load_config(args.configs, args.overrides)
    result = train(cfg)
    return 0 if result.step > 0 or result.stopped_by_signal else 1
