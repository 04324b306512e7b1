"""`gpt-dist generate` and `gpt-dist chat`: JSON output, the same tokens with and without the
KV cache, checkpoint and Hugging Face directories alike, piped multi-turn chat, clear errors."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gpt_dist.cli import main

BIN = Path(sys.executable).parent
PROMPTS = ["Count to 3.", "Once upon a time there was"]


def cli(argv: list[str], capsys, stdin: str | None = None, monkeypatch=None) -> tuple[int, str, str]:
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def generate_json(model: Path, capsys, *extra: str) -> list[dict]:
    rc, out, err = cli(["generate", "--model", str(model), "--prompt", *PROMPTS, "--temperature", "0",
                        "--max-new-tokens", "12", "--json", *extra], capsys)
    assert rc == 0, err
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture(scope="module")
def hf_dir(chat_checkpoint, tmp_path_factory) -> Path:
    from gpt_dist.conversion import export_hf

    return export_hf(chat_checkpoint, tmp_path_factory.mktemp("hf") / "model")


def test_generate_json_is_the_same_with_and_without_cache(chat_checkpoint, capsys):
    rows = generate_json(chat_checkpoint, capsys)
    assert [r["prompt"] for r in rows] == PROMPTS
    assert all(r["finish_reason"] in ("eot", "length") and isinstance(r["tokens"], list) for r in rows)
    assert generate_json(chat_checkpoint, capsys, "--no-cache") == rows


def test_checkpoint_and_its_hf_export_generate_the_same(chat_checkpoint, hf_dir, capsys):
    assert generate_json(hf_dir, capsys) == generate_json(chat_checkpoint, capsys)
    assert generate_json(hf_dir, capsys, "--chat") == generate_json(chat_checkpoint, capsys, "--chat")


def test_plain_output_continues_the_prompt(chat_checkpoint, capsys):
    rc, out, _ = cli(["generate", "--model", str(chat_checkpoint), "--prompt", "Hello", "--max-new-tokens", "5",
                      "--seed", "1"], capsys)
    assert rc == 0 and out.startswith("Hello")


def test_chat_reads_piped_messages(chat_checkpoint):
    """A real process with stdin piped, as `printf ... | gpt-dist chat --model DIR` runs it, prints
    the replies an in-process ChatSession gives to the same messages."""
    from gpt_dist.checkpoint.model_loader import load_model
    from gpt_dist.finetune.chat_template import ChatTemplate
    from gpt_dist.generation.chat import ChatSession
    from gpt_dist.generation.token_sampling import SamplingParams

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    r = subprocess.run([str(BIN / "gpt-dist"), "chat", "--model", str(chat_checkpoint), "--temperature", "0",
                        "--max-new-tokens", "6"], input="Count to 2.\nAnd again?\n/reset\nCount to 2.\n",
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert "(conversation cleared)" in r.stderr
    m = load_model(chat_checkpoint)
    session = ChatSession(m.model, ChatTemplate(m.chat_template, m.tokenizer), SamplingParams(temperature=0, max_new_tokens=6))
    first, second = session.reply("Count to 2."), session.reply("And again?")
    assert r.stdout == f"{first}\n{second}\n{first}\n"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_chat_on_a_terminal_labels_its_turns_and_keeps_log_lines_out(chat_checkpoint, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", _Terminal("Count to 2.\n/exit\n"))
    assert main(["chat", "--model", str(chat_checkpoint), "--temperature", "0", "--max-new-tokens", "6"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("assistant> ") and out.count("\n") == 1
    assert err.count("you> ") == 2  # one prompt per line read
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    r = subprocess.run([str(BIN / "gpt-dist"), "chat", "--model", str(chat_checkpoint), "--temperature", "0",
                        "--max-new-tokens", "6"], input="Count to 2.\n", capture_output=True, text=True, timeout=300,
                       env=env)
    assert r.returncode == 0 and " INFO " not in r.stderr and "Setting accelerator" not in r.stdout + r.stderr


def test_chat_session_sends_the_whole_conversation(chat_checkpoint):
    from gpt_dist.checkpoint.model_loader import load_model
    from gpt_dist.finetune.chat_template import ChatTemplate
    from gpt_dist.generation.chat import ChatSession
    from gpt_dist.generation.token_sampling import SamplingParams

    m = load_model(chat_checkpoint)
    session = ChatSession(m.model, ChatTemplate(m.chat_template, m.tokenizer), SamplingParams(temperature=0, max_new_tokens=4))
    first = session.reply("Count to 2.")
    session.reply("And again?")
    assert [x["role"] for x in session.messages] == ["user", "assistant", "user", "assistant"]
    assert session.messages[1]["content"] == first
    prompt = m.tokenizer.decode(session.prompt_ids(session.messages[:3]))
    assert prompt.startswith("User: Count to 2.") and prompt.endswith("User: And again?\n\nAssistant:")
    session.reset()
    assert session.reply("Count to 2.") == first


def test_a_model_without_chat_template_is_refused_for_chat(hf_dir, tmp_path, capsys, monkeypatch):
    plain = tmp_path / "plain"
    shutil.copytree(hf_dir, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    conf = json.loads((plain / "tokenizer_config.json").read_text())
    conf.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(conf))
    rc, _, err = cli(["generate", "--model", str(plain), "--prompt", "Hi", "--chat"], capsys)
    assert rc == 2 and "has no chat template" in err and "drop --chat" in err
    rc, _, err = cli(["chat", "--model", str(plain)], capsys, stdin="Hi\n", monkeypatch=monkeypatch)
    assert rc == 2 and "--chat-template FILE" in err
    assert generate_json(plain, capsys)  # plain continuation still works
    # a template given on the command line makes it chat
    from gpt_dist.finetune.chat_template import DEFAULT_CHAT_TEMPLATE

    (tmp_path / "t.jinja").write_text(DEFAULT_CHAT_TEMPLATE)
    rc, out, err = cli(["chat", "--model", str(plain), "--chat-template", str(tmp_path / "t.jinja"), "--temperature", "0",
                        "--max-new-tokens", "4"], capsys, stdin="Hi\n/exit\n", monkeypatch=monkeypatch)
    assert rc == 0 and out.endswith("\n"), err


@pytest.mark.parametrize("flags, message", [
    (["--top-p", "1.5"], "--top-p: must be in (0, 1]"),
    (["--temperature", "-1"], "--temperature: must be >= 0"),
])
def test_bad_flags_are_reported(chat_checkpoint, capsys, flags, message):
    rc, _, err = cli(["generate", "--model", str(chat_checkpoint), "--prompt", "Hi", *flags], capsys)
    assert rc == 2 and message in err


def test_missing_model_dir_is_reported(tmp_path, capsys):
    rc, _, err = cli(["generate", "--model", str(tmp_path / "nope"), "--prompt", "Hi"], capsys)
    assert rc == 2 and "nope" in err
