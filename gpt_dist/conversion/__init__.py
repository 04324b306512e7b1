"""Checkpoint conversion: gpt_dist DeepSpeed checkpoints (ZeRO 0-3, any world size) to and
from Hugging Face GPT-2 directories.

    from gpt_dist.conversion import export_hf, import_hf

    export_hf("runs/gpt2/ckpt", "exports/gpt2-hf", dtype="bf16")   # gpt-dist convert to-hf
    import_hf("downloads/gpt2", "runs/from-openai/ckpt")            # gpt-dist convert from-hf

Reading either kind of directory is gpt_dist.checkpoint (loader.load_weights / load_model).
Modules here: hf_export, hf_import, hf_tokenizer (writing a Hugging Face tokenizer),
model_card, safetensors_writer, output_dir (complete-or-absent outputs).
"""

from gpt_dist.conversion.hf_export import export_hf
from gpt_dist.conversion.hf_import import import_hf

__all__ = ["export_hf", "import_hf"]
