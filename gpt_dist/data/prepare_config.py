"""The YAML schema of `gpt-dist prepare CONFIG.yaml`, as typed dataclasses.

    output: data/mix
    tokenizer: {kind: gpt2}
    seq_len: 1024
    sources:
      - {name: web, path: "raw/web/*.jsonl.zst"}
      - {name: books, path: raw/books, format: txt}
    language: {keep: [en, vi, zh]}
    minhash: {threshold: 0.8}
    executor: {kind: local, tasks: 8}

Every step is switchable (`enabled: false`). Command-line flags override the file; see
gpt_dist/commands/prepare.py. Errors name the key and the fix, like gpt_dist.config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from gpt_dist.config import TOKENIZER_KINDS, TokenizerConfig, choice, merge_layers, need, read_yaml_mapping
from gpt_dist.data.readers import FORMATS, TXT_UNITS


@dataclass
class SourceConfig:
    name: str = "???"
    # A file, a folder (searched recursively) or a glob.
    path: str = "???"
    # auto = from the file extensions: jsonl (.jsonl/.jsonl.gz/.jsonl.zst), parquet, txt; or sample.
    format: str = "auto"
    text_key: str = "text"
    id_key: str = "id"
    # txt only: one document per file, per blank-line-separated paragraph, or per line.
    txt_unit: str = "file"


@dataclass
class NormalizeConfig:
    enabled: bool = True
    # ftfy fixes mojibake, HTML entities, control characters (and does NFC); false = NFC only.
    ftfy: bool = True


@dataclass
class LanguageConfig:
    enabled: bool = True
    keep: list[str] = field(default_factory=lambda: ["en", "vi", "zh"])
    # py3langid's normalised probability of the top language.
    min_score: float = 0.5
    max_chars: int = 2000


@dataclass
class QualityConfig:
    enabled: bool = True
    # The heuristics count space-separated words and English stop words: only documents detected
    # as one of these languages are filtered; the others pass untouched.
    languages: list[str] = field(default_factory=lambda: ["en"])
    # Keyword arguments of datatrove's filters; null switches one off, {} keeps its defaults.
    gopher_quality: Optional[dict[str, Any]] = field(default_factory=dict)
    gopher_repetition: Optional[dict[str, Any]] = field(default_factory=dict)
    c4: Optional[dict[str, Any]] = None
    fineweb: Optional[dict[str, Any]] = None


@dataclass
class WordListConfig:
    enabled: bool = False
    # Shown in the statistics as the drop reason.
    name: str = "profanity"
    words: list[str] = field(default_factory=list)
    # Text files, one word per line.
    files: list[str] = field(default_factory=list)
    # Drop a document when more than this fraction of its words are listed (0 = any match).
    max_ratio: float = 0.0


@dataclass
class ExactDedupConfig:
    enabled: bool = True


@dataclass
class MinHashConfig:
    enabled: bool = True
    # Shingle size in words (a CJK character counts as a word).
    ngram: int = 5
    # LSH geometry; null = chosen from threshold and num_perm.
    bands: Optional[int] = None
    rows: Optional[int] = None
    threshold: float = 0.8
    num_perm: int = 112
    seed: int = 1


@dataclass
class SlurmConfig:
    partition: Optional[str] = None
    time: str = "24:00:00"
    cpus_per_task: int = 1
    mem_per_cpu_gb: int = 2
    qos: Optional[str] = None
    job_name: str = "gpt-dist-prepare"
    # Shell line that activates the Python environment on the compute nodes; null = this venv.
    env_command: Optional[str] = None
    max_array_size: int = 1001
    sbatch_args: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExecutorConfig:
    kind: str = "local"
    # Parallel pieces of the per-document stages; input files are dealt round-robin to them.
    # null = min(number of input files, CPU cores). Fixed for the life of an output folder.
    tasks: Optional[int] = None
    # Local: processes at once (null = min(tasks, CPU cores)). Slurm: array tasks at once (null = no cap).
    workers: Optional[int] = None
    slurm: SlurmConfig = field(default_factory=SlurmConfig)


@dataclass
class PrepareConfig:
    output: Optional[str] = None
    sources: list[SourceConfig] = field(default_factory=list)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    seq_len: int = 1024
    # auto = uint16 when the vocabulary fits, else uint32.
    dtype: str = "auto"
    val_fraction: float = 0.005
    # Tokens per shard (about 2 bytes each with uint16).
    shard_tokens: int = 1 << 26
    seed: int = 1234
    # Fail on the first bad record instead of counting and skipping it.
    strict: bool = False
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    language: LanguageConfig = field(default_factory=LanguageConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    wordlist: WordListConfig = field(default_factory=WordListConfig)
    exact_dedup: ExactDedupConfig = field(default_factory=ExactDedupConfig)
    minhash: MinHashConfig = field(default_factory=MinHashConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_prepare_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> PrepareConfig:
    """The YAML file (optional) with `overrides` (a nested dict, e.g. from CLI flags) on top, validated."""
    layers = []
    if path is not None:
        layers.append((str(path), read_yaml_mapping(Path(path), "settings (output:, sources:, ...)")))
    if overrides:
        layers.append(("command line", overrides))
    cfg: PrepareConfig = merge_layers(PrepareConfig, layers)
    validate(cfg)
    return cfg


def validate(cfg: PrepareConfig) -> PrepareConfig:
    need(cfg.output is not None, "output", "not set", "give --output DIR or output: in the config")
    need(len(cfg.sources) > 0, "sources", "no input", "list sources in the config, or give --input FILES / --sample")
    names = [s.name for s in cfg.sources]
    need(len(set(names)) == len(names), "sources", f"duplicate source names {names}", "give each source its own name")
    for i, s in enumerate(cfg.sources):
        choice(s.format, f"sources[{i}].format", ("auto",) + FORMATS)
        choice(s.txt_unit, f"sources[{i}].txt_unit", TXT_UNITS)
        need(bool(s.name) and "/" not in s.name, f"sources[{i}].name", f"{s.name!r} is not a usable name",
              "use a short name without '/'")
    choice(cfg.tokenizer.kind, "tokenizer.kind", TOKENIZER_KINDS)
    need(cfg.seq_len >= 1, "seq_len", f"must be >= 1, got {cfg.seq_len}", "use e.g. 1024 (the model's block_size)")
    choice(cfg.dtype, "dtype", ("auto", "uint16", "uint32"))
    need(0.0 <= cfg.val_fraction < 1.0, "val_fraction", f"{cfg.val_fraction} is outside [0, 1)", "use e.g. 0.005")
    need(cfg.shard_tokens >= cfg.seq_len + 1, "shard_tokens", f"{cfg.shard_tokens} is below one sample",
          f"use at least seq_len + 1 = {cfg.seq_len + 1} (e.g. 67108864)")
    need(0.0 <= cfg.language.min_score <= 1.0, "language.min_score", "must be in [0, 1]", "use e.g. 0.5")
    need(len(cfg.language.keep) > 0, "language.keep", "empty", "list languages to keep, or set language.enabled: false")
    need(cfg.wordlist.max_ratio >= 0, "wordlist.max_ratio", "must be >= 0", "use 0 to drop on any match")
    m = cfg.minhash
    need(m.ngram >= 1, "minhash.ngram", "must be >= 1", "use e.g. 5")
    need(0.0 < m.threshold < 1.0, "minhash.threshold", f"{m.threshold} is outside (0, 1)", "use e.g. 0.8")
    need((m.bands is None) == (m.rows is None), "minhash.bands", "set together with minhash.rows",
          "set both, or neither to derive them from minhash.threshold")
    need(m.bands is None or (m.bands >= 1 and m.rows >= 1), "minhash.bands", "bands and rows must be >= 1", "use e.g. 14 and 8")
    need(m.num_perm >= 2, "minhash.num_perm", "must be >= 2", "use e.g. 112")
    e = cfg.executor
    choice(e.kind, "executor.kind", ("local", "slurm"))
    need(e.tasks is None or e.tasks >= 1, "executor.tasks", "must be >= 1", "use e.g. the number of input files")
    need(e.workers is None or e.workers >= 1, "executor.workers", "must be >= 1", "or null for the default")
    if e.kind == "slurm":
        need(bool(e.slurm.partition), "executor.slurm.partition", "required with executor.kind: slurm",
              "set it to your cluster's CPU partition")
    return cfg
