"""SFT end to end on the sample instruction set: the trained model answers in the template and
stops at end-of-text, the loss is on replies only, packing changes nothing, the template travels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from finetune_helpers import one_thread, reply_of, tiny_config, train_metrics

from gpt_dist.checkpoint.layout import latest_complete_tag, read_metadata
from gpt_dist.checkpoint.model_loader import load_model
from gpt_dist.engine.distributed import DistInfo
from gpt_dist.finetune.chat_template import DEFAULT_CHAT_TEMPLATE, ChatTemplate
from gpt_dist.finetune.row_packing import pack_rows, packed_batch, padded_batch
from gpt_dist.finetune.sample_data import colour_record
from gpt_dist.finetune.objectives import SFT
from gpt_dist.generation.chat import ChatSession
from gpt_dist.generation.decoding import generate
from gpt_dist.generation.token_sampling import SamplingParams
from gpt_dist.model.gpt import GPT, IGNORE_INDEX

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
GREEDY = SamplingParams(temperature=0, max_new_tokens=40)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_trained_model_answers_held_in_prompts_and_stops_at_eot(sft_run, sample_files):
    m = load_model(sft_run / "ckpt")
    assert m.chat_template == DEFAULT_CHAT_TEMPLATE
    tpl = ChatTemplate(m.chat_template, m.tokenizer)
    records = read_jsonl(sample_files["sft_train"])
    prompts, wanted = [], []
    for rec in records:
        before, reply = reply_of(rec)
        prompts.append(tpl.encode(before, train="none", add_generation_prompt=True).ids)
        wanted.append(reply)
    with one_thread():
        outs = generate(m.model, prompts, GREEDY, m.tokenizer.eot_id)
    got = [m.tokenizer.decode(o.tokens).strip() for o in outs]
    assert got == wanted
    assert all(o.finish_reason == "eot" for o in outs)


def test_trained_model_keeps_a_multi_turn_conversation(sft_run, sample_files):
    held_in = {rec["messages"][1]["content"] for rec in read_jsonl(sample_files["sft_train"]) if "messages" in rec}
    convo = next(colour_record(c)["messages"] for c in ("red", "blue", "green", "yellow", "purple", "orange")
                 if colour_record(c)["messages"][1]["content"] in held_in)
    m = load_model(sft_run / "ckpt")
    chat = ChatSession(m.model, ChatTemplate(m.chat_template, m.tokenizer), GREEDY, system=convo[0]["content"])
    with one_thread():
        assert chat.reply(convo[1]["content"]) == convo[2]["content"]
        assert chat.reply(convo[3]["content"]) == convo[4]["content"]
    assert chat.last.finish_reason == "eot" and len(chat.messages) == 4


def test_run_logs_falling_loss_and_validation(sft_run):
    rows = train_metrics(sft_run)
    assert rows[-1]["loss"] < 0.1 * rows[0]["loss"]
    assert all(r["trained_tokens"] > 0 for r in rows)
    val = [json.loads(line) for line in (sft_run / "metrics.jsonl").read_text().splitlines() if '"val"' in line]
    assert val and np.isfinite(val[-1]["loss"])


def test_checkpoint_and_hf_export_carry_the_template(sft_run, tmp_path, tokenizer):
    """gpt_dist.json holds the template; the exported tokenizer renders it like we do, to the same ids."""
    from transformers import AutoTokenizer

    from gpt_dist.conversion import export_hf

    ckpt = sft_run / "ckpt"
    assert read_metadata(ckpt / latest_complete_tag(ckpt))["chat_template"] == DEFAULT_CHAT_TEMPLATE
    out = export_hf(ckpt, tmp_path / "hf")
    hf = AutoTokenizer.from_pretrained(str(out))
    convo = colour_record("red")["messages"]
    ours = ChatTemplate(DEFAULT_CHAT_TEMPLATE, tokenizer)
    for msgs, gen in ((convo, False), (convo[:4], True)):
        text = hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
        assert text == ours.render(msgs, add_generation_prompt=gen)
        assert hf(text, add_special_tokens=False)["input_ids"] == ours.encode(msgs, train="none", add_generation_prompt=gen).ids


def test_prompt_tokens_carry_no_loss(tmp_path, tokenizer_dir, tokenizer):
    """Directly on the batches the trainer gets: a label is set exactly on reply tokens and end markers."""
    from gpt_dist.finetune.sample_data import write_jsonl

    convo = colour_record("red")
    write_jsonl(tmp_path / "one.jsonl", [convo])
    cfg = tiny_config(tmp_path / "run", "sft", tokenizer_dir, [tmp_path / "one.jsonl"])
    batch = next(iter(SFT().train_loader(cfg, CPU, tokenizer)))
    row, labels = batch["input_ids"][0], batch["labels"][0]
    seg = batch["segment_ids"][0]
    real = seg == 0
    labelled = labels[real & (labels != IGNORE_INDEX)].tolist()
    eot = tokenizer.eot_token
    assert tokenizer.decode(labelled) == f" Noted: your favourite colour is red.{eot} Your favourite colour is red.{eot}"
    # every labelled position predicts the next input token (targets are the inputs shifted by one)
    n = int(real.sum())
    shifted = torch.cat([row[1:n], labels[n - 1 : n]])
    mask = labels[:n] != IGNORE_INDEX
    assert torch.equal(shifted[mask], labels[:n][mask])
    # and the model's per-token loss is zero wherever the prompt is predicted
    model = GPT(cfg.model)
    per_token = model(batch["input_ids"], batch["labels"], reduction="none", segment_ids=batch["segment_ids"],
                      position_ids=batch["position_ids"])
    per_token = per_token[0]
    assert torch.all(per_token[labels == IGNORE_INDEX] == 0) and torch.all(per_token[labels != IGNORE_INDEX] > 0)


def test_packed_rows_compute_what_their_samples_compute_alone(tokenizer):
    torch.manual_seed(0)
    from gpt_dist.config import ModelConfig

    tpl = ChatTemplate(DEFAULT_CHAT_TEMPLATE, tokenizer)
    from gpt_dist.finetune.sample_data import capital_record, sum_record
    from gpt_dist.finetune.sft_data import record_to_messages

    samples = []
    for rec in (capital_record("Peru"), sum_record(2, 3), capital_record("Norway"), colour_record("red"), sum_record(7, 1)):
        enc = tpl.encode(record_to_messages(rec))
        samples.append((np.asarray(enc.ids), np.asarray(enc.trained)))
    rows = pack_rows([len(ids) - 1 for ids, _ in samples], 128)
    assert len(rows) < len(samples)  # several samples share a row
    model = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=128, vocab_size=tokenizer.vocab_size,
                            vocab_pad_multiple=1)).eval()
    packed = packed_batch([[samples[i] for i in row] for row in rows], 128, tokenizer.eot_id)
    alone = padded_batch(samples, 128, tokenizer.eot_id)
    with torch.no_grad():
        a = model(packed["input_ids"], packed["labels"], reduction="sum", segment_ids=packed["segment_ids"],
                  position_ids=packed["position_ids"])
        b = model(alone["input_ids"], alone["labels"], reduction="sum")
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    assert (packed["labels"] != IGNORE_INDEX).sum() == (alone["labels"] != IGNORE_INDEX).sum()


def test_best_fit_packing_fills_rows():
    lengths = [100, 60, 40, 30, 28, 20, 10, 10]
    rows = pack_rows(lengths, 128)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= 128 for r in rows)
    assert len(rows) == 3  # 298 positions need at least 3 rows of 128
    with pytest.raises(ValueError):
        pack_rows([129], 128)


def test_padding_mode_trains_the_same_replies(tmp_path, tokenizer_dir, tokenizer, sample_files):
    cfg = tiny_config(tmp_path / "run", "sft", tokenizer_dir, [sample_files["sft_train"]],
                      extra=["finetune.packing=false"])
    loader = SFT().train_loader(cfg, CPU, tokenizer)
    batch = next(loader)
    assert set(batch) == {"input_ids", "labels"}  # right padding needs no attention mask
    assert batch["input_ids"].shape[0] == 4 and batch["input_ids"].shape[1] % 8 == 0
    assert loader.num_units == len(read_jsonl(sample_files["sft_train"]))  # one sample per row
