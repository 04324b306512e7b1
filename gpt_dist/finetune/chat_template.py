"""Chat templates: a conversation -> text -> token ids, with a loss only on assistant replies.

A template is Jinja in Hugging Face's chat-template dialect (variables `messages`,
`add_generation_prompt`, `eos_token`; `raise_exception(...)`), rendered with the same Jinja
settings as transformers' `apply_chat_template`, so the string saved with a checkpoint (and
exported to tokenizer_config.json) renders the same text there.

Token ids are built from rendered prefixes of the conversation: the text of `messages[:i]`
with the generation prompt is where assistant turn i begins, and the turn ends at the
template's end marker, the tokenizer's end-of-text text ("<|endoftext|>" for GPT-2), which
becomes the `eot_id` token. Each piece is tokenized on its own, so the prompt built for
generation (`add_generation_prompt=True`) is exactly the ids the model saw in training, and a
generated `eot_id` ends the reply.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from gpt_dist.config import ConfigError
from gpt_dist.finetune.data_report import BadSample

ROLES = ("system", "user", "assistant")

# Plain text; each assistant turn ends with <|endoftext|>, which is what generation stops at.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}User: {{ message['content'] }}\n\n"
    "{% elif message['role'] == 'assistant' %}Assistant: {{ message['content'] }}<|endoftext|>"
    "{% else %}{{ raise_exception('unknown role: ' + message['role']) }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)

_PROBE = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Say hi."},
    {"role": "assistant", "content": "Hi there."},
    {"role": "user", "content": "Again."},
    {"role": "assistant", "content": "Hi."},
]


class TemplateError(ConfigError):
    """A chat template that cannot be used for training (named by its config key)."""


@dataclass
class Encoded:
    """A tokenized conversation.

    ids: token ids; trained[j]: token j is a training target (assistant reply text or its end
    marker); turn_ends: token count at the end of each assistant reply, in order.
    """

    ids: list[int]
    trained: list[bool]
    turn_ends: list[int]

    @property
    def prompt_length(self) -> int:
        """Tokens before the first trained one."""
        return self.trained.index(True) if True in self.trained else len(self.ids)


class ChatTemplate:
    """A validated template bound to a tokenizer.

    `source`: the Jinja text; `origin`: where it came from, for error messages (e.g.
    "finetune.chat_template=chat.jinja" or "the built-in template").
    """

    def __init__(self, source: str, tokenizer, origin: str = "the built-in template"):
        from jinja2 import TemplateSyntaxError
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        self.source, self.origin, self.tokenizer = source, origin, tokenizer
        self.end_marker: str = tokenizer.eot_token
        self.eot_id: int = tokenizer.eot_id
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.globals["raise_exception"] = _raise_exception
        env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
        try:
            self._jinja = env.from_string(source)
        except TemplateSyntaxError as e:
            raise TemplateError(f"{origin}: not a valid Jinja template (line {e.lineno}: {e.message})") from None
        self._check()

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()

    def render(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = False) -> str:
        try:
            return self._jinja.render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                      eos_token=self.end_marker, bos_token=self.end_marker)
        except _TemplateRaised as e:
            raise BadSample("template_rejected", str(e)) from None

    def encode(
        self, messages: Sequence[dict[str, str]], *, train: str = "all", add_generation_prompt: bool = False
    ) -> Encoded:
        """Token ids of `messages` (checked with `check_messages` first).

        train: "all" assistant replies carry the loss (SFT), "last" only the final one (DPO), or
        "none". With `add_generation_prompt` the ids end with the prompt of the next assistant
        turn (for generation); without it they end at the last reply's end marker.
        """
        pieces = self._pieces(messages, train, add_generation_prompt)
        ids: list[int] = []
        trained: list[bool] = []
        turn_ends: list[int] = []
        for text, is_trained, ends_turn in pieces:
            parts = text.split(self.end_marker)
            for j, part in enumerate(parts):
                if part:
                    piece_ids = self.tokenizer.encode(part)
                    ids += piece_ids
                    trained += [is_trained] * len(piece_ids)
                if j < len(parts) - 1:
                    ids.append(self.eot_id)
                    trained.append(is_trained)
            if ends_turn:
                turn_ends.append(len(ids))
        return Encoded(ids, trained, turn_ends)

    # ---------------------------------------------------------------------------- internals

    def _pieces(self, messages, train: str, add_generation_prompt: bool) -> list[tuple[str, bool, bool]]:
        """(text, trained, ends an assistant turn) pieces whose concatenation is the rendering."""
        assistant_at = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        pieces: list[tuple[str, bool, bool]] = []
        done = ""  # the text covered by `pieces` so far
        for n, a in enumerate(assistant_at):
            prompt = self.render(messages[:a], add_generation_prompt=True)
            full = self.render(messages[: a + 1])
            if not prompt.startswith(done) or not full.startswith(prompt):
                raise TemplateError(
                    f"{self.origin}: rendering the conversation up to a reply does not start with the rendering "
                    "of the turns before it plus the generation prompt, so replies cannot be told from prompts; "
                    "make each turn's text depend only on that turn (and add_generation_prompt)"
                )
            pieces.append((prompt[len(done):], False, False))
            span = full[len(prompt):]
            cut = span.find(self.end_marker)
            if cut < 0:
                raise TemplateError(self._no_end_marker())
            reply = span[: cut + len(self.end_marker)]
            is_trained = train == "all" or (train == "last" and n == len(assistant_at) - 1)
            pieces.append((reply, is_trained, True))
            done = prompt + reply
        if add_generation_prompt:
            prompt = self.render(messages, add_generation_prompt=True)
            if not prompt.startswith(done):
                raise TemplateError(f"{self.origin}: the generation prompt does not extend the conversation's text")
            pieces.append((prompt[len(done):], False, False))
        return pieces

    def _no_end_marker(self) -> str:
        return (
            f"{self.origin}: an assistant turn does not end with the end marker {self.end_marker!r} (the "
            f"tokenizer's end-of-text), so the model could never learn where a reply stops; end each assistant "
            f"turn with {{{{ eos_token }}}} (or the literal {self.end_marker}) in the template"
        )

    def _check(self) -> None:
        """Render a probe conversation: replies must be delimited and end with the end marker."""
        try:
            enc = self.encode(_PROBE)
        except BadSample as e:
            raise TemplateError(f"{self.origin}: fails on a system/user/assistant conversation: {e.detail}") from None
        except TemplateError:
            raise
        except Exception as e:  # noqa: BLE001 - any Jinja runtime error is the template's
            raise TemplateError(f"{self.origin}: fails to render a conversation ({type(e).__name__}: {e})") from None
        if len(enc.turn_ends) != 2 or enc.ids[enc.turn_ends[-1] - 1] != self.eot_id:
            raise TemplateError(self._no_end_marker())
        for m, text in zip((_PROBE[2], _PROBE[4]), self._reply_texts(enc)):
            if m["content"] not in text:
                raise TemplateError(
                    f"{self.origin}: the assistant's content does not appear inside its own turn; render "
                    "message['content'] of assistant turns before the end marker"
                )

    def _reply_texts(self, enc: Encoded) -> list[str]:
        texts, cur = [], []
        for i, t in zip(enc.ids, enc.trained):
            if t:
                cur.append(i)
            elif cur:
                texts.append(self.tokenizer.decode(cur))
                cur = []
        if cur:
            texts.append(self.tokenizer.decode(cur))
        return texts


class _TemplateRaised(Exception):
    pass


def _raise_exception(message: str):
    raise _TemplateRaised(message)


def check_messages(messages: Any, end_marker: str) -> list[dict[str, str]]:
    """`messages` as a list of {role, content}, or BadSample saying what is wrong with it."""
    if not isinstance(messages, list) or not messages:
        raise BadSample("unknown_format", "'messages' must be a non-empty list of {role, content}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m:
            raise BadSample("unknown_format", f"messages[{i}] is not a {{role, content}} object")
        if m["role"] not in ROLES:
            raise BadSample("unknown_role", f"messages[{i}].role={m['role']!r}; use system, user or assistant")
        content = m.get("content")
        if not isinstance(content, str) or not content.strip():
            raise BadSample("bad_content", f"messages[{i}].content is empty or not a string")
        if end_marker in content:
            raise BadSample("end_marker_in_content", f"messages[{i}].content contains {end_marker!r}")
        out.append({"role": m["role"], "content": content})
    return out


def resolve_chat_template(value: str | None, init_from: str | None) -> tuple[str, str]:
    """(Jinja source, origin) for `finetune.chat_template` = `value`.

    None: the template saved with `init_from` (gpt_dist checkpoint metadata, or a Hugging Face
    directory's tokenizer_config.json / chat_template.jinja), else the built-in one.
    """
    if value is None:
        saved = saved_chat_template(init_from) if init_from else None
        if saved:
            return saved, f"the chat template saved with checkpoint.init_from={init_from}"
        return DEFAULT_CHAT_TEMPLATE, "the built-in chat template"
    if value == "default":
        return DEFAULT_CHAT_TEMPLATE, "the built-in chat template"
    p = Path(value).expanduser()
    if not p.is_file():
        raise TemplateError(
            f"finetune.chat_template={value}: no such file; give a Jinja template file, 'default' for the "
            "built-in one, or null to reuse the one saved with checkpoint.init_from"
        )
    return p.read_text(encoding="utf-8"), f"finetune.chat_template={value}"


def saved_chat_template(path: str | Path) -> str | None:
    """The chat template stored with a model directory (its metadata only is read), or None."""
    from gpt_dist.checkpoint.hf_reader import is_hf_dir
    from gpt_dist.checkpoint.layout import read_metadata, resolve_tag
    from gpt_dist.checkpoint.tokenizer_files import chat_template_of
    from gpt_dist.errors import CheckpointError

    p = Path(path)
    if is_hf_dir(p):
        return chat_template_of(p)
    try:
        ckpt_dir, tag = resolve_tag(p)
    except CheckpointError:
        return None  # not a checkpoint: loading the weights reports what is wrong with it
    return read_metadata(Path(ckpt_dir) / tag).get("chat_template")
