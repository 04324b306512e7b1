"""Writes a large ZeRO-3 checkpoint for tools/bench_convert.py; run under the deepspeed launcher.

    deepspeed --num_gpus 2 tools/bench_convert_build.py --out DIR --preset gpt2-xl [--zero-stage 3]

Under ZeRO-3 the model is built inside deepspeed.zero.Init, so no rank ever holds all of it; the
engine uses the shipped ds_configs/zero{stage}.json with bf16. No training step is taken (a step
of a 1.5B model on a CPU takes long and adds gradients to memory) unless --steps is given:
without a step the checkpoint holds the initial weights, and torch's AdamW has not created its moments yet, so the
optimizer files hold the fp32 master partitions without exp_avg / exp_avg_sq.
Rank 0 also writes DIR/checksums.json: per weight, the sum and absolute sum (float64) of the fp32
master weight gathered from the live engine, to check the converted weights against.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import deepspeed
import torch
import torch.distributed as dist
from deepspeed.utils import safe_get_full_fp32_param

from gpt_dist.checkpoint.layout import METADATA_FILE, METADATA_FORMAT, mark_complete, tag_for_step, write_json_atomic
from gpt_dist.config import Config, ModelConfig, resolve_model_config
from gpt_dist.data.tokenizer import load_tokenizer
from gpt_dist.engine.distributed import init_distributed
from gpt_dist.model.gpt import GPT

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--preset", default="gpt2-xl")
    p.add_argument("--zero-stage", type=int, default=3, choices=[1, 2, 3])
    p.add_argument("--steps", type=int, default=0, help="optimizer steps before saving (creates Adam's moments)")
    p.add_argument(
        "--sub-group-size",
        type=float,
        default=1e8,
        help="ZeRO-3 optimizer sub-group (elements): bounds the fp32 gradient buffer built at init",
    )
    p.add_argument("--local_rank", type=int, default=0)  # passed by the launcher
    args = p.parse_args()
    init_distributed()  # gpt_dist's: gloo on CPU, and it unlinks the shared-memory workspace
    rank, world = dist.get_rank(), dist.get_world_size()
    t0 = time.perf_counter()

    ds_config = json.loads((REPO / "ds_configs" / f"zero{args.zero_stage}.json").read_text())
    ds_config.pop("_comment", None)
    if args.zero_stage == 3:
        ds_config["zero_optimization"]["sub_group_size"] = int(args.sub_group_size)
    ds_config.update(train_micro_batch_size_per_gpu=1, gradient_accumulation_steps=1, bf16={"enabled": True})

    cfg = Config(model=resolve_model_config(ModelConfig(preset=args.preset)))
    cfg.engine.zero_stage, cfg.train.precision = args.zero_stage, "bf16"
    torch.manual_seed(0)
    with deepspeed.zero.Init(config_dict_or_path=ds_config, enabled=args.zero_stage == 3):
        model = GPT(cfg.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
    if rank == 0:
        print(f"engine ready in {time.perf_counter() - t0:.0f}s", flush=True)

    gen = torch.Generator().manual_seed(rank)
    for _ in range(args.steps):  # one 32-token sequence per rank: enough to create every state
        x = torch.randint(0, cfg.model.vocab_size, (1, 33), generator=gen)
        engine.backward(engine(x[:, :-1], x[:, 1:]))
        engine.step()
    tag = tag_for_step(args.steps)
    engine.save_checkpoint(str(args.out), tag=tag)
    if rank == 0:
        print(f"checkpoint saved at {time.perf_counter() - t0:.0f}s", flush=True)

    sums = {}
    for name, param in engine.module.named_parameters():
        full = safe_get_full_fp32_param(param)  # collective: every rank takes part
        if rank == 0:
            # The export drops the embedding's vocab padding rows; so do the checksums.
            t = (full[: cfg.model.vocab_size] if name == "transformer.wte.weight" else full).double()
            sums[name] = {"shape": list(t.shape), "sum": t.sum().item(), "abs_sum": t.abs().sum().item()}
        del full
    dist.barrier()
    if rank == 0:
        (args.out / "checksums.json").write_text(json.dumps(sums, indent=1))
        meta = {
            "format": METADATA_FORMAT,
            "step": args.steps,
            "tokens_seen": 0,
            "zero_stage": args.zero_stage,
            "world_size": world,
            "config": cfg.to_dict(),
            "tokenizer": load_tokenizer(cfg.tokenizer).spec(),
            "chat_template": None,
            "metrics": {},
        }
        write_json_atomic(args.out / tag / METADATA_FILE, meta)
        mark_complete(args.out / tag)
        print(f"done in {time.perf_counter() - t0:.0f}s", flush=True)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(f"rank {rank}: peak RSS {peak_gib:.2f} GiB", flush=True)
    dist.barrier()


if __name__ == "__main__":
    main()
