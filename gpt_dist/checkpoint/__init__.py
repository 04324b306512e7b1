"""Checkpoints: how a training run's state is written and read back, and how any model
directory (ours or Hugging Face's) becomes a model.

    layout.py              where a tag's files are, which tags are complete (no torch)
    manifest.py            each tag's files with their sizes and the save they belong to
    safe_load.py           torch.load that unpickles tensors and plain data only
    training_state.py      save, the resume plan, load for resume (world-size changes through
                           DeepSpeed's universal format), pruning, LoRA's frozen weights
    full_state.py          a ZeRO tag's full state per parameter (fp32, AdamW, Muon momentum)
                           into an engine of another world size: how Muon runs change it
    deepspeed_reader.py    the weights inside a tag, for any ZeRO stage and world size
    hf_reader.py           the weights inside a Hugging Face GPT-2 directory
    state_dict_adapter.py  our names and layout <-> Hugging Face's
    tokenizer_files.py     the tokenizer recorded with a checkpoint or saved in an HF directory
    lazy_tensor.py         a weight read only when asked for
    model_loader.py        load_model / load_weights / load_init_weights: the one model loader

Writing Hugging Face directories (and a checkpoint from one) is gpt_dist.conversion.
"""
