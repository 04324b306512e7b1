"""Checkpoint conversion: gpt_dist DeepSpeed checkpoints (ZeRO 0-3, any world size) to and
from Hugging Face GPT-2 directories.

    from gpt_dist.conversion import export_hf, import_hf, load_weights, pad_vocab

    cfg, state, meta = load_weights("runs/gpt2/ckpt")       # or a tag folder, or an HF dir
    GPT(cfg).load_state_dict(pad_vocab(state, cfg))
    export_hf("runs/gpt2/ckpt", "exports/gpt2-hf", dtype="bf16")   # gpt-dist convert to-hf
    import_hf("downloads/gpt2", "runs/from-openai/ckpt")            # gpt-dist convert from-hf

Modules: state_dict_adapter (names, transposes, padding, config mapping), deepspeed_checkpoint
(reading ZeRO shards), hf_checkpoint (reading HF dirs), hf_tokenizer, hf_export, hf_import,
model_card, output_dir (complete-or-absent outputs), weights (load_weights).
"""

from gpt_dist.conversion.hf_export import export_hf
from gpt_dist.conversion.hf_import import import_hf
from gpt_dist.conversion.state_dict_adapter import pad_vocab
from gpt_dist.conversion.weights import load_weights

__all__ = ["export_hf", "import_hf", "load_weights", "pad_vocab"]
