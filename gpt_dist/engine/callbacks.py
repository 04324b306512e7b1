"""Cross-cutting concerns of a run, kept out of the training loop: metrics files, wandb,
the progress bar, the loss-curve plot. They run on rank 0 only."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class Callback:
    def on_train_start(self, info: dict[str, Any]) -> None: ...
    def on_log(self, metrics: dict[str, Any]) -> None: ...
    def on_eval(self, metrics: dict[str, Any]) -> None: ...
    def on_event(self, event: dict[str, Any]) -> None: ...
    def on_train_end(self) -> None: ...


def _append_jsonl(path: Path, obj: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(obj) + "\n")


class JsonlMetrics(Callback):
    """{run_dir}/metrics.jsonl (train and validation rows, "split" tells which) and
    {run_dir}/events.jsonl (resume, checkpoint, signal, skipped batches, stop)."""

    def __init__(self, run_dir: Path):
        self.metrics = run_dir / "metrics.jsonl"
        self.events = run_dir / "events.jsonl"

    def on_log(self, metrics):
        _append_jsonl(self.metrics, {"split": "train", **metrics})

    def on_eval(self, metrics):
        _append_jsonl(self.metrics, {"split": "val", **metrics})

    def on_event(self, event):
        _append_jsonl(self.events, {"time": time.time(), **event})


class Wandb(Callback):
    """wandb: online when an API key is available, offline otherwise, or disabled."""

    def __init__(self, mode: str, project: str, name: str | None, run_dir: Path, config: dict[str, Any]):
        import wandb

        if mode == "online" and not (os.environ.get("WANDB_API_KEY") or _wandb_logged_in()):
            log.warning("log.wandb.mode=online but no WANDB_API_KEY; logging offline to %s (wandb sync later)", run_dir)
            mode = "offline"
        self.run = wandb.init(mode=mode, project=project, name=name, dir=str(run_dir), config=config, resume="allow")

    def on_log(self, metrics):
        self.run.log({f"train/{k}": v for k, v in metrics.items() if v is not None and k != "step"}, step=metrics["step"])

    def on_eval(self, metrics):
        self.run.log({f"val/{k}": v for k, v in metrics.items() if k != "step"}, step=metrics["step"])

    def on_train_end(self):
        self.run.finish()


def _wandb_logged_in() -> bool:
    return Path(os.path.expanduser("~/.netrc")).is_file() and "api.wandb.ai" in Path(os.path.expanduser("~/.netrc")).read_text()


class ProgressBar(Callback):
    """tqdm bar: tokens, loss, tokens/s; tqdm itself shows the ETA."""

    def __init__(self, total_steps: int, start_step: int):
        from tqdm import tqdm

        self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, mininterval=1.0)

    def on_log(self, metrics):
        self.bar.n = metrics["step"]
        self.bar.set_postfix(
            loss=f"{metrics['loss']:.4f}", tok=_si(metrics["tokens"]), tok_s=_si(metrics["tokens_per_s"]), refresh=False
        )
        self.bar.refresh()

    def on_train_end(self):
        self.bar.close()


def _si(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.0f}"


class LossCurve(Callback):
    """At the end of the run, loss_curve.png (train and validation loss against tokens)
    next to metrics.jsonl, from the whole file so a resumed run plots its full history."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir

    def on_train_end(self):
        plot_loss_curve(self.run_dir / "metrics.jsonl", self.run_dir / "loss_curve.png")


def plot_loss_curve(metrics_file: Path, out: Path) -> Path | None:
    if not metrics_file.is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    fig, ax = plt.subplots(figsize=(7, 4))
    for split, style in (("train", "-"), ("val", "o-")):
        pts = sorted({r["tokens"]: r["loss"] for r in rows if r.get("split") == split}.items())
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=split, markersize=3)
    ax.set_xlabel("tokens")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out)
    return out
