"""The streaming writer produces files the safetensors library reads back exactly."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from gpt_dist.conversion.safetensors_writer import write_safetensors


def test_tensors_read_back_exactly_with_metadata(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "a.weight": torch.randn(7, 3, generator=g),
        "b.bias": torch.randn(5, generator=g).to(torch.bfloat16),
        "c.weight": torch.randn(2, 3, 4, generator=g).to(torch.float16),
        "d.t": torch.randn(3, 6, generator=g).t(),  # not contiguous: written in row-major order
    }
    layout = {k: (tuple(v.shape), v.dtype) for k, v in tensors.items()}
    write_safetensors(tmp_path / "m.safetensors", layout, iter(tensors.items()), metadata={"format": "pt"})
    back = load_file(tmp_path / "m.safetensors")
    assert back.keys() == tensors.keys()
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    with safe_open(tmp_path / "m.safetensors", "pt") as f:
        assert f.metadata() == {"format": "pt"}


def test_a_tensor_that_does_not_fit_the_layout_is_an_error(tmp_path):
    layout = {"a": ((2, 2), torch.float32), "b": ((3,), torch.float32)}
    with pytest.raises(ValueError, match="layout expects a"):
        write_safetensors(tmp_path / "x.safetensors", layout, iter([("a", torch.zeros(2, 3))]))
    with pytest.raises(ValueError, match="never written: b"):
        write_safetensors(tmp_path / "y.safetensors", layout, iter([("a", torch.zeros(2, 2))]))
