"""Reading checkpoint files without running code from them.

A `.pt` file is a pickle; `torch.load(weights_only=False)` calls whatever it names, so a
downloaded checkpoint could run any command. Every load of a checkpoint file, ours and
DeepSpeed's (its engine's load_checkpoint, the universal conversion, zero_to_fp32), goes
through torch's weights-only unpickler, which builds tensors and plain data and refuses
anything else. What our files need beyond that is allow-listed here, by name:

    numpy arrays and their dtype       the NumPy RNG state in rng_rank*.pt
    LossScaler, ZeroStageEnum,         DeepSpeed's optimizer files (ZeRO 1-3, bf16/fp16 runs)
    fragment_address

DeepSpeed passes weights_only=False itself; TORCH_FORCE_WEIGHTS_ONLY_LOAD (torch's own switch,
read at every torch.load) overrides that inside `weights_only_loads()`.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import re
import sys
from pathlib import Path
from typing import Any, Iterator

import torch

from gpt_dist.errors import CheckpointError

_FORCE = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"


# By name: importing deepspeed costs seconds and prints its accelerator banner, so a reader of a
# ZeRO-0 checkpoint (generate, chat) imports it only when a file names one of these.
DEEPSPEED_ALLOWED = (
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
    "deepspeed.runtime.zero.config.ZeroStageEnum",
    "deepspeed.utils.tensor_fragment.fragment_address",
)


def allowed_globals(with_deepspeed: bool = True) -> list[Any]:
    """The classes and functions our checkpoint files may name (see the module docstring)."""
    import numpy as np

    allowed: list[Any] = [np.ndarray, np.dtype, np.dtype(np.uint32).__class__, np.dtype(np.float64).__class__]
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed core to _core
    allowed.append(core.multiarray._reconstruct)
    if with_deepspeed:
        for name in DEEPSPEED_ALLOWED:
            module, attr = name.rsplit(".", 1)
            allowed.append(getattr(importlib.import_module(module), attr))
    return allowed


@contextlib.contextmanager
def weights_only_loads(with_deepspeed: bool = True) -> Iterator[None]:
    """Inside: every torch.load in this process (DeepSpeed's included) is weights-only, with
    `allowed_globals()`; a refused file raises CheckpointError naming it (see `refusal`)."""
    before = os.environ.get(_FORCE)
    os.environ[_FORCE] = "1"
    try:
        with torch.serialization.safe_globals(allowed_globals(with_deepspeed)):
            yield
    finally:
        if before is None:
            os.environ.pop(_FORCE, None)
        else:
            os.environ[_FORCE] = before


def refusal(e: BaseException) -> str | None:
    """The global a weights-only load refused, if `e` (or its cause) is that refusal."""
    while e is not None:
        if isinstance(e, pickle.UnpicklingError) or "Weights only load failed" in str(e):
            for pattern in (r"GLOBAL ([\w.]+)", r"got <class '([\w.]+)'>", r"global:? ([\w.]+)"):
                m = re.search(pattern, str(e))
                if m:
                    return m.group(1)
            return "an object that is not a tensor or plain data"
        e = e.__cause__ or e.__context__
    return None


def refused_error(path: str | Path, what: str) -> CheckpointError:
    return CheckpointError(
        f"{path}: refused to load: unpickling it would call {what}, which is not a tensor or plain data, so the file "
        "could run code on this machine; checkpoints are read weights-only. Use a checkpoint written by gpt_dist "
        "(or convert the model with `gpt-dist convert from-hf`), or delete this tag"
    )


def load_file(path: str | Path, *, mmap: bool = False) -> Any:
    """torch.load of one of our checkpoint files (CPU), weights-only. Raises CheckpointError
    naming the file: refused (it would run code) or unreadable (damaged)."""
    with_deepspeed = "deepspeed" in sys.modules
    try:
        try:
            with weights_only_loads(with_deepspeed):
                return torch.load(path, map_location="cpu", mmap=mmap, weights_only=True)
        except Exception as e:  # noqa: BLE001
            if with_deepspeed or refusal(e) not in DEEPSPEED_ALLOWED:
                raise
        with weights_only_loads(with_deepspeed=True):  # a DeepSpeed optimizer file: now import them
            return torch.load(path, map_location="cpu", mmap=mmap, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure: refused or damaged
        what = refusal(e)
        if what is not None:
            raise refused_error(path, what) from None
        raise CheckpointError(f"{path}: cannot be read ({e}); copy the tag folder again or pick another --tag") from None
