"""A weight that is read only when asked for, so a converter holds one tensor at a time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class LazyTensor:
    """`shape` is known up front (for checks); `load()` reads the tensor, in our layout
    (nn.Linear (out, in) weights), as fp32 on the CPU."""

    shape: tuple[int, ...]
    load: Callable[[], torch.Tensor]


def from_tensor(t: torch.Tensor) -> LazyTensor:
    """Wrap a tensor that is already addressable (e.g. memory-mapped): load() casts to fp32."""
    return LazyTensor(tuple(t.shape), lambda: t.float())


def own_storage(t: torch.Tensor) -> torch.Tensor:
    """`t` contiguous and alone in its storage: a view into a larger buffer (a flat ZeRO
    partition, a padded embedding) is copied out, so keeping it does not keep the buffer."""
    if not t.is_contiguous() or t.untyped_storage().nbytes() > t.numel() * t.element_size():
        return t.clone(memory_format=torch.contiguous_format)
    return t


def materialize(weights: dict[str, LazyTensor]) -> dict[str, torch.Tensor]:
    """Read every weight (fp32), each in its own storage."""
    return {name: own_storage(lt.load()) for name, lt in weights.items()}
