"""The one training loop, for every stage and every ZeRO stage.

    result = train(load_config(["configs/sample_cpu.yaml"]))

Per optimizer step: set the learning rate, run `gradient_accumulation_steps` micro-batches
through DeepSpeed (forward, backward, step), then log / evaluate / checkpoint on their
cadences. A micro-batch whose loss is NaN or inf on any rank is skipped on all ranks and
counted; `train.max_nonfinite_steps` of them in a row stop the run, keeping the last good
checkpoint. SIGUSR1 / SIGTERM / SIGINT finish the step, save and exit cleanly (SIGUSR1 inside SLURM
also requeues the job).
"""

from __future__ import annotations

import logging
import math
import os
import resource
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gpt_dist.checkpoint import training_state as checkpointing
from gpt_dist.checkpoint.loader import load_init_weights
from gpt_dist.config import Config, gradient_accumulation_steps, total_steps
from gpt_dist.engine.callbacks import Callback, JsonlMetrics, LossCurve, ProgressBar, Wandb
from gpt_dist.engine.deepspeed_setup import initialize
from gpt_dist.engine.distributed import DistInfo, all_reduce_mean, any_rank, barrier, init_distributed
from gpt_dist.engine.schedule import lr_at
from gpt_dist.engine.signals import StopSignal
from gpt_dist.engine.stages import Stage, build_stage
from gpt_dist.errors import UserError
from gpt_dist.model import lora
from gpt_dist.model.gpt import GPT

log = logging.getLogger(__name__)


class NonFiniteLossError(UserError):
    """Too many NaN/inf losses in a row: the run stopped; the last good checkpoint is kept."""


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    tokens: int = 0  # training tokens consumed (global, all ranks)
    skipped_batches: int = 0  # micro-batches dropped for a non-finite loss
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


def train(cfg: Config, stage: Stage | None = None) -> TrainResult:
    """Run (or resume) training as configured. Call once per process under any launcher."""
    dist = init_distributed()
    return Trainer(cfg, dist, stage or build_stage(cfg)).run()


class Trainer:
    def __init__(self, cfg: Config, dist: DistInfo, stage: Stage):
        from gpt_dist.data.tokenizer import load_tokenizer

        self.cfg, self.dist, self.stage = cfg, dist, stage
        self.run_dir = Path(cfg.run_dir)
        if dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        barrier()
        self.ga = gradient_accumulation_steps(cfg, dist.world_size)
        self.total_steps = total_steps(cfg, dist.world_size)
        self.tokenizer = load_tokenizer(cfg.tokenizer)
        if self.tokenizer.vocab_size > cfg.model.vocab_size:
            raise UserError(
                f"model.vocab_size={cfg.model.vocab_size} is smaller than the tokenizer's {self.tokenizer.vocab_size} "
                f"tokens; set model.vocab_size: {self.tokenizer.vocab_size}"
            )
        torch.manual_seed(cfg.train.seed)  # same initial weights on every rank
        self.train_loader = stage.train_loader(cfg, dist, self.tokenizer)
        self.val_loader = stage.val_loader(cfg, dist, self.tokenizer)

        model = GPT(cfg.model)
        self.lora_params: int | None = None
        self.flops_per_token, self.peak_flops = _flops(cfg, dist)
        self.state = TrainState()
        plan = checkpointing.plan_resume(cfg, dist)
        if plan is None and cfg.checkpoint.init_from:
            load_init_weights(model, cfg.checkpoint.init_from, cfg.model)
        if cfg.lora.r > 0:  # after the starting weights, before DeepSpeed sees the parameters
            model = lora.add_lora(model, cfg.lora)
            trainable, total = lora.trainable_parameters(model)
            self.lora_params = trainable
            log.info("LoRA r=%d on %s: %d of %d parameters train", cfg.lora.r, list(cfg.lora.target_modules), trainable, total)
            if plan is not None and plan.universal:
                checkpointing.load_frozen_weights(model, plan, cfg)
        self.engine, self.ds_config = initialize(model, cfg, dist.world_size, dist.device,
                                                 load_universal=bool(plan and plan.universal))
        self.callbacks: list[Callback] = self._callbacks() if dist.is_main else []
        if plan is not None:
            client = checkpointing.load_for_resume(self.engine, plan, cfg, dist)
            self.state = TrainState(**client["train_state"])
            self.state.consecutive_nonfinite = 0
            self.train_loader.load_state_dict(client["loader"])
            self._event("resumed", tag=plan.tag, universal=plan.universal, world_size=dist.world_size)
        elif cfg.checkpoint.init_from:
            self._event("init_from", path=cfg.checkpoint.init_from)
        self.last_metrics: dict[str, Any] = {}
        self.last_saved_step = self.state.step if plan is not None else -1

    # ------------------------------------------------------------------ set-up helpers

    def _callbacks(self) -> list[Callback]:
        cbs: list[Callback] = [JsonlMetrics(self.run_dir), LossCurve(self.run_dir)]
        if self.cfg.log.wandb.mode != "disabled":
            w = self.cfg.log.wandb
            cbs.append(Wandb(w.mode, w.project, w.name, self.run_dir, self.cfg.to_dict()))
        if self.cfg.log.progress_bar:
            cbs.append(ProgressBar(self.total_steps, 0))
        return cbs

    def _event(self, name: str, **fields) -> None:
        if self.dist.is_main:
            log.info("%s %s", name, fields)
        for cb in self.callbacks:
            cb.on_event({"event": name, "step": self.state.step, **fields})

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.dist.device, non_blocking=True) for k, v in batch.items()}

    # ------------------------------------------------------------------------- the loop

    def run(self) -> TrainResult:
        cfg, engine = self.cfg, self.engine
        stop = StopSignal()
        data = iter(self.train_loader)
        tokens_per_step = cfg.train.global_batch_tokens
        for cb in self.callbacks:
            cb.on_train_start({"total_steps": self.total_steps, "grad_accum": self.ga})
        if self.state.step == 0:
            self._event("start", total_steps=self.total_steps, grad_accum=self.ga, world_size=self.dist.world_size,
                        **({"lora_trainable_params": self.lora_params} if self.lora_params else {}))
        window_start, window_steps, data_wait = time.perf_counter(), 0, 0.0
        stopped_by = None
        exit_at = None if cfg.train.exit_after_steps is None else self.state.step + cfg.train.exit_after_steps
        engine.train()
        while self.state.step < self.total_steps:
            lr = lr_at(self.state.step, self.total_steps, cfg.train)
            for group in engine.optimizer.param_groups:
                group["lr"] = lr
            loss_sum = torch.zeros((), device=self.dist.device)
            extra_sum: dict[str, torch.Tensor] = {}
            done = 0
            while done < self.ga:
                t0 = time.perf_counter()
                batch = self._to_device(next(data))
                data_wait += time.perf_counter() - t0
                loss, extra = self.stage.loss(engine, batch)
                if any_rank(not bool(torch.isfinite(loss)), self.dist.device):
                    self._skip_nonfinite()
                    continue
                engine.backward(loss)
                engine.step()
                self.state.consecutive_nonfinite = 0
                loss_sum += loss.detach().float()
                for k, v in extra.items():
                    extra_sum[k] = extra_sum.get(k, 0) + v.detach().float()
                done += 1
            self.state.step += 1
            self.state.tokens += tokens_per_step
            window_steps += 1

            if self.state.step % cfg.log.every_steps == 0 or self.state.step == self.total_steps:
                if self.dist.device.type == "cuda":
                    torch.cuda.synchronize()
                elapsed = time.perf_counter() - window_start
                self._log(loss_sum / self.ga, {k: v / self.ga for k, v in extra_sum.items()}, lr, elapsed,
                          window_steps, data_wait)
                window_start, window_steps, data_wait = time.perf_counter(), 0, 0.0
            if self.val_loader is not None and self.state.step % cfg.eval.every_steps == 0:
                self.evaluate()
            if self.state.step % cfg.checkpoint.every_steps == 0:
                self.save()
            if any_rank(stop.name is not None, self.dist.device):
                stopped_by = stop.name or "SIGUSR1/SIGTERM on another rank"
                self._event("signal", signal=stopped_by)
                break
            if self.state.step == exit_at and self.state.step < self.total_steps:
                self._event("exit_after_steps", steps=cfg.train.exit_after_steps)
                break

        if self.last_saved_step != self.state.step:
            self.save()
        finished = self.state.step >= self.total_steps
        if finished and self.val_loader is not None and self.state.step % cfg.eval.every_steps != 0:
            self.evaluate()
        if stopped_by is not None:
            self._requeue_if_slurm(stopped_by)
        if finished:
            self._event("finished", tokens=self.state.tokens)
        for cb in self.callbacks:
            cb.on_train_end()
        barrier()
        return TrainResult(step=self.state.step, tokens=self.state.tokens, last_metrics=self.last_metrics,
                           stopped_by_signal=stopped_by)

    def _skip_nonfinite(self) -> None:
        self.state.skipped_batches += 1
        self.state.consecutive_nonfinite += 1
        self._event("nonfinite_loss_skipped", skipped_batches=self.state.skipped_batches)
        if self.state.consecutive_nonfinite >= self.cfg.train.max_nonfinite_steps:
            self._event("stopped_nonfinite", consecutive=self.state.consecutive_nonfinite)
            raise NonFiniteLossError(
                f"{self.state.consecutive_nonfinite} NaN/inf losses in a row at step {self.state.step}; the last good "
                f"checkpoint in {self.cfg.checkpoint_dir} is kept. Lower train.lr, raise train.warmup_fraction or "
                "check the data, then resume"
            )

    def _log(self, loss, extra, lr, elapsed, steps, data_wait) -> None:
        loss = all_reduce_mean(loss).item()
        extra = {k: all_reduce_mean(v).item() for k, v in extra.items()}
        tokens_per_s = self.cfg.train.global_batch_tokens * steps / max(elapsed, 1e-9)
        grad_norm = self.engine.get_global_grad_norm()
        grad_norm = float(grad_norm) if grad_norm is not None else None
        mfu = None
        if self.peak_flops:
            mfu = self.flops_per_token * tokens_per_s / (self.peak_flops * self.dist.world_size)
        m = dict(
            step=self.state.step, tokens=self.state.tokens, loss=loss, lr=lr,
            grad_norm=grad_norm if grad_norm is None or math.isfinite(grad_norm) else None,
            tokens_per_s=tokens_per_s, step_ms=1000 * elapsed / steps, mfu=mfu,
            data_wait_frac=data_wait / max(elapsed, 1e-9), mem_gb=_memory_gb(self.dist.device),
            skipped_batches=self.state.skipped_batches, **extra,
        )
        self.last_metrics = m
        for cb in self.callbacks:
            cb.on_log(m)

    @torch.no_grad()
    def evaluate(self) -> float:
        self.engine.eval()
        total = torch.zeros((), device=self.dist.device, dtype=torch.float64)
        count = torch.zeros((), device=self.dist.device, dtype=torch.float64)
        for batch in self.val_loader:
            loss_sum, n = self.stage.eval_loss(self.engine, self._to_device(batch))
            total += loss_sum.double()
            count += n.double()
        if torch.distributed.is_initialized():
            torch.distributed.all_reduce(total)
            torch.distributed.all_reduce(count)
        self.engine.train()
        val = (total / count.clamp(min=1)).item()
        metrics = dict(step=self.state.step, tokens=self.state.tokens, loss=val)
        if self.stage.val_perplexity:
            metrics["perplexity"] = math.exp(min(val, 50))
        for cb in self.callbacks:
            cb.on_eval(metrics)
        self.last_metrics = {**self.last_metrics, "val_loss": val}
        return val

    def save(self) -> None:
        client = {"train_state": self.state.to_dict(), "loader": self.train_loader.state_dict()}
        metadata = {
            "tokens_seen": self.state.tokens,
            "config": self.cfg.to_dict(),
            "tokenizer": self.tokenizer.spec(),
            "chat_template": getattr(self.stage, "chat_template", None),
            "metrics": self.last_metrics,
        }
        tag_dir = checkpointing.save(self.engine, self.cfg, self.dist, self.state.step, client, metadata)
        self.last_saved_step = self.state.step
        self._event("checkpoint", tag=tag_dir.name)

    def _requeue_if_slurm(self, signame: str) -> None:
        job = os.environ.get("SLURM_JOB_ID")
        if not (signame == "SIGUSR1" and job and self.dist.is_main):
            return
        r = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        self._event("requeue", job_id=job, ok=r.returncode == 0, stderr=r.stderr.strip())


def _flops(cfg: Config, dist: DistInfo) -> tuple[float, float | None]:
    from gpt_dist.planning import detect_peak_flops, flops_per_token

    peak = detect_peak_flops(torch.cuda.get_device_name(dist.device)) if dist.device.type == "cuda" else None
    return flops_per_token(cfg.model, cfg.seq_len), peak


def _memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
