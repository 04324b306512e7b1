"""The model behind `--model`: a gpt_dist checkpoint (the latest complete tag, or a tag folder)
or a Hugging Face GPT-2 directory, read by gpt_dist.conversion.load_weights into our GPT.

    source = load_model_source("runs/gpt2/ckpt", device)
    source.model            # GPT in eval mode, fp32, on `device`
    source.tokenizer()      # the tokenizer it was trained with (gpt_dist.data.tokenizer)
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gpt_dist.errors import UserError
from gpt_dist.model.gpt import GPT


@dataclass
class ModelSource:
    path: Path
    model: GPT
    metadata: dict[str, Any]
    _tokenizer: Any = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        """"gpt_dist" or "huggingface"."""
        return self.metadata.get("source", {}).get("kind", "gpt_dist")

    def tokenizer(self) -> Any:
        """The model's tokenizer: the spec in the checkpoint metadata (checked against its
        fingerprint), or for a Hugging Face directory the tokenizer files saved in it."""
        if self._tokenizer is None:
            self._tokenizer = self._load_tokenizer()
        return self._tokenizer

    def _load_tokenizer(self) -> Any:
        from gpt_dist.conversion.hf_tokenizer import load_our_tokenizer, tokenizer_spec_of

        spec = self.metadata.get("tokenizer")
        where = Path(self.metadata.get("source", {}).get("path", self.path))
        if spec is None and self.kind == "huggingface":
            # Not GPT-2's vocabulary: read its tokenizer.json as a byte-level BPE, in a scratch
            # copy (tokenizer_spec_of writes our settings file next to it).
            with tempfile.TemporaryDirectory(prefix="gpt_dist_eval_tok_") as tmp:
                spec = tokenizer_spec_of(where, copy_to=Path(tmp))
                if spec is not None:
                    return load_our_tokenizer(spec, where / "tokenizer.json")
        if spec is None:
            raise UserError(
                f"{where}: no tokenizer recorded with this model; --mc needs one (a training run records it in "
                "gpt_dist.json; a Hugging Face directory needs tokenizer.json)"
            )
        meta_file = where / "gpt_dist.json" if self.kind == "gpt_dist" else where / "tokenizer.json"
        return load_our_tokenizer(spec, meta_file)


def load_model_source(path: str | Path, device: torch.device, tag: str | None = None) -> ModelSource:
    """Read the model at `path` into our GPT (fp32, eval mode) on `device`."""
    from gpt_dist.conversion import load_weights, pad_vocab

    cfg, state, meta = load_weights(path, tag=tag)
    cfg.dropout = 0.0
    cfg.activation_checkpointing = False
    model = GPT(cfg)
    model.load_state_dict(pad_vocab(state, cfg))
    model.to(device).eval()
    return ModelSource(path=Path(path), model=model, metadata=meta)
