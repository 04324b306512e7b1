"""Every knob of a gpt_dist run, as typed dataclasses loaded from YAML.

Several YAML files compose (later ones override earlier ones) and `--set a.b=c` overrides
come last. OmegaConf does the merging and type checking against these dataclasses; this
module turns its errors into messages that name the file, the key and the fix, and checks
the values that depend on each other once, at load.

    cfg = load_config(["configs/base.yaml", "configs/sample.yaml"], overrides=["train.lr=3e-4"])
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml
from omegaconf import Node, OmegaConf
from omegaconf import errors as oc_errors

from gpt_dist.errors import UserError
from gpt_dist.model.presets import PRESETS

STAGES = ("pretrain", "cpt", "sft", "dpo")
ATTN_IMPLS = ("auto", "flash_attn", "sdpa", "math")
PRECISIONS = ("bf16", "fp16", "fp32")
SCHEDULES = ("cosine", "linear", "wsd", "constant")
TOKENIZER_KINDS = ("gpt2", "sentencepiece", "bpe")
WANDB_MODES = ("online", "offline", "disabled")
OVERLONG_POLICIES = ("drop_turns", "drop_sample")
RESUME_MODES = ("auto", "never")
ARCHS = ("gpt2", "llama")
OPTIMIZERS = ("adamw", "muon")


class ConfigError(UserError, ValueError):
    """A configuration problem, phrased for the person who wrote the YAML."""


@dataclass
class ModelConfig:
    """Model family and shape. `preset` fills every shape field left unset (null).

    `arch`: gpt2 (learned positions, LayerNorm, GELU, biases, tied head) or llama (RMSNorm,
    rotary positions, SwiGLU, grouped-query attention, no biases); null = the preset's, else gpt2.
    """

    preset: Optional[str] = None
    n_layer: Optional[int] = None
    n_head: Optional[int] = None
    n_embd: Optional[int] = None
    block_size: Optional[int] = None
    vocab_size: Optional[int] = None
    # Embedding rows are padded up to a multiple of this for faster matmuls; the padded
    # logits are sliced off, so results do not change. 1 = no padding.
    vocab_pad_multiple: int = 128
    attn_impl: str = "auto"
    # Recompute blocks' activations in backward (applied by the engine set-up); with
    # activation_checkpointing_every: 2, only every second block (less recompute, more memory).
    activation_checkpointing: bool = False
    activation_checkpointing_every: int = 1  # with activation_checkpointing: every N-th block is recomputed
    # Tokens per piece of the LM-head cross-entropy, so the logits of a whole micro-batch never
    # exist at once (same loss and gradients); 0 = one piece (the plain path).
    loss_chunk_tokens: int = 1024
    dropout: float = 0.0
    arch: Optional[str] = None
    # Biases in every linear layer and norm; null = the arch's (gpt2: true, llama: false).
    bias: Optional[bool] = None
    # llama only. Key/value heads (grouped-query attention; null = n_head, plain multi-head).
    n_kv_head: Optional[int] = None
    # Rotary position embedding base (LLaMA 1/2: 10000, LLaMA 3: 500000).
    rope_theta: float = 10000.0
    # SwiGLU hidden size = 8/3 n_embd rounded up to a multiple of this (LLaMA's multiple_of).
    mlp_multiple: Optional[int] = None  # null = 256
    # RMSNorm on each head's queries and keys before the rotary embedding.
    qk_norm: bool = False
    norm_eps: float = 1.0e-5  # llama: RMSNorm epsilon
    # The LM head shares the token embedding's weight (gpt2 always does).
    tie_embeddings: bool = True
    # llama only. Start every block's output projection (attn.c_proj, mlp.c_proj) at zero, so
    # each block begins as the identity on the residual stream (as in the modded-nanogpt runs).
    zero_init_proj: bool = False

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def mlp_hidden(self) -> int:
        """SwiGLU hidden width: LLaMA's int(2/3 * 4 * n_embd), rounded up to mlp_multiple."""
        h = int(2 * 4 * self.n_embd / 3)
        return -(-h // self.mlp_multiple) * self.mlp_multiple

    @property
    def padded_vocab_size(self) -> int:
        m = self.vocab_pad_multiple
        return ((self.vocab_size + m - 1) // m) * m


@dataclass
class TokenizerConfig:
    kind: str = "gpt2"
    # gpt2: a tiktoken vocabulary file (else $GPT_DIST_GPT2_VOCAB, else tiktoken's download);
    # sentencepiece / bpe: the directory written by `gpt-dist train-tokenizer`.
    path: Optional[str] = None


@dataclass
class RunTokenizerConfig(TokenizerConfig):
    """The tokenizer of a training run. Pre-training and CPT read token ids that `gpt-dist prepare`
    made, so they take the tokenizer the shards' manifest names; a kind or path set here must be
    that one (a path of the same kind finds a tokenizer directory that moved)."""

    # null: pretrain / CPT take the shards' manifest's; SFT / DPO use gpt2. Else gpt2 (tiktoken's
    # BPE; the vocabulary ships with gpt_dist), or sentencepiece / bpe from `gpt-dist train-tokenizer`.
    kind: Optional[str] = None
    # gpt2: a tiktoken vocabulary file (else $GPT_DIST_GPT2_VOCAB, else the packaged one);
    # sentencepiece / bpe: the directory written by `gpt-dist train-tokenizer` (pretrain / CPT:
    # null takes the one the shards' manifest names).
    path: Optional[str] = None


@dataclass
class DataSource:
    path: str = "???"
    weight: float = 1.0


@dataclass
class DataConfig:
    train: list[DataSource] = field(default_factory=list)
    val: Optional[str] = None
    num_workers: int = 1
    # A corrupt shard stops training by default; true skips it and counts it instead (then every
    # shard's sha256 is checked when the loader is built, so all ranks skip the same ones).
    skip_corrupt_shards: bool = False
    # Shards (per source) whose samples are shuffled together each epoch: larger mixes better,
    # smaller keeps reads local. Part of the sample order: keep it fixed across a resume.
    shuffle_window: int = 8
    # Check each shard's sha256 against its manifest the first time a process reads it.
    verify_checksums: bool = True


@dataclass
class TrainConfig:
    # The global batch of one optimizer step, in exactly one of two units: tokens (pretrain/CPT,
    # a multiple of seq_len) or sequences (pretrain/CPT windows, SFT rows; DPO: preference pairs).
    # Neither set: 524288 tokens for pretrain/CPT (GPT-2's 0.5M); SFT and DPO must set
    # global_batch_size.
    global_batch_tokens: Optional[int] = None
    global_batch_size: Optional[int] = None  # sequences (DPO: pairs) per optimizer step over all ranks
    # Sequences (DPO: pairs) per micro-batch per rank.
    micro_batch_size: int = 8
    # Tokens per training sequence; null = model.block_size.
    seq_len: Optional[int] = None
    max_tokens: float = 1.0e10
    # When set, wins over max_tokens.
    max_steps: Optional[int] = None
    # Save and exit after this many optimizer steps of this job (the schedule still spans the
    # whole run): for time-limited or preemptible allocations, like Megatron's --exit-interval.
    exit_after_steps: Optional[int] = None
    lr: float = 6.0e-4
    min_lr: float = 6.0e-5
    warmup_fraction: float = 0.02
    schedule: str = "cosine"
    # warmup-stable-decay: fraction of the run spent decaying at the end.
    decay_fraction: float = 0.2
    weight_decay: float = 0.1
    # adamw: AdamW for every weight. muon: DeepSpeed's Muon (momentum, then Newton-Schulz
    # orthogonalisation) for the blocks' 2-D weights, AdamW at train.lr for the embedding, head,
    # norms and biases. muon_lr follows the same schedule as lr (scaled by muon_lr / lr).
    optimizer: str = "adamw"
    muon_lr: float = 0.02  # Muon's peak learning rate (train.optimizer: muon)
    muon_momentum: float = 0.95  # Muon's momentum (Nesterov)
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1.0e-8
    grad_clip: float = 1.0
    precision: str = "bf16"
    seed: int = 1234
    # Steps in a row whose loss is NaN/inf before the run stops (each one is skipped).
    max_nonfinite_steps: int = 5


@dataclass
class EngineConfig:
    zero_stage: int = 3
    # null = ds_configs/zero{zero_stage}.json shipped with gpt_dist.
    ds_config: Optional[str] = None
    compile: bool = False


@dataclass
class CheckpointConfig:
    # null = {run_dir}/ckpt
    dir: Optional[str] = None
    every_steps: int = 1000
    keep_last: int = 3
    resume: str = "auto"
    init_from: Optional[str] = None
    # Resuming with another train.max_steps / max_tokens / global batch changes the learning-rate
    # schedule mid-run: an error unless this is true (then the change is logged as an event).
    allow_schedule_change: bool = False


@dataclass
class WandbConfig:
    mode: str = "disabled"
    project: str = "gpt_dist"
    name: Optional[str] = None


@dataclass
class LogConfig:
    every_steps: int = 10
    progress_bar: bool = True
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class EvalConfig:
    every_steps: int = 500
    batches: int = 20
    # A HellaSwag-format multiple-choice file (the `gpt-dist eval --mc` format) scored during
    # training every mc_every_steps steps (acc / acc_norm rows with split "mc" in metrics.jsonl).
    mc: Optional[str] = None
    mc_every_steps: int = 500  # optimizer steps between in-loop multiple-choice evaluations


@dataclass
class FinetuneConfig:
    """SFT and DPO (stage: sft / dpo). data.train / data.val are then jsonl files."""

    # null: the template saved with checkpoint.init_from, else the built-in plain-text one;
    # "default": the built-in one; else a Jinja file (Hugging Face chat-template syntax).
    chat_template: Optional[str] = None
    # SFT: several samples per row, attending only within themselves (true), or one sample
    # per row padded to the longest of its micro-batch (false).
    packing: bool = True
    # A conversation longer than train.seq_len: keep the whole leading turns that fit
    # (drop_turns) or drop it (drop_sample). Either way it is counted in the data report.
    overlong: str = "drop_turns"
    # Stop before training when more than this share of the samples is unusable.
    max_bad_fraction: float = 0.1
    # DPO: the beta of Rafailov et al. 2023 (how far the policy may move from the reference).
    dpo_beta: float = 0.1
    # DPO: weight alpha of the chosen replies' per-token NLL added to each pair's loss (RPO,
    # Pang et al. 2024; TRL's rpo_alpha); 0 is plain DPO.
    dpo_nll_weight: float = 0.0


# Linear layers LoRA can adapt: peft matches a name against the end of module paths, so
# "c_proj" adapts both attention and MLP output projections. The LM head is tied to the
# token embedding and is never adapted.
LORA_TARGETS = ("c_attn", "c_proj", "c_fc", "attn.c_proj", "mlp.c_proj")


@dataclass
class LoraConfig:
    """Low-rank adapters (Hu et al. 2021, through peft) on the attention and MLP projections,
    for any stage that starts from checkpoint.init_from. The starting weights are frozen; only
    the adapters train. Checkpoints hold both; everything that reads a checkpoint (convert
    to-hf, init_from, generate, eval) sees the merged weights W + (alpha / r) * B @ A."""

    r: int = 0  # adapter rank; 0 = off (every weight trains)
    alpha: float = 16.0
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["c_attn", "c_proj", "c_fc"])


@dataclass
class Config:
    stage: str = "pretrain"
    run_dir: str = "runs/default"
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: RunTokenizerConfig = field(default_factory=RunTokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)

    @property
    def seq_len(self) -> int:
        return self.train.seq_len or self.model.block_size

    @property
    def checkpoint_dir(self) -> str:
        return self.checkpoint.dir or str(Path(self.run_dir) / "ckpt")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- loading


def load_config(
    paths: Sequence[str | Path] = (),
    overrides: Sequence[str] = (),
    *,
    base: dict[str, Any] | None = None,
) -> Config:
    """Compose YAML files (later wins), then `key.path=value` overrides, then validate.

    `base` is an optional dict merged before the files (used when re-loading a config
    saved with a checkpoint). Raises ConfigError naming the file and key at fault.
    """
    layers: list[tuple[str, Any]] = []
    if base is not None:
        layers.append(("<saved config>", base))
    for p in paths:
        layers.append((str(p), read_yaml_mapping(Path(p), "sections (model:, train:, ...)")))
    if overrides:
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.lr=3e-4")
        try:
            dot = OmegaConf.from_dotlist(list(overrides))
        except Exception as e:  # noqa: BLE001 - grammar errors of the override syntax
            raise ConfigError(f"--set {' '.join(overrides)}: {e}") from None
        layers.append(("--set", OmegaConf.to_container(dot)))
    cfg: Config = merge_layers(Config, layers)
    resolve_and_validate(cfg)
    return cfg


def merge_layers(schema: type, layers: Sequence[tuple[str, Any]]) -> Any:
    """Merge dict `layers` (source name, mapping) onto the dataclass `schema`, later layers
    winning, and build the dataclass instance. Errors name the source and the key."""
    merged = OmegaConf.structured(schema)
    for source, layer in layers:
        try:
            merged = OmegaConf.merge(merged, layer)
        except (oc_errors.ConfigKeyError, oc_errors.ValidationError, oc_errors.ConfigTypeError) as e:
            raise ConfigError(_explain(source, e, schema)) from None
    try:
        return OmegaConf.to_object(merged)
    except oc_errors.MissingMandatoryValue as e:
        raise ConfigError(f"{e.full_key}: required but not set; give it a value in a config file") from None


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (`what` says of what, for the error)."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of {what}")
    return data


def _dataclass_at(root: type, path: str) -> type | None:
    """The dataclass that holds the field at dotted `path` (its parent) under `root`, if any."""
    cls: type | None = root
    for part in path.split(".")[:-1]:
        if part.isdigit():  # an index into a list of dataclasses
            continue
        cls = _field_dataclass(cls, part)
        if cls is None:
            return None
    return cls


def _field_dataclass(cls: type, name: str) -> type | None:
    t = typing.get_type_hints(cls).get(name)
    if dataclasses.is_dataclass(t):
        return t
    for arg in getattr(t, "__args__", ()) or ():
        if dataclasses.is_dataclass(arg):
            return arg
    return None


# Names other frameworks use for our keys (Hugging Face TrainingArguments, Megatron, nanoGPT):
# a close spelling is not enough to find them.
KEY_ALIASES = {
    "learning_rate": "lr", "max_lr": "lr", "lr_max": "lr", "min_learning_rate": "min_lr", "lr_min": "min_lr",
    "batch_size": "micro_batch_size", "per_device_train_batch_size": "micro_batch_size",
    "max_grad_norm": "grad_clip", "clip_grad": "grad_clip", "gradient_clipping": "grad_clip",
    "adam_beta1": "beta1", "adam_beta2": "beta2", "adam_epsilon": "eps", "adam_eps": "eps",
    "num_layers": "n_layer", "n_layers": "n_layer", "num_attention_heads": "n_head", "n_heads": "n_head",
    "hidden_size": "n_embd", "d_model": "n_embd", "max_position_embeddings": "block_size",
    "context_length": "block_size", "seq_length": "seq_len", "stage": "zero_stage",
}

_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _explain(source: str, e: Exception, root: type) -> str:
    """One sentence (or two) for an OmegaConf merge error: the source, the key, what was
    expected and what was given, and the fix; never OmegaConf's own wording alone."""
    key = getattr(e, "full_key", None)
    msg = str(e).split("\n")[0]
    m = re.search(r"(\w+) is not a subclass of (\w+)\. value: (.*)$", msg)
    if not key and m:  # a section given a scalar: `model: 5`
        section = _section_of(root, m.group(2)) or "?"
        keys = ", ".join(f.name for f in dataclasses.fields(_dataclass_at(root, section + ".x") or root)) \
            if section != "?" else ""
        return (f"{source}: '{section}' must be a mapping of its keys ({keys}), not the {m.group(1)} {m.group(3)}; "
                f"e.g. {section}: {{{keys.split(', ')[0]}: ...}}.")
    key = (key or "?").replace("[", ".").replace("]", "")
    if isinstance(e, oc_errors.ConfigKeyError) or "not in" in msg:
        leaf = key.split(".")[-1]
        parent = ".".join(key.split(".")[:-1])
        parent_cls = _dataclass_at(root, key)
        if parent_cls is None:
            return f"{source}: unknown key '{key}'."
        names = [f.name for f in dataclasses.fields(parent_cls)]
        close = [KEY_ALIASES[leaf]] if KEY_ALIASES.get(leaf) in names else difflib.get_close_matches(leaf, names, n=1, cutoff=0.5)
        hint = f"; did you mean '{'.'.join(([parent] if parent else []) + [close[0]])}'?" if close else "."
        return f"{source}: unknown key '{key}'{hint} Valid keys {'in ' + parent if parent else 'here'}: {', '.join(names)}."
    expected = _expected(root, key)
    if expected is not None and hasattr(e, "value"):
        got = getattr(e, "value")
        if OmegaConf.is_config(got):
            got = OmegaConf.to_container(got)
        elif isinstance(got, Node):
            got = got._value()
        return f"{source}: key '{key}' expects {expected}, not {got!r} ({type(got).__name__})."
    return f"{source}: key '{key}': {msg}"


def _section_of(root: type, cls_name: str, prefix: str = "") -> str | None:
    """The dotted path of the field of `root` (or below) whose dataclass is named `cls_name`."""
    for f in dataclasses.fields(root):
        sub = _field_dataclass(root, f.name)
        if sub is None:
            continue
        if sub.__name__ == cls_name:
            return prefix + f.name
        found = _section_of(sub, cls_name, prefix + f.name + ".")
        if found:
            return found
    return None


def _expected(root: type, key: str) -> str | None:
    """What the field at dotted `key` takes, in words ("a number", "a list", ...)."""
    parent = _dataclass_at(root, key)
    if parent is None:
        return None
    t = typing.get_type_hints(parent).get(key.split(".")[-1])
    args = [a for a in (getattr(t, "__args__", None) or ()) if a is not type(None)]
    base = typing.get_origin(t) or t
    if base in (list, tuple) or any(typing.get_origin(a) in (list, tuple) for a in args):
        return "a list"
    if base in (dict,) or dataclasses.is_dataclass(base):
        return "a mapping"
    for a in args or [t]:
        if a in _TYPE_WORDS:
            return _TYPE_WORDS[a]
    return None


# -------------------------------------------------------------------------- validation


def need(cond: bool, key: str, problem: str, fix: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {problem}; {fix}")


def choice(value: str, key: str, choices: Sequence[str]) -> None:
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{key}: '{value}' is not one of {', '.join(choices)}{hint}")


def resolve_model_config(m: ModelConfig) -> ModelConfig:
    """Fill unset shape fields from the preset and check the shape. Mutates and returns `m`."""
    if m.preset is not None:
        if m.preset not in PRESETS:
            close = difflib.get_close_matches(m.preset, PRESETS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"model.preset: unknown preset '{m.preset}'{hint}; choose one of {', '.join(PRESETS)}")
        for k, v in PRESETS[m.preset].items():
            if getattr(m, k) is None:
                setattr(m, k, v)
    if m.arch is None:
        m.arch = "gpt2"
    choice(m.arch, "model.arch", ARCHS)
    for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size"):
        need(getattr(m, k) is not None, f"model.{k}", "not set", "set it or choose a model.preset")
        need(getattr(m, k) > 0, f"model.{k}", f"must be positive, got {getattr(m, k)}", "use a positive integer")
    need(
        m.n_embd % m.n_head == 0,
        "model.n_embd",
        f"{m.n_embd} is not divisible by model.n_head={m.n_head}",
        f"use an n_embd that is a multiple of n_head (e.g. {m.n_head * max(1, round(m.n_embd / m.n_head))})",
    )
    _resolve_arch(m)
    need(m.vocab_pad_multiple >= 1, "model.vocab_pad_multiple", "must be >= 1", "use 1 (no padding), 64 or 128")
    need(0.0 <= m.dropout < 1.0, "model.dropout", f"{m.dropout} is outside [0, 1)", "use 0.0 for pre-training")
    choice(m.attn_impl, "model.attn_impl", ATTN_IMPLS)
    need(m.activation_checkpointing_every >= 1, "model.activation_checkpointing_every",
         f"{m.activation_checkpointing_every} is below 1", "use 1 (every block) or 2 (every other block)")
    need(m.loss_chunk_tokens >= 0, "model.loss_chunk_tokens", f"{m.loss_chunk_tokens} is negative",
         "use e.g. 1024, or 0 for the whole micro-batch at once")
    return m


def _resolve_arch(m: ModelConfig) -> None:
    """Fill and check the fields that differ between the families."""
    if m.arch == "gpt2":
        m.bias = True if m.bias is None else m.bias
        m.n_kv_head = m.n_head if m.n_kv_head is None else m.n_kv_head
        need(m.n_kv_head == m.n_head, "model.n_kv_head", f"{m.n_kv_head} differs from model.n_head={m.n_head}, but "
             "gpt2 has no grouped-query attention", "drop model.n_kv_head, or use model.arch: llama")
        need(m.tie_embeddings, "model.tie_embeddings", "gpt2's LM head is always the token embedding",
             "drop model.tie_embeddings, or use model.arch: llama")
        need(not m.qk_norm, "model.qk_norm", "gpt2 has no QK-norm", "drop model.qk_norm, or use model.arch: llama")
        need(not m.zero_init_proj, "model.zero_init_proj", "gpt2 keeps OpenAI's initialisation",
             "drop model.zero_init_proj, or use model.arch: llama")
        need(m.mlp_multiple is None, "model.mlp_multiple", "gpt2's MLP is always 4 * n_embd wide",
             "drop model.mlp_multiple, or use model.arch: llama")
        return
    m.bias = False if m.bias is None else m.bias
    need(not m.bias, "model.bias", "llama has no biases", "drop model.bias (or set it false)")
    m.n_kv_head = m.n_head if m.n_kv_head is None else m.n_kv_head
    need(1 <= m.n_kv_head <= m.n_head and m.n_head % m.n_kv_head == 0, "model.n_kv_head",
         f"{m.n_kv_head} must be between 1 and model.n_head={m.n_head} and divide it",
         f"use one of {', '.join(str(d) for d in range(1, m.n_head + 1) if m.n_head % d == 0)}")
    need(m.head_dim % 2 == 0, "model.n_embd", f"head size n_embd/n_head={m.head_dim} is odd, rotary embeddings "
         "rotate pairs of channels", "choose n_embd and n_head with an even n_embd/n_head (e.g. 64)")
    need(m.rope_theta > 0, "model.rope_theta", f"must be positive, got {m.rope_theta}", "use 10000.0 or 500000.0")
    m.mlp_multiple = 256 if m.mlp_multiple is None else m.mlp_multiple
    need(m.mlp_multiple >= 1, "model.mlp_multiple", f"must be >= 1, got {m.mlp_multiple}", "use 256 (LLaMA) or e.g. 32")
    need(m.norm_eps > 0, "model.norm_eps", f"must be positive, got {m.norm_eps}", "use 1e-5 or 1e-6")


def resolve_and_validate(cfg: Config) -> Config:
    """Check values that depend on each other. Mutates (fills presets) and returns `cfg`."""
    choice(cfg.stage, "stage", STAGES)
    resolve_model_config(cfg.model)
    if cfg.tokenizer.kind is not None:
        choice(cfg.tokenizer.kind, "tokenizer.kind", TOKENIZER_KINDS)
    t = cfg.train
    choice(t.precision, "train.precision", PRECISIONS)
    choice(t.schedule, "train.schedule", SCHEDULES)
    choice(t.optimizer, "train.optimizer", OPTIMIZERS)
    need(t.optimizer != "muon" or t.grad_clip == 0, "train.grad_clip",
         f"{t.grad_clip} with train.optimizer: muon; under ZeRO, DeepSpeed clips Muon's orthogonalised update "
         "(its norm is about sqrt(width) per matrix), not the gradient, which would shrink every step",
         "set train.grad_clip: 0 (Muon's update has a fixed scale already)")
    need(t.muon_lr > 0, "train.muon_lr", f"must be positive, got {t.muon_lr}", "use e.g. 0.02")
    need(0.0 <= t.muon_momentum < 1.0, "train.muon_momentum", f"{t.muon_momentum} is outside [0, 1)", "use 0.95")
    need(t.micro_batch_size > 0, "train.micro_batch_size", "must be positive", "use e.g. 8")
    need(
        cfg.seq_len <= cfg.model.block_size,
        "train.seq_len",
        f"{cfg.seq_len} exceeds model.block_size={cfg.model.block_size}",
        "lower train.seq_len or raise model.block_size",
    )
    need(t.lr > 0 and t.min_lr >= 0, "train.lr", "learning rates must be positive", "set train.lr > 0, train.min_lr >= 0")
    need(t.min_lr <= t.lr, "train.min_lr", f"{t.min_lr} is above train.lr={t.lr}", "set min_lr <= lr (e.g. lr/10)")
    need(0.0 <= t.warmup_fraction < 1.0, "train.warmup_fraction", "must be in [0, 1)", "use e.g. 0.02")
    need(0.0 < t.decay_fraction <= 1.0, "train.decay_fraction", "must be in (0, 1]", "use e.g. 0.2")
    need(t.grad_clip >= 0, "train.grad_clip", "must be >= 0", "use 1.0, or 0 to disable clipping")
    need(t.max_steps is None or t.max_steps > 0, "train.max_steps", "must be positive", "set a step count or null")
    need(t.exit_after_steps is None or t.exit_after_steps > 0, "train.exit_after_steps", "must be positive", "set a step count or null")
    need(t.max_tokens > 0, "train.max_tokens", "must be positive", "set a token budget, e.g. 1.0e10")
    _resolve_batch_size(cfg)
    # The world size is checked again at launch; at load, the batch must fit one rank.
    from gpt_dist.batch_geometry import batch_geometry  # it imports this module's types

    batch_geometry(cfg.train, cfg.seq_len, cfg.stage, world_size=1)
    need(cfg.engine.zero_stage in (0, 1, 2, 3), "engine.zero_stage", f"{cfg.engine.zero_stage} is not 0-3", "use 0, 1, 2 or 3")
    choice(cfg.checkpoint.resume, "checkpoint.resume", RESUME_MODES)
    need(cfg.checkpoint.every_steps > 0, "checkpoint.every_steps", "must be positive", "use e.g. 1000")
    need(cfg.checkpoint.keep_last >= 1, "checkpoint.keep_last", "must be >= 1", "keep at least the latest one")
    choice(cfg.log.wandb.mode, "log.wandb.mode", WANDB_MODES)
    need(cfg.log.every_steps > 0, "log.every_steps", "must be positive", "use e.g. 10")
    need(cfg.eval.every_steps > 0, "eval.every_steps", "must be positive", "use e.g. 500")
    need(cfg.eval.mc_every_steps > 0, "eval.mc_every_steps", "must be positive", "use e.g. 500")
    need(cfg.eval.mc is None or Path(cfg.eval.mc).is_file(), "eval.mc", f"{cfg.eval.mc} not found",
         "point it at a jsonl file of {ctx, endings, label} items, or null")
    for i, src in enumerate(cfg.data.train):
        need(src.weight > 0, f"data.train[{i}].weight", f"must be positive, got {src.weight}", "drop the source or give it a weight > 0")
    need(cfg.data.num_workers >= 0, "data.num_workers", f"must be >= 0, got {cfg.data.num_workers}", "use 0 (in-process) or e.g. 2")
    need(cfg.data.shuffle_window >= 1, "data.shuffle_window", f"must be >= 1, got {cfg.data.shuffle_window}", "use e.g. 8")
    _validate_finetune(cfg)
    _validate_lora(cfg)
    return cfg


def _validate_lora(cfg: Config) -> None:
    lo = cfg.lora
    need(lo.r >= 0, "lora.r", f"must be >= 0, got {lo.r}", "use e.g. 8 or 16, or 0 to train every weight")
    if lo.r == 0:
        return
    need(lo.alpha > 0, "lora.alpha", f"must be positive, got {lo.alpha}", "use e.g. 2 * lora.r")
    need(0.0 <= lo.dropout < 1.0, "lora.dropout", f"{lo.dropout} is outside [0, 1)", "use e.g. 0.05")
    need(len(lo.target_modules) > 0, "lora.target_modules", "is empty", f"list some of {', '.join(LORA_TARGETS)}")
    for name in lo.target_modules:
        choice(name, "lora.target_modules", LORA_TARGETS)
    need(bool(cfg.checkpoint.init_from), "checkpoint.init_from",
         f"lora.r={lo.r} adapts existing weights, but no starting weights are given",
         "set checkpoint.init_from to a gpt_dist checkpoint or a Hugging Face GPT-2 directory (or lora.r: 0)")


def _validate_finetune(cfg: Config) -> None:
    f = cfg.finetune
    choice(f.overlong, "finetune.overlong", OVERLONG_POLICIES)
    need(0.0 <= f.max_bad_fraction <= 1.0, "finetune.max_bad_fraction", f"{f.max_bad_fraction} is outside [0, 1]",
          "use e.g. 0.1 (1.0 never stops)")
    need(f.dpo_beta > 0, "finetune.dpo_beta", f"must be positive, got {f.dpo_beta}", "use e.g. 0.1")
    need(f.dpo_nll_weight >= 0, "finetune.dpo_nll_weight", f"must be 0 or more, got {f.dpo_nll_weight}",
         "use 0 for plain DPO, or e.g. 1.0 to keep the chosen replies likely")
    if cfg.stage in ("sft", "dpo"):
        need(len(cfg.data.train) > 0, "data.train", f"stage: {cfg.stage} needs training data",
              f"list the {cfg.stage.upper()} jsonl files, e.g. data.train: [{{path: data/{cfg.stage}.jsonl}}]")
    if cfg.stage == "dpo":
        need(bool(cfg.checkpoint.init_from), "checkpoint.init_from",
              "stage: dpo needs the starting weights, which are also its frozen reference model",
              "set it to the SFT checkpoint directory (or a Hugging Face GPT-2 directory)")


DEFAULT_GLOBAL_BATCH_TOKENS = 524288


def _resolve_batch_size(cfg: Config) -> None:
    """Exactly one of train.global_batch_tokens / train.global_batch_size; fills the default."""
    t = cfg.train
    if t.global_batch_tokens is not None and t.global_batch_size is not None:
        raise ConfigError(
            f"train: both global_batch_tokens ({t.global_batch_tokens}) and global_batch_size ({t.global_batch_size}) "
            "are set; keep one (tokens for pretrain/cpt, sequences or DPO pairs otherwise)"
        )
    if cfg.stage in ("sft", "dpo"):
        unit = "rows" if cfg.stage == "sft" else "preference pairs"
        if t.global_batch_tokens is not None:
            raise ConfigError(
                f"train.global_batch_tokens: stage {cfg.stage} counts its batch in {unit}; set "
                f"train.global_batch_size: {max(1, t.global_batch_tokens // cfg.seq_len)} instead "
                f"(global_batch_tokens / seq_len) and drop global_batch_tokens"
            )
        need(t.global_batch_size is not None, "train.global_batch_size", f"not set (stage {cfg.stage})",
             f"set the {unit} per optimizer step, e.g. train.global_batch_size: {8 * t.micro_batch_size}")
    elif t.global_batch_tokens is None and t.global_batch_size is None:
        t.global_batch_tokens = DEFAULT_GLOBAL_BATCH_TOKENS


def config_from_dict(d: dict[str, Any]) -> Config:
    """Rebuild a Config saved with `Config.to_dict()` (e.g. from a checkpoint)."""
    t = d.get("train") or {}
    if d.get("stage") in ("sft", "dpo") and t.get("global_batch_tokens") and not t.get("global_batch_size"):
        # saved before SFT/DPO counted their batch in rows/pairs: the same batch in the new unit
        seq_len = t.get("seq_len") or (d.get("model") or {}).get("block_size") or 1
        d = {**d, "train": {**t, "global_batch_tokens": None, "global_batch_size": t["global_batch_tokens"] // seq_len}}
    return load_config(base=d)
