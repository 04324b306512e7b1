"""Training data: tokenizers, the preprocessing pipeline that writes WebDataset shards, and the loader.

    tokenizer.py           one interface over tiktoken GPT-2, SentencePiece and byte-level BPE
    tokenizer_training.py  `gpt-dist train-tokenizer`: SentencePiece / BPE from a bounded text sample
    shards.py              the on-disk format: `.tar` shards of (seq_len + 1)-token samples + manifest.json
    readers.py             datatrove readers for jsonl(.gz/.zst), parquet, .txt and the built-in sample
    filters.py             our datatrove steps: NFC, offline language id, word lists, per-language scoping
    dedup.py               exact and MinHash-LSH near-duplicate removal on datatrove's dedup stages
    window_packing.py      tokenize, pack documents into windows, write shards (a datatrove step)
    prepare_config.py      the YAML schema of `gpt-dist prepare`
    prepare.py             the pipeline: its jobs, local / slurm executors, resume, the manifests
    sample_order.py        the global sample order: per-source shuffles and the weighted mix
    shard_loader.py        the training / validation loaders with exact, world-size-independent resume

Nothing here imports torch at module level except shard_loader.py.
"""
