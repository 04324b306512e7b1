"""One optimizer step of each objective on a fixed global batch of 4 units, split into
micro-batches and ranks as asked: shared by test_train_step.py (one process) and
split_step_run.py (several ranks)."""

from __future__ import annotations

import torch

from gpt_dist.batch_geometry import run_geometry
from gpt_dist.config import load_config
from gpt_dist.engine.deepspeed_setup import initialize
from gpt_dist.engine.distributed import DistInfo, all_reduce_sum
from gpt_dist.engine.objectives import IGNORE_INDEX, LanguageModeling
from gpt_dist.engine.trainer import step_counts, train_step
from gpt_dist.finetune.objectives import DPO, SFT
from gpt_dist.model.gpt import GPT

UNITS, T, VOCAB = 4, 16, 96
# trained tokens per SFT row / per DPO reply: micro-batches of one unit differ by up to 15x
TRAINED = [15, 1, 8, 2]


def config(objective: str, micro: int, world: int, zero_stage: int = 0):
    stage = {"lm": "pretrain", "sft": "sft", "dpo": "dpo", "dpo_nll": "dpo"}[objective]
    extra = ["data.train=[{path: unused.jsonl}]", "checkpoint.init_from=unused"] if stage != "pretrain" else []
    return load_config(overrides=[
        f"stage={stage}", "model.n_layer=2", "model.n_head=2", "model.n_embd=32", "model.block_size=16",
        f"model.vocab_size={VOCAB}", "model.vocab_pad_multiple=1", "model.attn_impl=sdpa",
        f"train.seq_len={T}", f"train.micro_batch_size={micro}", f"train.global_batch_size={UNITS}",
        "train.precision=fp32", "train.grad_clip=1.0", "train.lr=1e-2", f"engine.zero_stage={zero_stage}", *extra,
    ]), world


def objective_of(name: str):
    # dpo_nll: DPO with the chosen replies' NLL term (finetune.dpo_nll_weight), one number per pair
    return {"lm": LanguageModeling(), "sft": SFT(), "dpo": DPO(beta=0.1), "dpo_nll": DPO(beta=0.1, nll_weight=1.0)}[name]


def units(objective: str) -> list[dict[str, torch.Tensor]]:
    """The global batch, unit by unit (a sequence, or a DPO pair of two sequences)."""
    g = torch.Generator().manual_seed(7)

    def row(trained: int | None):
        ids = torch.randint(0, VOCAB, (T,), generator=g)
        labels = torch.randint(0, VOCAB, (T,), generator=g)
        if trained is not None:  # a prompt, then `trained` reply tokens, then padding
            labels[:] = IGNORE_INDEX
            start = T - trained - 1 if trained < T - 1 else 0
            labels[start : start + trained] = torch.randint(0, VOCAB, (trained,), generator=g)
        return ids, labels

    out = []
    for n in TRAINED:
        if objective == "lm":
            ids, labels = row(None)
            out.append({"input_ids": ids[None], "labels": labels[None]})
        elif objective == "sft":
            ids, labels = row(n)
            out.append({"input_ids": ids[None], "labels": labels[None]})
        else:
            (ci, cl), (ri, rl) = row(n), row(max(1, n // 2))
            out.append({"input_ids": torch.stack([ci, ri]), "labels": torch.stack([cl, rl]),
                        "ref_logps": -torch.rand(2, generator=g) * 20})
    return out


def collate(objective: str, parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    if not objective.startswith("dpo"):
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    # a pair batch is the B chosen sequences, then the B rejected ones
    return {k: torch.cat([p[k][:1] for p in parts] + [p[k][1:] for p in parts]) for k in parts[0]}


def run_one_step(objective: str, micro: int, dist: DistInfo, zero_stage: int = 0, poison: int | None = None):
    """One step of `objective` on this rank's share; returns (outcome, grad_norm, the flat gradient
    the optimizer stepped with (None when the update was skipped), engine).
    poison: index of this rank's micro-batch whose loss is made NaN."""
    cfg, world = config(objective, micro, dist.world_size, zero_stage)
    geometry = run_geometry(cfg, world)
    torch.manual_seed(0)
    engine, _ = initialize(GPT(cfg.model), cfg.train, cfg.engine, geometry, dist.device)
    all_units = units(objective)
    batches = []
    for m in range(geometry.grad_accum):  # the order EpochLoader gives: rank r takes [p + r*B, p + (r+1)*B)
        start = m * micro * world + dist.rank * micro
        batches.append(collate(objective, all_units[start : start + micro]))
    obj = objective_of(objective)
    if poison is not None:
        obj = _Poisoned(obj, poison)
    counts = all_reduce_sum(step_counts(obj, batches, dist.device)).tolist()
    # the gradient the optimizer is given (after clipping, which scales both splits alike)
    inner = getattr(engine.optimizer, "optimizer", engine.optimizer)
    seen: list[torch.Tensor] = []
    inner.register_step_pre_hook(lambda opt, args, kwargs: seen.extend(
        p.grad.detach().flatten().clone() for g in opt.param_groups for p in g["params"] if p.grad is not None))
    out, _, _ = train_step(engine, obj, geometry, batches, counts,
                           prefetch=lambda: (None, torch.zeros(3, dtype=torch.float64)))
    grad = torch.cat(seen) if seen else None
    return out, engine.get_global_grad_norm(), grad, engine


class _Poisoned:
    def __init__(self, inner, at: int):
        self.inner, self.at, self.calls = inner, at, 0

    def count(self, batch):
        return self.inner.count(batch)

    def loss(self, model, batch):
        out = self.inner.loss(model, batch)
        if self.calls == self.at:
            out.loss = out.loss * float("nan")
        self.calls += 1
        return out


def reference_table(dist: DistInfo, zero_stage: int, pairs: int = 5) -> torch.Tensor:
    """DPO reference log-probs of `pairs` pairs scored by a policy engine (the pairs split over
    the ranks unevenly when `pairs` is odd)."""
    from gpt_dist.finetune.dpo import reference_logps

    cfg, world = config("dpo", 1, dist.world_size, zero_stage)
    torch.manual_seed(0)
    engine, _ = initialize(GPT(cfg.model), cfg.train, cfg.engine, run_geometry(cfg, world), dist.device)
    all_units = (units("dpo") * 2)[:pairs]
    (table,) = reference_logps(engine, dist, [(pairs, lambda idx: collate("dpo", [all_units[i] for i in idx]))],
                               batch_size=2)
    return table
