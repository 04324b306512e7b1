"""`gpt-dist prepare`: raw text -> cleaned, deduplicated, tokenized WebDataset shards.

The pipeline is a chain of jobs; each job is one datatrove executor (local: a process pool;
slurm: one sbatch array, chained to the previous job by a dependency):

    clean          read sources, normalise (ftfy + NFC), language filter, quality and word-list
    (tasks)        filters, then write the surviving documents to WORK/clean/<task>.jsonl.zst
                   [+ exact-dedup signatures]
    exact_find     find exact duplicates across all tasks                           (1 task)
    minhash_sig    MinHash signatures of the documents that survive exact dedup    (tasks)
    minhash_buckets  LSH: candidate pairs per band                                  (bands)
    minhash_cluster  union-find over the pairs; one document per cluster survives   (1 task)
    tokenize       drop duplicates, tokenize, pack, split train / val, write shards  (tasks)
    finalize       pack the leftovers of every task, gather statistics, write the manifests

Everything lives under the output folder: DIR/train/, DIR/val/ and the working folder
DIR/.prepare/ (the resolved plan, datatrove's logs and completion markers, intermediates).
Re-running the same command resumes: datatrove skips every task marked complete. A run whose
plan differs from the one in DIR/.prepare (other inputs, tokenizer, seq_len, ...) is refused
unless `--overwrite`, so a folder never mixes shards of two configurations.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from gpt_dist.data.window_packing import SPLITS, TokenizePackWrite, pack_leftovers, read_task_reports
from gpt_dist.data.prepare_config import PrepareConfig
from gpt_dist.data.readers import BAD_INPUT_STAT, resolve_files, sample_topics
from gpt_dist.data.shards import MANIFEST, Manifest, ShardRecord, read_manifest, write_manifest
from gpt_dist.data.tokenizer import portable_spec
from gpt_dist.errors import DataError

log = logging.getLogger(__name__)

WORK_DIR = ".prepare"
PLAN_FILE = "plan.json"
CONSOLE_LOG = "console.log"  # datatrove's terminal output, under WORK_DIR/logs/


@dataclass
class SourcePlan:
    name: str
    format: str
    base: str
    files: list[str]
    paths_file: str
    text_key: str
    id_key: str
    txt_unit: str
    # Sizes and mtimes of the inputs: a resumed run must read the very same files.
    signature: str


@dataclass
class Plan:
    """Everything resolved before any work starts; saved as DIR/.prepare/plan.json."""

    output: str
    work: str
    config: dict[str, Any]
    sources: list[SourcePlan]
    tokenizer: dict[str, Any]
    dtype: str
    sequences_per_shard: int
    tasks: int
    workers: int
    minhash: dict[str, Any] = field(default_factory=dict)
    # Hash of what determines the output (not executor, workers or slurm settings).
    digest: str = ""


# ------------------------------------------------------------------------------------- plan


def plan_pipeline(cfg: PrepareConfig) -> Plan:
    """Resolve inputs, tokenizer, dtype, task count and LSH geometry; nothing is written."""
    from gpt_dist.data.dedup import effective_threshold, lsh_params
    from gpt_dist.data.tokenizer import load_tokenizer, token_dtype

    out = Path(cfg.output).expanduser().resolve()
    work = out / WORK_DIR
    sources = []
    for i, s in enumerate(cfg.sources):
        if s.format == "sample":
            names = [n for n, _ in sample_topics()]
            sources.append(SourcePlan(s.name, "sample", "", names, "", s.text_key, s.id_key, s.txt_unit,
                                      _digest([sys.version, names])))
            continue
        base, files, fmt = resolve_files(s.path, s.format, key=f"sources[{i}].path ({s.name})")
        stats = [(f, os.stat(os.path.join(base, f)).st_size, os.stat(os.path.join(base, f)).st_mtime_ns) for f in files]
        sources.append(SourcePlan(s.name, fmt, base, files, str(work / "inputs" / f"{i:03d}-{s.name}.txt"),
                                  s.text_key, s.id_key, s.txt_unit, _digest(stats)))
    tok = load_tokenizer(cfg.tokenizer)
    try:
        dtype = token_dtype(tok.vocab_size, cfg.dtype)
    except Exception as e:
        raise DataError(f"{e} (tokenizer {tok.describe()})") from None
    cpus = os.cpu_count() or 1
    max_files = max(len(s.files) for s in sources)
    tasks = cfg.executor.tasks or max(1, min(max_files, cpus))
    workers = cfg.executor.workers or (min(tasks, cpus) if cfg.executor.kind == "local" else -1)
    minhash = {}
    if cfg.minhash.enabled:
        bands, rows = (cfg.minhash.bands, cfg.minhash.rows) if cfg.minhash.bands else lsh_params(
            cfg.minhash.threshold, cfg.minhash.num_perm)
        minhash = {"bands": bands, "rows": rows, "ngram": cfg.minhash.ngram, "seed": cfg.minhash.seed,
                   "effective_threshold": round(effective_threshold(bands, rows), 4)}
    config = cfg.to_dict()
    plan = Plan(
        output=str(out), work=str(work), config=config, sources=sources, tokenizer=tok.spec(), dtype=dtype,
        sequences_per_shard=max(1, cfg.shard_tokens // (cfg.seq_len + 1)), tasks=tasks, workers=workers,
        minhash=minhash,
    )
    determining = {k: v for k, v in config.items() if k not in ("executor", "output")}
    plan.digest = _digest([determining, [asdict(s) | {"paths_file": ""} for s in sources], tok.fingerprint, dtype, tasks, minhash])
    return plan


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _load_saved_plan(work: Path) -> dict[str, Any] | None:
    f = work / PLAN_FILE
    return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else None


def check_output(plan: Plan, overwrite: bool) -> str:
    """Decide what to do with an existing output folder: "new", "resume" or "complete".

    Raises DataError when the folder holds another tokenizer's shards, another configuration's
    work, or shards we did not write, unless `overwrite` (which then removes them).
    """
    out, work = Path(plan.output), Path(plan.work)
    saved = _load_saved_plan(work)
    problem = None
    for split in SPLITS:
        if (out / split / MANIFEST).is_file():
            m = read_manifest(out / split)
            if m.tokenizer.get("fingerprint") != plan.tokenizer["fingerprint"]:
                problem = (
                    f"{out / split} holds shards made with another tokenizer ({m.tokenizer.get('kind')} "
                    f"{m.tokenizer.get('fingerprint', '')[:12]}, this run: {plan.tokenizer['kind']} "
                    f"{plan.tokenizer['fingerprint'][:12]})"
                )
                break
            if m.config.get("plan_digest") != plan.digest:
                problem = f"{out / split} holds shards from a different configuration (inputs, seq_len, filters, ...)"
                break
        elif (out / split).is_dir() and any((out / split).glob("*.tar")) and saved is None:
            problem = f"{out / split} holds .tar shards that no `gpt-dist prepare` run in {out} is writing"
            break
    if problem is None and saved is not None and saved.get("digest") != plan.digest:
        changed = _changed_keys(saved, asdict(plan))
        problem = (f"{work} belongs to an interrupted run with a different plan (changed: {', '.join(changed) or '?'})")
    if problem is not None:
        if not overwrite:
            raise DataError(f"{problem}; pass --overwrite to replace it, or choose another --output")
        log.warning("--overwrite: removing %s", ", ".join(str(p) for p in (out / "train", out / "val", work) if p.exists()))
        for p in (out / "train", out / "val", work):
            if p.exists():
                shutil.rmtree(p)
        return "new"
    complete = all((out / s / MANIFEST).is_file() for s in _splits(plan))
    if complete and saved is not None:
        return "complete"
    return "resume" if saved is not None else "new"


def _changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(old) | set(new)):
        if k in ("digest", "workers", "work", "output") or (prefix == "config." and k in ("executor", "output")):
            continue
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _changed_keys(a, b, f"{prefix}{k}.")
        elif a != b:
            keys.append(f"{prefix}{k}".removeprefix("config."))
    return keys


def _splits(plan: Plan) -> tuple[str, ...]:
    return SPLITS if plan.config["val_fraction"] > 0 else ("train",)


# ------------------------------------------------------------------------------------- jobs


@dataclass
class Job:
    name: str
    pipeline: list
    tasks: int


def build_jobs(plan: Plan) -> list[Job]:
    from datatrove.pipeline.dedup.exact_dedup import ExactDedupSignature, ExactFindDedups
    from datatrove.pipeline.dedup.minhash import MinhashDedupBuckets, MinhashDedupCluster
    from datatrove.pipeline.writers.jsonl import JsonlWriter

    from gpt_dist.config import TokenizerConfig
    from gpt_dist.data.dedup import ExactDedup, MinhashDedup, MinhashSignature, exact_dedup_config, minhash_config

    cfg = plan.config
    work = Path(plan.work)
    strict = cfg["strict"]
    clean: list = [_reader(s, strict) for s in plan.sources]
    clean += _cleaning_steps(cfg)
    clean.append(SourceCounter())
    clean.append(JsonlWriter(str(work / "clean"), output_filename="${rank}.jsonl.zst", compression="zstd"))
    exact = cfg["exact_dedup"]["enabled"]
    if exact:
        clean.append(ExactDedupSignature(str(work / "exact" / "sigs"), config=exact_dedup_config()))
    jobs = [Job("clean", clean, plan.tasks)]
    if exact:
        jobs.append(Job("exact_find", [ExactFindDedups(str(work / "exact" / "sigs"), str(work / "exact" / "dups"),
                                                            config=exact_dedup_config())], 1))

    def deduped_reader() -> list:
        steps: list = [CleanShardReader(str(work / "clean"))]
        if exact:
            steps.append(ExactDedup(str(work / "exact" / "dups"), config=exact_dedup_config()))
        return steps

    mh = plan.minhash
    if mh:
        mcfg = minhash_config(mh["ngram"], mh["bands"], mh["rows"], mh["seed"])
        jobs.append(Job("minhash_sig", deduped_reader() + [MinhashSignature(str(work / "minhash" / "sigs"), mcfg)],
                            plan.tasks))
        jobs.append(Job("minhash_buckets", [MinhashDedupBuckets(str(work / "minhash" / "sigs"),
                                                                    str(work / "minhash" / "buckets"), config=mcfg)],
                            mh["bands"]))
        jobs.append(Job("minhash_cluster", [MinhashDedupCluster(str(work / "minhash" / "buckets"),
                                                                    str(work / "minhash" / "remove"), config=mcfg)], 1))
    tokenize = deduped_reader()
    if mh:
        tokenize.append(MinhashDedup(str(work / "minhash" / "remove")))
    # The resolved file / directory (e.g. from $GPT_DIST_GPT2_VOCAB) so every task loads the same one.
    tok_cfg = TokenizerConfig(kind=plan.tokenizer["kind"], path=plan.tokenizer.get("path") or cfg["tokenizer"]["path"])
    tokenize.append(TokenizePackWrite(
        tok_cfg, plan.output, plan.work, cfg["seq_len"], plan.dtype, plan.sequences_per_shard,
        cfg["val_fraction"], cfg["seed"], fingerprint=plan.tokenizer["fingerprint"],
    ))
    jobs.append(Job("tokenize", tokenize, plan.tasks))
    jobs.append(Job("finalize", [Finalize(plan_to_json(plan))], 1))
    return jobs


def _reader(s: SourcePlan, strict: bool):
    from gpt_dist.data.readers import make_reader

    return make_reader(s.name, s.format, s.base, s.paths_file, text_key=s.text_key, id_key=s.id_key,
                       txt_unit=s.txt_unit, strict=strict)


def _cleaning_steps(cfg: dict[str, Any]) -> list:
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    from datatrove.pipeline.formatters import FTFYFormatter

    from gpt_dist.data.filters import LanguageFilter, LanguageScoped, NFCFormatter, WordListFilter, read_word_files

    steps: list = []
    if cfg["normalize"]["enabled"]:
        steps.append(FTFYFormatter(normalization="NFC") if cfg["normalize"]["ftfy"] else NFCFormatter())
    lang = cfg["language"]
    if lang["enabled"]:
        steps.append(LanguageFilter(lang["keep"], lang["min_score"], lang["max_chars"]))
    q = cfg["quality"]
    if q["enabled"]:
        default_lang = lang["keep"][0] if lang["enabled"] else "en"
        for key, cls in (("gopher_quality", GopherQualityFilter), ("gopher_repetition", GopherRepetitionFilter),
                         ("c4", C4QualityFilter), ("fineweb", FineWebQualityFilter)):
            if q[key] is None:
                continue
            try:
                inner = cls(**q[key])
            except TypeError as e:
                raise DataError(f"quality.{key}: {e}; see datatrove's {cls.__name__} for its arguments") from None
            steps.append(LanguageScoped(inner, q["languages"], default_language=default_lang))
    w = cfg["wordlist"]
    if w["enabled"]:
        words = list(w["words"]) + read_word_files(w["files"])
        steps.append(WordListFilter(words, w["max_ratio"], name=w["name"]))
    return steps


class SourceCounter(PipelineStep):
    """Counts, per source, the documents that survived the cleaning filters (stat `kept/<source>`)."""

    type = "📊 - STATS"
    name = "per-source count"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            self.stat_update(f"kept/{doc.metadata.get('source', '?')}")
            yield doc


class CleanShardReader(PipelineStep):
    """Reads WORK/clean/<rank>.jsonl.zst: exactly the documents clean-job task `rank` kept, in order.

    The dedup jobs address documents by (task, index), so later jobs must see each clean
    task's output as one stream under the same rank; a task that kept nothing wrote no file.
    """

    type = "📖 - READER"
    name = "cleaned documents"

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from datatrove.pipeline.readers import JsonlReader

        path = Path(self.folder) / f"{rank:05d}.jsonl.zst"
        if not path.is_file():
            return
        reader = JsonlReader(self.folder, compression="zstd")
        for doc in reader.read_file(path.name):
            self.stat_update("documents")
            yield doc


# --------------------------------------------------------------------------------- finalize


def plan_to_json(plan: Plan) -> str:
    return json.dumps(asdict(plan), indent=1)


def plan_from_json(text: str) -> Plan:
    d = json.loads(text)
    d["sources"] = [SourcePlan(**s) for s in d["sources"]]
    return Plan(**d)


class Finalize(PipelineStep):
    """Pack leftovers, gather every job's statistics, write DIR/<split>/manifest.json."""

    type = "📦 - FINALIZE"
    name = "manifests"

    def __init__(self, plan_json: str):
        super().__init__()
        self.plan_json = plan_json

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> None:
        finalize(plan_from_json(self.plan_json))


def finalize(plan: Plan) -> dict[str, Manifest]:
    cfg = plan.config
    work = Path(plan.work)
    reports = read_task_reports(work)
    stats = {job: _job_stats(work, job) for job in ("clean", "tokenize")}
    sources, bad_total = _source_stats(plan, stats, reports)
    filters = _filter_stats(stats)
    manifests = {}
    for split in _splits(plan):
        shards = [ShardRecord(**r) for rep in reports for r in rep["splits"][split]["shards"]]
        tail, dropped = pack_leftovers(work, reports, split, plan.output, cfg["seq_len"], plan.dtype,
                                       plan.sequences_per_shard)
        shards += tail
        if not shards:
            read = sum(s["documents_read"] for s in sources.values())
            if split == "val":
                raise DataError(
                    f"{plan.output}: the validation split is empty (val_fraction={cfg['val_fraction']} of the "
                    f"surviving documents held less than one {cfg['seq_len'] + 1}-token sample); re-run with a "
                    f"larger --val-fraction (or 0 for no validation split) and --overwrite"
                )
            raise DataError(
                f"{plan.output}: nothing left to write: {read} documents read, {bad_total} bad input, and the "
                f"filters dropped the rest ({_drop_summary(filters)}); check the inputs (text_key? language.keep?) "
                f"or loosen the filters"
            )
        manifests[split] = Manifest(
            split=split, seq_len=cfg["seq_len"], dtype=plan.dtype, tokenizer=portable_spec(plan.tokenizer), shards=shards,
            sources={name: _split_source(s, split) for name, s in sources.items()}, filters=filters,
            bad_input=bad_total_by_reason(sources),
            config={**cfg, "plan_digest": plan.digest, "tasks": plan.tasks, "minhash_effective": plan.minhash,
                    "dropped_tail_tokens": dropped},
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
    # Validation first: a run counts as complete when train/manifest.json exists.
    for split in sorted(manifests, key=lambda s: s == "train"):
        write_manifest(Path(plan.output) / split, manifests[split])
    for tmp in ("clean", "exact", "minhash", "leftover"):
        shutil.rmtree(work / tmp, ignore_errors=True)
    return manifests


def _total(v: Any) -> float:
    return v.get("total", 0) if isinstance(v, dict) else (v or 0)


def _job_stats(work: Path, job: str) -> dict[str, dict[str, float]]:
    """datatrove's per-task stats of one job, summed: {step name: {label: total}}."""
    out: dict[str, dict[str, float]] = {}
    for f in sorted((work / "logs" / job / "stats").glob("*.json")):
        for step in json.loads(f.read_text(encoding="utf-8")):
            # "🥇 - FILTER: 🥇 Gopher Quality [en]" -> "Gopher Quality [en]": no type, no emoji.
            name = re.sub(r"^[^\w\[(]+", "", step["name"].split(": ", 1)[-1])
            d = out.setdefault(name, {})
            for label, v in step["stats"].items():
                d[label] = d.get(label, 0) + _total(v)
    return out


def _source_stats(plan: Plan, stats: dict[str, Any], reports: list[dict[str, Any]]) -> tuple[dict[str, Any], int]:
    clean = stats["clean"]
    counter = clean.get(SourceCounter.name, {})
    out = {}
    bad_total = 0
    for s in plan.sources:
        reader = next((v for k, v in clean.items() if k.startswith(f"read {s.name} (")), {})
        bad = {k[len(BAD_INPUT_STAT):]: int(v) for k, v in reader.items() if k.startswith(BAD_INPUT_STAT)}
        bad_total += sum(bad.values())
        docs = int(reader.get("documents", 0))
        entry = {"documents_read": docs + sum(bad.values()), "bad_input": bad,
                 "after_filters": int(counter.get(f"kept/{s.name}", 0))}
        for split in SPLITS:
            entry[split] = {
                "documents": sum(r["sources"].get(s.name, {}).get(split, {}).get("documents", 0) for r in reports),
                "tokens": sum(r["sources"].get(s.name, {}).get(split, {}).get("tokens", 0) for r in reports),
            }
        entry["after_dedup"] = entry["train"]["documents"] + entry["val"]["documents"]
        out[s.name] = entry
    return out, bad_total


def _split_source(entry: dict[str, Any], split: str) -> dict[str, Any]:
    e = {k: v for k, v in entry.items() if k not in SPLITS}
    e["documents"] = entry[split]["documents"]
    e["tokens"] = entry[split]["tokens"]
    return e


def bad_total_by_reason(sources: dict[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in sources.values():
        for k, v in s["bad_input"].items():
            out[k] = out.get(k, 0) + v
    return out


def _filter_stats(stats: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    """{step: {in, kept, dropped, reasons}} for every step that drops documents, in pipeline order."""
    out = {}
    for job in ("clean", "tokenize"):
        for name, d in stats[job].items():
            if "dropped" not in d and "forwarded" not in d:
                continue
            out[name] = {
                "in": int(d.get("total", 0)),
                "kept": int(d.get("forwarded", 0)),
                "dropped": int(d.get("dropped", 0)),
                "reasons": {k[len("dropped_"):]: int(v) for k, v in d.items() if k.startswith("dropped_")},
            }
    return out


def _drop_summary(filters: dict[str, Any]) -> str:
    parts = [f"{name}: {f['dropped']}" for name, f in filters.items() if f["dropped"]]
    return ", ".join(parts) or "none"


# -------------------------------------------------------------------------------------- run


@dataclass
class PrepareResult:
    status: str  # "complete" (already done), "done" (finished now), "submitted" (slurm)
    output: str
    manifests: dict[str, Manifest] = field(default_factory=dict)
    job_ids: list[str] = field(default_factory=list)


def run_prepare(cfg: PrepareConfig, *, overwrite: bool = False, console_log: bool = False) -> PrepareResult:
    """Plan, check the output folder, then run (or submit) every job. See the module docstring.

    `console_log`: what datatrove writes to stderr (its pipeline listings, per-job statistics
    and progress bars) goes to the working folder's logs/console.log instead of the terminal.
    """
    plan = plan_pipeline(cfg)
    state = check_output(plan, overwrite)
    out = Path(plan.output)
    if state == "complete":
        log.info("%s is already complete (same plan %s); nothing to do", out, plan.digest)
        return PrepareResult("complete", str(out), {s: read_manifest(out / s) for s in _splits(plan)})
    init_work(plan)
    jobs = build_jobs(plan)
    if cfg.executor.kind == "slurm":
        return PrepareResult("submitted", str(out), job_ids=submit_slurm(plan, jobs, cfg))
    if console_log:
        from gpt_dist.console import stderr_to

        from datatrove.utils.logging import setup_default_logger

        try:
            with stderr_to(Path(plan.work) / "logs" / CONSOLE_LOG):
                run_local(plan, jobs)
        finally:
            setup_default_logger()  # its sink is the sys.stderr of the block; point it at today's
    else:
        run_local(plan, jobs)
    return PrepareResult("done", str(out), {s: read_manifest(out / s) for s in _splits(plan)})


def init_work(plan: Plan) -> None:
    """Create the working folder: the input lists of every source and plan.json (what a resume checks)."""
    work = Path(plan.work)
    work.mkdir(parents=True, exist_ok=True)
    for s in plan.sources:
        if s.paths_file:
            Path(s.paths_file).parent.mkdir(parents=True, exist_ok=True)
            Path(s.paths_file).write_text("".join(f + "\n" for f in s.files), encoding="utf-8")
    tmp = work / f".{PLAN_FILE}.tmp"
    tmp.write_text(plan_to_json(plan), encoding="utf-8")
    os.replace(tmp, work / PLAN_FILE)


def run_local(plan: Plan, jobs: list[Job]) -> None:
    """Run `jobs` in order here, each with a datatrove LocalPipelineExecutor; finished tasks are skipped."""
    from datatrove.executor import LocalPipelineExecutor

    for job in jobs:
        ex = LocalPipelineExecutor(
            job.pipeline, tasks=job.tasks, workers=max(1, min(plan.workers, job.tasks)),
            logging_dir=str(Path(plan.work) / "logs" / job.name),
        )
        ex.run()
        incomplete = ex.get_incomplete_ranks()
        if incomplete:
            raise DataError(
                f"job {job.name}: tasks {incomplete} did not complete; see "
                f"{Path(plan.work) / 'logs' / job.name / 'logs'} and re-run the same command to resume"
            )


def submit_slurm(plan: Plan, jobs: list[Job], cfg: PrepareConfig) -> list[str]:
    """One sbatch array per job, each depending on the previous one (afterok)."""
    from datatrove.executor import SlurmPipelineExecutor

    s = cfg.executor.slurm
    env_command = s.env_command or (f"source {sys.prefix}/bin/activate" if sys.prefix != sys.base_prefix else "")
    previous = None
    executors = []
    for job in jobs:
        ex = SlurmPipelineExecutor(
            job.pipeline, tasks=job.tasks, time=s.time, partition=s.partition, cpus_per_task=s.cpus_per_task,
            mem_per_cpu_gb=s.mem_per_cpu_gb, workers=plan.workers if plan.workers and plan.workers > 0 else -1,
            job_name=f"{s.job_name}-{job.name}", qos=s.qos, env_command=env_command, sbatch_args=dict(s.sbatch_args),
            max_array_size=s.max_array_size, depends=previous,
            logging_dir=str(Path(plan.work) / "logs" / job.name),
        )
        executors.append(ex)
        previous = ex
    executors[-1].run()
    return [str(ex.job_id) for ex in executors]
