"""{run_dir}/loss_curve.png, rank 0, redrawn from the whole metrics.jsonl at every log and
evaluation (so a resumed run plots its full history, and a run stopped early still has one):
train and validation loss against tokens, and the learning rate below."""

from __future__ import annotations

import os
from pathlib import Path

from gpt_dist.engine.callbacks.base import Callback
from gpt_dist.engine.callbacks.metrics_files import read_jsonl_rows


class LossCurve(Callback):
    priority = -5  # after the metrics row is written

    def __init__(self, run_dir: Path, title: str):
        self.run_dir, self.title = run_dir, title

    def _plot(self, trainer) -> None:
        if trainer.dist.is_main:
            plot_loss_curve(self.run_dir / "metrics.jsonl", self.run_dir / "loss_curve.png", self.title)

    def on_log(self, trainer, metrics):
        self._plot(trainer)

    def on_eval(self, trainer, metrics):
        self._plot(trainer)

    def on_train_end(self, trainer, result):
        self._plot(trainer)


def _tokens_label(x: float, _pos=None) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:g}{unit}"
    return f"{x:g}"


def plot_loss_curve(metrics_file: Path, out: Path, title: str | None = None) -> Path | None:
    """Draw `out` from `metrics_file`; lines that are not JSON (a kill mid-write) are left out."""
    if not metrics_file.is_file():
        return None
    rows = read_jsonl_rows(metrics_file)
    train = sorted({r["tokens"]: r for r in rows if r.get("split") == "train" and "loss" in r}.items())
    val = sorted({r["tokens"]: r["loss"] for r in rows if r.get("split") == "val" and "loss" in r}.items())
    if not train and not val:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    if train:
        ax.plot([t for t, _ in train], [r["loss"] for _, r in train], "-", label="train", markersize=3)
        lrs = [(t, r["lr"]) for t, r in train if r.get("lr") is not None]
        ax_lr.plot([t for t, _ in lrs], [v for _, v in lrs], "-", color="tab:green")
    if val:
        ax.plot([t for t, _ in val], [v for _, v in val], "o-", label="val", markersize=3)
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("tokens")
    ax_lr.grid(alpha=0.3)
    ax_lr.xaxis.set_major_formatter(FuncFormatter(_tokens_label))
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out)
    return out
