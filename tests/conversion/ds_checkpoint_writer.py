"""Writes real DeepSpeed checkpoints of a tiny GPT, one per ZeRO stage, for the conversion tests.

Run under the DeepSpeed launcher or tests/rank_launcher.py (on a machine without a GPU they start
gloo ranks on the CPU):

    deepspeed --num_gpus 2 tests/conversion/ds_checkpoint_writer.py --out DIR --runs 0:fp32 2:bf16 3:fp32

For each run `STAGE:PRECISION[:lora]` it trains a few optimizer steps with the shipped
ds_configs/zero{STAGE}.json, saves `DIR/zero{STAGE}_{PRECISION}[_lora]/step_00000003/` the way a
training run does (DeepSpeed's save_checkpoint, then gpt_dist.json, then COMPLETE), and
stores what the live engine holds as the reference the tests compare against:
`reference.pt` = {"idx": (B, T) ids, "logits": the engine's logits on idx (fp32 runs only),
"fp32_params": the full fp32 master weights of the trained parameters, gathered from every rank,
"initial": the weights before training}. A `lora` run trains peft adapters (LORA) on the frozen
initial weights, as `gpt-dist train` does with lora.r > 0.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import deepspeed
import torch
import torch.distributed as dist
from deepspeed.utils import safe_get_full_fp32_param

from gpt_dist.checkpoint.layout import METADATA_FILE, METADATA_FORMAT, tag_for_step, write_json_atomic
from gpt_dist.checkpoint.manifest import write_manifest
from gpt_dist.config import Config, LoraConfig, ModelConfig, resolve_model_config
from gpt_dist.data.tokenizer import load_tokenizer
from gpt_dist.engine.distributed import init_distributed
from gpt_dist.model.gpt import GPT
from gpt_dist.model.lora import add_lora

REPO_ROOT = Path(__file__).resolve().parents[2]
STEPS = 3
MICRO_BATCH, SEQ = 2, 16
LORA = LoraConfig(r=4, alpha=8.0, dropout=0.0)


def tiny_model_config() -> ModelConfig:
    # The "tiny" shape with the GPT-2 vocabulary, so the tokenizer export is the real one.
    return ModelConfig(preset="tiny")


def ds_config(stage: int, precision: str) -> dict:
    cfg = json.loads((REPO_ROOT / "ds_configs" / f"zero{stage}.json").read_text())
    cfg.pop("_comment", None)
    cfg.update(
        train_micro_batch_size_per_gpu=MICRO_BATCH,
        gradient_accumulation_steps=1,
        gradient_clipping=1.0,
    )
    if precision == "bf16":
        cfg["bf16"] = {"enabled": True}
    return cfg


def train_and_save(out: Path, stage: int, precision: str, use_lora: bool) -> None:
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(1234)  # same initial weights on every rank
    model = GPT(tiny_model_config())
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    if use_lora:
        model = add_lora(model, LORA)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config(stage, precision))
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(100 + rank)  # each rank sees its own data
    loss = None
    for _ in range(STEPS):
        x = torch.randint(0, vocab, (MICRO_BATCH, SEQ + 1), generator=gen)
        loss = engine(x[:, :-1], x[:, 1:])
        engine.backward(loss)
        engine.step()

    run_dir = out / (f"zero{stage}_{precision}" + ("_lora" if use_lora else ""))
    tag = tag_for_step(STEPS)
    engine.save_checkpoint(str(run_dir), tag=tag)

    # Reference values from the live engine; every rank takes part in the gathers.
    idx = torch.randint(0, vocab, (2, 24), generator=torch.Generator().manual_seed(7))
    engine.eval()
    with torch.no_grad():
        logits = engine(idx).float()
    fp32_params = {}
    for name, p in engine.module.named_parameters():
        if not p.requires_grad:
            continue  # frozen: no fp32 master copy; "initial" holds its value
        full = safe_get_full_fp32_param(p)
        fp32_params[name] = (full if full is not None else p.detach()).float().clone()
    dist.barrier()
    if rank == 0:
        ref = {"idx": idx, "fp32_params": fp32_params, "initial": initial}
        if precision == "fp32":
            ref["logits"] = logits
        torch.save(ref, run_dir / "reference.pt")
        cfg = Config(model=resolve_model_config(tiny_model_config()))  # shape fields filled, as in a run
        cfg.engine.zero_stage, cfg.train.precision = stage, precision
        if use_lora:
            cfg.lora = LORA
        meta = {
            "format": METADATA_FORMAT,
            "step": STEPS,
            "tokens_seen": STEPS * MICRO_BATCH * SEQ * world,
            "zero_stage": stage,
            "world_size": world,
            "config": cfg.to_dict(),
            "tokenizer": load_tokenizer(cfg.tokenizer).spec(),
            "chat_template": None,
            "metrics": {"train/loss": loss.item()},
        }
        write_json_atomic(run_dir / tag / METADATA_FILE, meta)
        write_manifest(run_dir / tag)
    dist.barrier()
    engine.destroy()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--runs", nargs="+", default=["0:fp32", "2:bf16", "3:fp32"], help="STAGE:PRECISION[:lora] ...")
    p.add_argument("--local_rank", type=int, default=0)  # passed by the launcher
    args = p.parse_args()
    init_distributed()  # gpt_dist's: gloo on CPU, and it unlinks the shared-memory workspace
    for run in args.runs:
        stage, precision, *lora = run.split(":")
        train_and_save(args.out, int(stage), precision, use_lora=lora == ["lora"])


if __name__ == "__main__":
    main()
