"""Later stages on the same training loop: supervised fine-tuning and DPO.

    chat_template.py  Jinja chat templates (Hugging Face dialect) -> token ids + loss mask
    data_report.py    every dropped / shortened sample counted by reason, logged and written
    sft_data.py       SFT jsonl (messages, Alpaca, prompt/completion) -> tokenized samples
    row_packing.py    samples -> packed rows (segment-isolated attention) or padded rows
    dpo_data.py       preference-pair jsonl -> tokenized (chosen, rejected) pairs
    dpo.py            the DPO loss and the reference log-probs, scored by the policy before training
    epoch_loader.py   in-memory epoch loaders with exact, world-size-independent resume
    objectives.py     the SFT and DPO objectives used by gpt_dist.engine.trainer
    sample_data.py    small generated CPT / SFT / DPO sets for the tests and the README recipe

Continued pre-training (stage: cpt) needs nothing here: it is the language-modelling objective on a
weighted mix of new and replay shards, started from checkpoint.init_from.
"""
