"""`gpt-dist train CONFIG.yaml [MORE.yaml ...] [--set key=value ...]`"""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("train", help="pre-train / fine-tune with DeepSpeed (run under any launcher)")
    p.add_argument("configs", nargs="+", metavar="CONFIG.yaml", help="YAML files, later ones override earlier ones")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set train.lr=3e-4 (repeatable)")
    p.set_defaults(func=run)


def run(args) -> int:
    from gpt_dist.config import load_config
    from gpt_dist.engine.trainer import train

    cfg = load_config(args.configs, args.overrides)
    result = train(cfg)
    return 0 if result.step > 0 or result.stopped_by_signal else 1
