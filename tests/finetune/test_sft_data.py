"""SFT data: the accepted record forms, bad samples counted and never trained on, overlong
conversations cut only between whole turns, source weights."""

from __future__ import annotations

import json

import pytest
import torch
from finetune_helpers import tiny_config

from gpt_dist.engine.distributed import DistInfo
from gpt_dist.errors import DataError
from gpt_dist.finetune.chat_template import DEFAULT_CHAT_TEMPLATE, ChatTemplate
from gpt_dist.finetune.data_report import DataReport
from gpt_dist.finetune.sample_data import colour_record, write_jsonl
from gpt_dist.finetune.sft_data import encode_sft_record, load_sft_samples, repeat_by_weight
from gpt_dist.finetune.objectives import SFT
from gpt_dist.model.gpt import IGNORE_INDEX

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def test_alpaca_prompt_completion_and_messages_are_the_same_sample(tokenizer):
    tpl = ChatTemplate(DEFAULT_CHAT_TEMPLATE, tokenizer)
    forms = [
        {"instruction": "Name a colour.", "input": "", "output": "Blue."},
        {"instruction": "Name a colour.", "output": "Blue."},
        {"prompt": "Name a colour.", "completion": "Blue."},
        {"messages": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}]},
    ]
    encoded = [encode_sft_record(f, tpl, 128, "drop_turns")[0] for f in forms]
    assert all(e.ids == encoded[0].ids and e.trained == encoded[0].trained for e in encoded)
    with_input, _ = encode_sft_record({"instruction": "Shout it.", "input": "hello", "output": "HELLO"}, tpl, 128, "drop_turns")
    assert tokenizer.decode(with_input.ids) == "User: Shout it.\n\nhello\n\nAssistant: HELLO" + tokenizer.eot_token


BAD_LINES = {
    "invalid_json": '{"prompt": "MARKER_JSON", "completion": ',
    "unknown_format": {"question": "MARKER_FORMAT", "answer": "x"},
    "unknown_role": {"messages": [{"role": "narrator", "content": "MARKER_ROLE"}, {"role": "assistant", "content": "x"}]},
    "no_assistant_turn": {"messages": [{"role": "user", "content": "MARKER_NOREPLY"}]},
    "bad_content": {"prompt": "MARKER_EMPTY", "completion": ""},
    "end_marker_in_content": {"prompt": "MARKER_EOT <|endoftext|> forged", "completion": "x"},
    "prompt_longer_than_context": {"prompt": "MARKER_LONG " + "word " * 400, "completion": "x"},
}


def write_mixed(path, good: int):
    lines = [BAD_LINES["invalid_json"]] + [json.dumps(v) for k, v in BAD_LINES.items() if k != "invalid_json"]
    lines += [json.dumps({"prompt": f"Good question {i}?", "completion": f"Good answer {i}."}) for i in range(good)]
    path.write_text("\n".join(lines) + "\n")


def test_bad_samples_are_counted_reported_and_never_trained_on(tmp_path, tokenizer_dir, tokenizer):
    write_mixed(tmp_path / "mixed.jsonl", good=5)
    cfg = tiny_config(tmp_path / "run", "sft", tokenizer_dir, [tmp_path / "mixed.jsonl"],
                      extra=["finetune.max_bad_fraction=1.0"])
    loader = SFT().train_loader(cfg, CPU, tokenizer)
    report = json.loads((tmp_path / "run" / "sft_train_data_report.json").read_text())
    assert report["read"] == 5 + len(BAD_LINES) and report["kept"] == 5
    assert report["dropped"] == {reason: 1 for reason in BAD_LINES}
    assert report["examples"]["unknown_role"][0].startswith(f"{tmp_path / 'mixed.jsonl'}:3")
    seen = ""
    for _ in range(3 * loader.num_units):  # a few epochs' worth of micro-batches
        batch = next(loader)
        seen += tokenizer.decode(batch["input_ids"].flatten().tolist())
    assert "Good answer 4." in seen and "MARKER" not in seen


def test_too_many_bad_samples_stop_before_training(tmp_path, tokenizer_dir, tokenizer):
    write_mixed(tmp_path / "mixed.jsonl", good=5)
    cfg = tiny_config(tmp_path / "run", "sft", tokenizer_dir, [tmp_path / "mixed.jsonl"])
    with pytest.raises(DataError) as e:
        SFT().train_loader(cfg, CPU, tokenizer)
    msg = str(e.value)
    assert "7 of 12 samples are unusable" in msg and "finetune.max_bad_fraction=0.1" in msg
    assert "sft_train_data_report.json" in msg


def test_missing_data_file_names_the_key(tmp_path, tokenizer_dir, tokenizer):
    cfg = tiny_config(tmp_path / "run", "sft", tokenizer_dir, [tmp_path / "nope.jsonl"])
    with pytest.raises(DataError, match=r"data.train\[0\].path=.*nope.jsonl: no such file"):
        SFT().train_loader(cfg, CPU, tokenizer)


def test_overlong_conversation_keeps_whole_turns_or_is_dropped(tmp_path, tokenizer):
    tpl = ChatTemplate(DEFAULT_CHAT_TEMPLATE, tokenizer)
    convo = colour_record("red")
    full = tpl.encode(convo["messages"])
    room = full.turn_ends[0] + 5  # the first exchange fits, the second does not
    write_jsonl(tmp_path / "long.jsonl", [convo])

    report = DataReport("sft", "train")
    [sample] = load_sft_samples([(str(tmp_path / "long.jsonl"), 1.0)], tpl, room - 1, "drop_turns", report, seed=0)
    assert len(sample) == full.turn_ends[0] and sample.ids[-1] == tokenizer.eot_id
    assert tokenizer.decode(sample.ids[sample.trained].tolist()) == " Noted: your favourite colour is red." + tokenizer.eot_token
    assert (report.shortened, report.turns_dropped, report.kept) == (1, 1, 1)

    report = DataReport("sft", "train")
    assert load_sft_samples([(str(tmp_path / "long.jsonl"), 1.0)], tpl, room - 1, "drop_sample", report, seed=0) == []
    assert report.dropped == {"reply_does_not_fit": 1}

    report = DataReport("sft", "train")
    load_sft_samples([(str(tmp_path / "long.jsonl"), 1.0)], tpl, full.turn_ends[0] - 3, "drop_turns", report, seed=0)
    assert report.dropped == {"reply_does_not_fit": 1}  # never cut inside a reply


def test_labels_never_cover_a_cut_reply(tmp_path, tokenizer_dir, tokenizer):
    """Every labelled run of tokens in a batch ends with the end-of-text token: whole replies only."""
    convos = [colour_record(c) for c in ("red", "blue", "green")]
    write_jsonl(tmp_path / "c.jsonl", convos)
    cfg = tiny_config(tmp_path / "run", "sft", tokenizer_dir, [tmp_path / "c.jsonl"], extra=["train.seq_len=64", "train.global_batch_size=4"])
    batch = next(SFT().train_loader(cfg, CPU, tokenizer))
    for labels in batch["labels"]:
        runs, cur = [], []
        for t in labels.tolist() + [IGNORE_INDEX]:
            if t != IGNORE_INDEX:
                cur.append(t)
            elif cur:
                runs.append(cur)
                cur = []
        assert runs and all(r[-1] == tokenizer.eot_id for r in runs)


def test_source_weights_repeat_or_subsample():
    items = list(range(10))
    assert repeat_by_weight(items, 2.0, seed=0) == items + items
    half = repeat_by_weight(items, 0.5, seed=0)
    assert len(half) == 5 and set(half) <= set(items) and half == repeat_by_weight(items, 0.5, seed=0)
    assert len(repeat_by_weight(items, 1.3, seed=0)) == 13
