"""Project-wide test set-up: the GPT-2 vocabulary file, offline mode, the repo root, the sample
shards (GPT-2's and a small vocabulary's)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
GPT2_VOCAB = REPO_ROOT.parent / "shared" / "data" / "gpt2.tiktoken"

# Commands the tests start (deepspeed, gpt-dist, ninja) come from this interpreter's
# environment, as they would in an activated venv.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
# Nothing in the tests may reach the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
if GPT2_VOCAB.is_file():
    os.environ.setdefault("GPT_DIST_GPT2_VOCAB", str(GPT2_VOCAB))
# An xdist worker shares the cores with the other one: one intra-op thread for its in-process
# tests and the commands it starts, which would otherwise oversubscribe the cores (torch's
# OpenMP threads then wait on each other and runs take several times as long).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"


# Under pytest-xdist (`make test`: two workers, `--dist loadscope`) tests are handed out in work units that
# keep a session or module fixture's users together, so no worker builds it a second time:
# a whole folder where its conftest.py holds session fixtures that several modules share, the
# module elsewhere, and everything that submits to the test Slurm cluster in one unit (its two
# nodes run one job at a time). The slowest units are handed out first, so the two workers
# finish close together; the rest follow in collection order.
_FOLDER_UNITS = ("benchmark", "checkpoint", "conversion", "data", "evaluation", "finetune", "generation")
_SLURM_MODULES = ("tests/slurm/", "tests/data/test_prepare_slurm.py")
_SLOWEST_FIRST = (  # the longest units of a run on a 2-core machine (docs/benchmarks.md, "Test suite"),
    # longest first, so that no long one starts last and leaves the other worker idle at the end
    "tests/test_sample_runs.py",
    "tests/engine/test_training.py",
    "tests/benchmark",
    "tests/test_llama_sample.py",
    "tests/conversion",
    "tests/engine/test_llama_training.py",
    "slurm",
    "tests/launch/test_launchers.py",
    "tests/finetune",
    "tests/test_docs.py",
)


def _work_unit(nodeid: str) -> str:
    path = nodeid.split("::")[0]
    if path.startswith(_SLURM_MODULES):
        return "slurm"
    parts = path.split("/")
    if len(parts) > 2 and parts[1] in _FOLDER_UNITS:
        return "/".join(parts[:2])
    return path


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`--dist loadscope` with our work units as the scopes."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class WorkUnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _work_unit(nodeid)

    return WorkUnitScheduling(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if hasattr(config, "workerinput"):  # an xdist worker: its order is the order units are handed out in
        rank = {unit: i for i, unit in enumerate(_SLOWEST_FIRST)}
        items.sort(key=lambda item: rank.get(_work_unit(item.nodeid), len(rank)))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def gpt2_vocab() -> Path:
    if not GPT2_VOCAB.is_file():
        pytest.fail(f"GPT-2 vocabulary not found at {GPT2_VOCAB}; see shared/data/README.md")
    return GPT2_VOCAB


def _built_once(request, tmp_path_factory, name: str, build) -> Path:
    """`build(DIR)` run once for the whole test run, DIR returned. Under pytest-xdist the workers
    share it: the first builds it under a lock in the run's common temporary folder, the other
    waits and reads it (each would otherwise spend the same CPU seconds on a copy)."""
    if not hasattr(request.config, "workerinput"):  # not an xdist worker
        out = tmp_path_factory.mktemp(name)
        build(out)
        return out
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp().parent  # this run's, above every worker's basetemp
    out, built = root / name, root / f"{name}.built"  # the mark beside DIR: DIR holds only what build wrote
    with FileLock(str(root / f"{name}.lock")):
        if not built.is_file():
            shutil.rmtree(out, ignore_errors=True)  # a build that died half-way
            out.mkdir()
            build(out)
            built.touch()
    return out


def _gpt_dist(*args: str) -> None:
    subprocess.run([str(Path(sys.executable).with_name("gpt-dist")), *args], check=True, cwd=REPO_ROOT,
                   capture_output=True)


@pytest.fixture(scope="session")
def sample_shards(request, tmp_path_factory) -> Path:
    """`gpt-dist prepare --sample` once per test run: DIR/train and DIR/val (seq_len 256)."""
    return _built_once(request, tmp_path_factory, "sample_data",
                       lambda out: _gpt_dist("prepare", "--sample", "--output", str(out)))


SMALL_VOCAB = 512


@pytest.fixture(scope="session")
def small_vocab_shards(request, tmp_path_factory) -> Path:
    """The built-in sample (`gpt-dist prepare --sample`, 256-token sequences) tokenized with a
    512-token byte-level BPE trained on the same text: DIR/train, DIR/val, DIR/tokenizer.

    The engine's and the launchers' tests train `mini` models for a few steps, again and again;
    with GPT-2's 50,304 tokens about 86 % of their FLOPs per token are the LM head, with 512
    about 7 %, so a step takes about a seventh of the FLOPs (flops_per_token; the suite's time
    is in docs/benchmarks.md). Nothing the loop or the launchers do depends on the vocabulary
    (testutil.shard_vocab_overrides sets the model's to the shards'); the GPT-2-tokenized sample
    trains in the README's runs (tests/test_sample_runs.py) and in the other folders' tests."""
    from gpt_dist.data.readers import sample_topics

    def build(out: Path) -> None:
        text = out / "topics.txt"
        text.write_text("\n\n".join(body for _, body in sample_topics()))
        _gpt_dist("train-tokenizer", "--input", str(text), "--kind", "bpe", "--vocab-size", str(SMALL_VOCAB),
                  "--output", str(out / "tokenizer"))
        _gpt_dist("prepare", "--sample", "--tokenizer", "bpe", "--tokenizer-path", str(out / "tokenizer"),
                  "--output", str(out))

    return _built_once(request, tmp_path_factory, "small_vocab_sample_data", build)


_DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(autouse=True)
def _restore_process_group_env():
    """An in-process `train()` runs as a world of one and sets RANK, MASTER_PORT, ... in
    os.environ; commands later tests start must not inherit them."""
    saved = {k: os.environ.get(k) for k in _DIST_VARS}
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
