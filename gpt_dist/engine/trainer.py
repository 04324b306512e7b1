"""The one training loop, for every stage and every ZeRO stage.

    result = train(load_config(["configs/sample_cpu.yaml"]))

Per optimizer step: set the learning rate, run the step's micro-batches through the objective
and DeepSpeed (forward, backward), each micro-batch's summed loss divided by the count of the
whole step (all micro-batches, all ranks), then one optimizer update; then log / evaluate /
checkpoint on their cadences. The loop's own communication is one all-reduce and one host sync
per step: it carries the non-finite flag, the stop request, the loss sums and the next step's
counts (its micro-batches are fetched while this step's gradients are complete). A step with a
NaN/inf loss on any rank is skipped as a whole on every rank (no update, gradients zeroed) and
counted; `train.max_nonfinite_steps` of them in a row stop the run, keeping the last good
checkpoint. SIGUSR1 / SIGTERM / SIGINT finish the step, save and exit cleanly (SIGUSR1 inside SLURM
also requeues the job).
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from gpt_dist.batch_geometry import BatchGeometry, run_geometry, total_steps
from gpt_dist.config import Config
from gpt_dist.checkpoint import training_state as checkpointing
from gpt_dist.checkpoint.model_loader import load_init_weights
from gpt_dist.engine.callbacks import Callback, default_callbacks
from gpt_dist.engine.deepspeed_setup import initialize
from gpt_dist.engine.distributed import DistInfo, all_reduce_sum, barrier, init_distributed
from gpt_dist.engine.schedule import lr_at
from gpt_dist.engine.signals import StopSignal
from gpt_dist.engine.objectives import Objective, build_objective
from gpt_dist.errors import UserError
from gpt_dist.model import lora
from gpt_dist.model.factory import build_model

log = logging.getLogger(__name__)


class NonFiniteLossError(UserError):
    """Too many NaN/inf losses in a row: the run stopped; the last good checkpoint is kept."""


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    tokens: int = 0  # real (unpadded) input tokens of the applied steps, all ranks
    skipped_batches: int = 0  # optimizer steps' global batches dropped for a non-finite loss
    consecutive_nonfinite: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(step=self.step, tokens=self.tokens, skipped_batches=self.skipped_batches,
                    consecutive_nonfinite=self.consecutive_nonfinite)


@dataclass
class TrainResult:
    step: int
    tokens: int
    last_metrics: dict[str, Any] = field(default_factory=dict)
    stopped_by_signal: str | None = None


def train(cfg: Config, objective: Objective | None = None, callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Run (or resume) training as configured. Call once per process under any launcher.

    objective: replaces the stage's own (gpt_dist.engine.objectives); callbacks: added to the
    configured ones (gpt_dist.engine.callbacks), on every rank."""
    dist = init_distributed()
    return Trainer(cfg, dist, objective or build_objective(cfg), callbacks).run()


@dataclass
class StepOutcome:
    """What one optimizer step's all-reduce brought back, as host numbers (global sums)."""

    skipped: bool  # a NaN/inf loss on some rank: no update was applied
    stop: bool  # a stop signal arrived on some rank
    loss: float  # mean loss of the step: summed loss / units
    metrics: dict[str, float]  # the objective's metric sums divided by the units
    units: float  # what the loss is averaged over: trained tokens, or DPO pairs
    tokens: float  # real input tokens (no padding)
    trained_tokens: float
    lr: float = 0.0  # the learning rate the step used


@contextmanager
def _update_skipped(engine):
    """engine.step() inside advances DeepSpeed's step counters and zeroes the gradients, but the
    inner optimizer does not update (weights, moments and Adam's step count stay)."""
    inner = getattr(engine.optimizer, "optimizer", engine.optimizer)  # the torch optimizer in a ZeRO wrapper
    inner.step = lambda *args, **kwargs: None  # shadows the class's step for this instance only
    try:
        yield
    finally:
        del inner.step


class Trainer:
    def __init__(self, cfg: Config, dist: DistInfo, objective: Objective, callbacks: Sequence[Callback] = ()):
        from gpt_dist.data.tokenizer import load_tokenizer

        self.cfg, self.dist, self.objective = cfg, dist, objective
        self.run_dir = Path(cfg.run_dir)
        if dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        barrier()
        self.geometry = run_geometry(cfg, dist.world_size)
        self.total_steps = total_steps(cfg.train, self.geometry)
        # pretrain / CPT: the tokenizer the shards' manifest names (gpt_dist.data.shard_tokenizer)
        own = getattr(objective, "tokenizer", None)
        self.tokenizer = own(cfg) if own is not None else None
        if self.tokenizer is None:
            self.tokenizer = load_tokenizer(cfg.tokenizer)
        if self.tokenizer.vocab_size > cfg.model.vocab_size:
            raise UserError(
                f"model.vocab_size={cfg.model.vocab_size} is smaller than the tokenizer's {self.tokenizer.vocab_size} "
                f"tokens; set model.vocab_size: {self.tokenizer.vocab_size}"
            )
        torch.manual_seed(cfg.train.seed)  # same initial weights on every rank
        self.train_loader = objective.train_loader(cfg, dist, self.tokenizer)
        self.val_loader = objective.val_loader(cfg, dist, self.tokenizer)

        model = build_model(cfg.model)
        self.lora_params: int | None = None
        self.flops_per_token, self.peak_flops = _flops(cfg, dist)
        self.state = TrainState()
        plan = checkpointing.plan_resume(cfg, dist)
        self._schedule_changes = checkpointing.check_schedule(plan, cfg)
        if plan is None and cfg.checkpoint.init_from:
            load_init_weights(model, cfg.checkpoint.init_from, cfg.model)
        if cfg.lora.r > 0:  # after the starting weights, before DeepSpeed sees the parameters
            model = lora.add_lora(model, cfg.lora)
            trainable, total = lora.trainable_parameters(model)
            self.lora_params = trainable
            log.info("LoRA r=%d on %s: %d of %d parameters train", cfg.lora.r, list(cfg.lora.target_modules), trainable, total)
            if plan is not None and plan.world_changed:
                checkpointing.load_frozen_weights(model, plan, cfg)
        self.engine, self.ds_config = initialize(model, cfg.train, cfg.engine, self.geometry, dist.device,
                                                 load_universal=bool(plan and plan.universal))
        cbs = default_callbacks(cfg, self.flops_per_token, self.peak_flops) + list(callbacks)
        self.callbacks: list[Callback] = sorted(cbs, key=lambda cb: -cb.priority)  # stable: equal keep their order
        self.plan = plan
        if plan is not None:
            client = checkpointing.load_for_resume(self.engine, plan, cfg, dist)
            self.state = TrainState(**client["train_state"])
            self.state.consecutive_nonfinite = 0
            self.train_loader.load_state_dict(client["loader"])
            objective.load_state_dict(client.get("objective") or {})
            saved = client.get("callbacks") or {}
            for cb in self.callbacks:
                if cb.name in saved:
                    cb.load_state_dict(saved[cb.name])
        objective.start(self.engine, dist)  # before the first update: DPO scores its reference here
        self.start_step = self.state.step
        self.last_metrics: dict[str, Any] = {}
        self.last_saved_step = self.state.step if plan is not None else -1
        self.last_checkpoint: Path | None = Path(cfg.checkpoint_dir) / plan.tag if plan is not None else None
        self._loader_state = self.train_loader.state_dict()  # position before the prefetched micro-batches
        self.data_wait = 0.0  # seconds spent waiting for micro-batches (the speed monitor resets it)

    # ------------------------------------------------------------------ hooks and helpers

    def event(self, name: str, **fields) -> None:
        """Record an event: events.jsonl, the console (as a sentence) and any callback."""
        e = {"event": name, "step": self.state.step, **fields}
        for cb in self.callbacks:
            cb.on_event(self, e)

    def report_log(self, metrics: dict[str, Any]) -> None:
        """Hand a train row to the callbacks (the speed monitor completes it first)."""
        for cb in self.callbacks:
            cb.on_log(self, metrics)
        self.last_metrics = metrics

    def report_eval(self, metrics: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_eval(self, metrics)

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.dist.device, non_blocking=True) for k, v in batch.items()}

    def _fetch(self, data) -> tuple[list[dict[str, torch.Tensor]], torch.Tensor]:
        """The next step's micro-batches on this rank and their counts (see step_counts), on the
        device (reduced with the current step's all-reduce)."""
        self._loader_state = self.train_loader.state_dict()
        t0 = time.perf_counter()
        batches = [self._to_device(next(data)) for _ in range(self.geometry.grad_accum)]
        self.data_wait += time.perf_counter() - t0
        return batches, step_counts(self.objective, batches, self.dist.device)

    def _announce(self) -> None:
        cfg, g = self.cfg, self.geometry
        if self.plan is not None:
            self.event("resumed", tag=self.plan.tag, universal=self.plan.universal, world_size=self.dist.world_size)
            if self._schedule_changes:
                self.event("schedule_changed", changes="; ".join(self._schedule_changes))
        else:
            self.event("fresh_start", checkpoint_dir=cfg.checkpoint_dir, resume=cfg.checkpoint.resume)
            if cfg.checkpoint.init_from:
                self.event("init_from", path=cfg.checkpoint.init_from)
        if self.state.step >= self.total_steps:
            self.event("already_complete", total_steps=self.total_steps, checkpoint_dir=cfg.checkpoint_dir)
        elif self.state.step == 0:
            self.event("start", total_steps=self.total_steps, grad_accum=g.grad_accum, world_size=g.world_size,
                       global_batch_size=g.global_batch_size, micro_batch_size=g.micro_batch_size, unit=g.unit,
                       **({"lora_trainable_params": self.lora_params} if self.lora_params else {}))

    # ------------------------------------------------------------------------- the loop

    def run(self) -> TrainResult:
        cfg, engine = self.cfg, self.engine
        stop = StopSignal()
        for cb in self.callbacks:
            cb.on_train_start(self)
        self._announce()
        stopped_by = None
        exit_at = None if cfg.train.exit_after_steps is None else self.state.step + cfg.train.exit_after_steps
        engine.train()
        if self.state.step < self.total_steps:
            data = iter(self.train_loader)
            batches, local_counts = self._fetch(data)
            counts = all_reduce_sum(local_counts).tolist()  # once; later steps carry the next counts
        while self.state.step < self.total_steps:
            lr = lr_at(self.state.step, self.total_steps, cfg.train)
            for group in engine.optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)  # Muon's group runs at muon_lr / lr of it
            out, batches, counts = self._step(batches, counts, data, stop)
            out.lr = lr
            if out.skipped:
                self._skip_nonfinite()
            else:
                self.state.consecutive_nonfinite = 0
                self.state.step += 1
                self.state.tokens += int(out.tokens)
                for cb in self.callbacks:  # logging, evaluation, checkpoint cadence, ...
                    cb.on_step_end(self, out)
            if out.stop:
                stopped_by = stop.name or "SIGUSR1/SIGTERM on another rank"
                self.event("signal", signal=stopped_by)
                break
            if self.state.step == exit_at and self.state.step < self.total_steps:
                self.event("exit_after_steps", steps=cfg.train.exit_after_steps)
                break

        if self.last_saved_step != self.state.step:
            self.save()
        result = TrainResult(step=self.state.step, tokens=self.state.tokens, last_metrics=self.last_metrics,
                             stopped_by_signal=stopped_by)
        if self.state.step >= self.total_steps:
            self.event("finished", tokens=self.state.tokens)
        for cb in self.callbacks:
            cb.on_train_end(self, result)
        result.last_metrics = self.last_metrics
        barrier()
        return result

    def _step(self, batches, counts: list[float], data, stop: StopSignal):
        return train_step(self.engine, self.objective, self.geometry, batches, counts,
                          prefetch=lambda: self._fetch(data), stop_requested=stop.name is not None)

    def _skip_nonfinite(self) -> None:
        self.state.skipped_batches += 1
        self.state.consecutive_nonfinite += 1
        self.event("nonfinite_loss_skipped", skipped_batches=self.state.skipped_batches)
        if self.state.consecutive_nonfinite >= self.cfg.train.max_nonfinite_steps:
            self.event("stopped_nonfinite", consecutive=self.state.consecutive_nonfinite)
            raise NonFiniteLossError(
                f"{self.state.consecutive_nonfinite} NaN/inf losses in a row at step {self.state.step}; the last good "
                f"checkpoint in {self.cfg.checkpoint_dir} is kept. Lower train.lr, raise train.warmup_fraction or "
                "check the data, then resume"
            )

    @torch.no_grad()
    def evaluate(self) -> float:
        self.engine.eval()
        # summed loss, units, then the objective's metric sums (every rank has the same batches'
        # count and the same keys, so the all-reduce below lines up)
        sums: torch.Tensor | None = None
        names: list[str] = []
        for batch in self.val_loader:
            loss_sum, n, *extra = self.objective.eval_loss(self.engine, self._to_device(batch))
            more = extra[0] if extra else {}
            names = sorted(more)
            row = torch.stack([loss_sum.double(), n.double(), *(more[k].double() for k in names)])
            sums = row if sums is None else sums + row
        if sums is None:
            sums = torch.zeros(2, device=self.dist.device, dtype=torch.float64)
        total, count, *values = all_reduce_sum(sums).tolist()
        self.engine.train()
        val = total / max(count, 1.0)
        metrics = dict(split="val", step=self.state.step, tokens=self.state.tokens, loss=val)
        metrics.update({k: v / max(count, 1.0) for k, v in zip(names, values)})
        if self.objective.val_perplexity:
            metrics["perplexity"] = math.exp(min(val, 50))
        self.last_metrics = {**self.last_metrics, "val_loss": val}
        self.report_eval(metrics)
        return val

    def save(self) -> None:
        client = {"train_state": self.state.to_dict(), "loader": self._loader_state,
                  "objective": self.objective.state_dict(),
                  "callbacks": {cb.name: cb.state_dict() for cb in self.callbacks}}
        metadata = {
            "tokens_seen": self.state.tokens,
            "config": self.cfg.to_dict(),
            "tokenizer": self.tokenizer.spec(),
            "chat_template": getattr(self.objective, "chat_template", None),
            "metrics": self.last_metrics,
        }
        tag_dir = checkpointing.save(self.engine, self.cfg, self.dist, self.state.step, client, metadata)
        self.last_saved_step, self.last_checkpoint = self.state.step, tag_dir
        self.event("checkpoint", tag=tag_dir.name)
        for cb in self.callbacks:
            cb.on_checkpoint(self, tag_dir)


def step_counts(objective: Objective, batches: list[dict[str, torch.Tensor]], device: torch.device) -> torch.Tensor:
    """(3,) float64 on `device`: units, real tokens and trained tokens of this rank's micro-batches
    (gpt_dist.engine.objectives.Counts summed)."""
    counts = [torch.stack([c.to(device) for c in objective.count(b)]) for b in batches]
    return torch.stack(counts).sum(dim=0).double()


def train_step(engine, objective: Objective, geometry: BatchGeometry, batches: list[dict[str, torch.Tensor]],
               counts: list[float], *, prefetch: Callable[[], tuple[Any, torch.Tensor]], stop_requested: bool = False):
    """One optimizer step over this rank's `batches` (geometry.grad_accum micro-batches).

    counts: the step's global (units, tokens, trained tokens), every rank's step_counts() summed.
    prefetch: returns the next step's (batches, local counts); called once the gradients of this
    step are complete, so that the step's single all-reduce also carries the next counts.
    Returns (StepOutcome, next batches, next step's global counts).
    """
    dev = next(iter(batches[0].values())).device
    units = max(counts[0], 1.0)
    # engine.backward divides the loss by the accumulation steps, and the gradient all-reduce
    # averages over the ranks; with this factor the gradient is that of (step's loss sum) / units.
    scale = geometry.grad_accum * geometry.world_size / units
    bad = torch.zeros((), dtype=torch.float64, device=dev)
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    metric_sums: dict[str, torch.Tensor] = {}
    for i, batch in enumerate(batches):
        out = objective.loss(engine, batch)
        loss = out.loss.detach().double()
        bad += (~torch.isfinite(loss)).double()
        engine.backward(out.loss * scale)
        loss_sum += loss
        for k, v in out.metrics.items():
            metric_sums[k] = metric_sums.get(k, 0) + v.detach().double()
        if i < len(batches) - 1:
            engine.step()  # not an accumulation boundary: DeepSpeed only counts the micro-step
    next_batches, next_counts = prefetch()
    keys = sorted(metric_sums)
    stop_flag = torch.tensor(float(stop_requested), dtype=torch.float64, device=dev)
    packed = torch.cat([torch.stack([bad, stop_flag, loss_sum, *(metric_sums[k] for k in keys)]),
                        next_counts.to(dev)])
    reduced = all_reduce_sum(packed).tolist()  # the step's one collective and one host sync
    skipped = reduced[0] > 0
    if skipped:
        with _update_skipped(engine):
            engine.step()
    else:
        engine.step()
    outcome = StepOutcome(
        skipped=skipped, stop=reduced[1] > 0, loss=reduced[2] / units,
        metrics={k: v / units for k, v in zip(keys, reduced[3 : 3 + len(keys)])},
        units=counts[0], tokens=counts[1], trained_tokens=counts[2],
    )
    return outcome, next_batches, reduced[3 + len(keys):]


def _flops(cfg: Config, dist: DistInfo) -> tuple[float, float | None]:
    from gpt_dist.model.cost import detect_peak_flops, flops_per_token

    peak = detect_peak_flops(torch.cuda.get_device_name(dist.device)) if dist.device.type == "cuda" else None
    return flops_per_token(cfg.model, cfg.seq_len), peak
