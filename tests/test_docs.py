"""Every command docs/*.md shows is run by some test.

A command is each line of a ```bash, ```sh, ```console or ```shell block (a trailing `\\` joins
the next line; ` # ` starts a comment). Each one is, in this order of preference:
- written verbatim in a test module that runs it as written (a string, or a docstring or
  comment naming the command in backticks, ending where the quote or backtick does);
- in RUN_WITH_TEST_ARGS: the same script run by the named test with arguments of its own (its
  temporary folders, a smaller size);
- in NOT_RUN_HERE: a command this machine cannot run (GPUs, several hosts, a GPU cluster), which
  the named test runs as far as it can and whose launch it checks (the command lines the
  launchers would start, the training run those ranks would load).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from gpt_dist.batch_geometry import run_geometry
from gpt_dist.cli import build_parser
from gpt_dist.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DOCS = REPO / "docs"
SHELL_BLOCK = re.compile(r"^```(?:bash|sh|console|shell)\n(.*?)^```", flags=re.S | re.M)

RUN_WITH_TEST_ARGS = {
    # benchmarks.md: the measured runs take minutes and GiBs; the tests run the same tool smaller.
    "export GPT_DIST_GPT2_VOCAB=../shared/data/gpt2.tiktoken": "tests/conftest.py",  # sets it for every test
    "python tools/bench_data.py all --json results.json":
        "tests/test_docs.py::test_bench_data_all_writes_every_section",
    # all eight recorded runs (gpt2-medium to gpt2-xl, ZeRO-2/3, fp32/bf16) have this prefix
    ".venv/bin/python tools/bench_convert.py": "tests/test_docs.py::test_bench_convert_builds_converts_and_checks",
    # the sweep and the measured runs (minutes each); the test runs the same chain in --tiny mode
    "python tools/bench_token_efficiency.py":
        "tests/benchmark/test_token_efficiency_tool.py::test_tiny_mode_trains_both_runs_through_the_commands_and_reports_the_fraction",
    # launch.md: the tests add --set run_dir=... and data.* for their own folders (`--set ...`)
    "launch/single_node.sh configs/sample_cpu.yaml 2": "tests/launch/test_launchers.py",
    "launch/single_node.sh configs/sample_cpu.yaml 2 --set ...": "tests/launch/test_launchers.py",
    "launch/torchrun.sh configs/sample_cpu.yaml 2 --set ...": "tests/launch/test_launchers.py",
    "tools/slurm_testbed.sh start": "tests/slurm/conftest.py",
    'eval "$(tools/slurm_testbed.sh env)"': "tests/slurm/conftest.py",  # SLURM_CONF for the clients
    "NPROC_PER_NODE=1 sbatch --partition=debug --gpus-per-node=0 --cpus-per-task=1 slurm/pretrain.sbatch "
    "configs/sample_cpu.yaml --set train.max_steps=12 --set ...": "tests/slurm/test_pretrain_sbatch.py",
    "scancel --signal=USR1 JOBID": "tests/slurm/test_pretrain_sbatch.py",
    "sbatch --partition=debug --cpus-per-task=1 slurm/prepare_data.sbatch --sample --output data/sample":
        "tests/slurm/test_prepare_data_sbatch.py",  # --output: the test's folder
    # the job runs on the test bed with --sample; the example config's pipeline is tests/data's
    "sbatch slurm/prepare_data.sbatch configs/data/example.yaml": "tests/slurm/test_prepare_data_sbatch.py",
}

GPU_LAUNCHES = {  # command -> (launcher, GPUs used, config files)
    "launch/single_node.sh configs/gpt2_124m.yaml": ("deepspeed", [0, 1, 2, 3, 4, 5, 6, 7], ["configs/gpt2_124m.yaml"]),
    "launch/single_node.sh configs/gpt2_124m.yaml 4": ("deepspeed", [0, 1, 2, 3], ["configs/gpt2_124m.yaml"]),
    "CUDA_VISIBLE_DEVICES=4,5 launch/single_node.sh configs/gpt2_124m.yaml": ("deepspeed", [4, 5],
                                                                              ["configs/gpt2_124m.yaml"]),
    "launch/torchrun.sh configs/gpt2_124m.yaml 8": ("torchrun", list(range(8)), ["configs/gpt2_124m.yaml"]),
}
CPU_ZERO3_LAUNCH = "launch/torchrun.sh configs/sample_cpu.yaml 2 --set engine.zero_stage=3"
HOSTFILE_LAUNCH = ("deepspeed --hostfile launch/hostfile.example --master_addr node-01 --master_port 29500 "
                   "--no_local_rank --module gpt_dist train configs/gpt2_124m.yaml")
GPU_SBATCH = {  # command -> (nodes, GPUs per node, gpt-dist train arguments)
    "sbatch slurm/pretrain.sbatch": (2, 8, ["configs/gpt2_124m.yaml"]),
    "sbatch slurm/pretrain.sbatch configs/gpt2_xl.yaml --set train.lr=2e-4": (
        2, 8, ["configs/gpt2_xl.yaml", "--set", "train.lr=2e-4"]),
    "sbatch --nodes=4 --time=48:00:00 slurm/pretrain.sbatch": (4, 8, ["configs/gpt2_124m.yaml"]),
}
NOT_RUN_HERE = {
    **{c: ("tests/test_docs.py::test_gpu_launch_lines_start_the_ranks_they_say", "needs 8 GPUs") for c in GPU_LAUNCHES},
    # CPU ranks could run it, but a whole ZeRO-3 sample run on 2 ranks costs minutes; the same script
    # trains 2 CPU ranks in tests/launch/test_launchers.py, and tests/engine/test_training.py ZeRO-3 on 2.
    CPU_ZERO3_LAUNCH: ("tests/test_docs.py::test_cpu_zero3_launch_line_passes_its_override",
                       "minutes of 2-rank training"),
    HOSTFILE_LAUNCH: ("tests/test_docs.py::test_hostfile_launch_runs_deepspeed_up_to_pdsh",
                      "needs two 8-GPU hosts with passwordless ssh and pdsh"),
    **{c: ("tests/test_docs.py::test_gpu_sbatch_lines_ask_for_a_run_that_divides_over_their_ranks",
           "needs a SLURM partition `gpu` of 8-GPU, 64-core nodes; the CPU test bed runs the same script "
           "(tests/slurm/test_pretrain_sbatch.py)") for c in GPU_SBATCH},
}


def docs_commands() -> list[tuple[str, str]]:
    """(docs file name, command) for every command line of every shell block of docs/*.md."""
    out = []
    for path in sorted(DOCS.glob("*.md")):
        for block in SHELL_BLOCK.findall(path.read_text()):
            for line in re.sub(r"\\\n\s*", "", block).splitlines():
                line = re.split(r"(?:^|\s+)#\s", line)[0].strip()
                if line:
                    out.append((path.name, line))
    return out


def _listed(cmd: str, table: dict) -> bool:
    """Listed as it is, or (for a key that ends in a Python script) as that script with arguments."""
    return any(cmd == k or (k.endswith(".py") and cmd.startswith(k + " ")) for k in table)


def _script(cmd: str) -> str:
    """The file a command runs (its first .py/.sh/.sbatch/.yaml/.tiktoken path's name), else its program."""
    files = re.findall(r"[\w.-]*/[\w./-]*\.(?:py|sh|sbatch|yaml|tiktoken)\b", cmd)
    return Path(files[0]).name if files else shlex.split(cmd)[0]


def _test_sources() -> str:
    own = {Path(__file__).name, "test_readme.py"}  # these list commands; they do not run them
    return "\n".join(p.read_text() for p in (REPO / "tests").rglob("*.py") if p.name not in own)


def _written_as_run(cmd: str, sources: str) -> bool:
    return re.search(r"(?:^|[\"'`\s])" + re.escape(cmd) + r"(?=[\"'`]|$)", sources, flags=re.M) is not None


def test_the_guard_reads_the_commands_of_every_shell_block():
    cmds = docs_commands()
    assert ("data.md", "gpt-dist inspect data/sample --json --verify") in cmds
    assert ("launch.md", HOSTFILE_LAUNCH) in cmds  # the `\` continuation joined
    assert ("launch.md", "scancel --signal=USR1 JOBID") in cmds  # the comment cut
    assert not any(c.startswith(("model:", "from ", "task:")) for _, c in cmds)  # yaml/python blocks left out


def test_every_docs_command_is_run_by_a_test():
    sources = _test_sources()
    missing = [f"{doc}: {c}" for doc, c in docs_commands() if not _written_as_run(c, sources)
               and not _listed(c, RUN_WITH_TEST_ARGS) and not _listed(c, NOT_RUN_HERE)]
    assert not missing, "docs/ commands that no test runs (run them verbatim in a test, or list them here):\n" + \
        "\n".join(missing)


def test_every_listed_command_is_still_in_the_docs_and_its_test_drives_it():
    cmds = [c for _, c in docs_commands()]
    assert not set(RUN_WITH_TEST_ARGS) & set(NOT_RUN_HERE)
    for table in (RUN_WITH_TEST_ARGS, NOT_RUN_HERE):
        for cmd, entry in table.items():
            assert any(_listed(c, {cmd: None}) for c in cmds), f"listed but no longer in docs/: {cmd}"
            runner = entry[0] if isinstance(entry, tuple) else entry
            file, _, test = runner.partition("::")
            text = (REPO / file).read_text()
            assert not test or re.search(rf"^def {test}\(", text, flags=re.M), f"{runner}: no such test"
            assert _script(cmd) in text, f"{runner} does not run {_script(cmd)} ({cmd})"


# ------------------------------------------------------------------------- what tests run here


def _tools_cwd(tmp_path: Path) -> Path:
    """A working folder from which `tools/...` (relative, as the docs write it) is the repo's."""
    (tmp_path / "tools").symlink_to(REPO / "tools")
    return tmp_path


def _run(cmd: str, cwd: Path, timeout: float, **env: str) -> subprocess.CompletedProcess:
    p = subprocess.run(["bash", "-c", cmd], cwd=cwd, env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **env},
                       capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{cmd} -> {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


def test_bench_data_all_writes_every_section(tmp_path):
    """benchmarks.md's data-layer command, with every size flag small (the recorded run: minutes)."""
    small = "--sequences 64 --seq-len 32 --per-shard 16 --batches 4 --copies 1 --repeats 1 --docs 200 --cores 1"
    _run(f"python tools/bench_data.py all --json results.json --dir shards {small}", _tools_cwd(tmp_path), 300)
    r = json.loads((tmp_path / "results.json").read_text())
    loader = r["loader_mtokens_per_s"]
    assert len(loader) == 5 and "3 sources 0.6/0.2/0.2, 2 worker processes, rank 0 of 8" in loader
    assert all(v > 0 for v in loader.values())
    assert r["tokenize"]["documents"] > 0 and "1_cores" in r["tokenize"]
    assert r["minhash"]["documents"] == 200 and r["minhash"]["removed"] > 0  # the planted near-duplicates


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_bench_convert_builds_converts_and_checks(tmp_path):
    """benchmarks.md's conversion benchmark on the tiny preset: two DeepSpeed ranks write a ZeRO-3
    checkpoint, `gpt-dist convert to-hf` converts it, and every tensor is checked against the engine."""
    p = _run(f"{sys.executable} tools/bench_convert.py --preset tiny --ranks 2 --work work", _tools_cwd(tmp_path), 360)
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert (r["preset"], r["ranks"], r["zero_stage"], r["dtype"]) == ("tiny", 2, 3, "fp32")
    assert r["tensors_checked"] > 0 and r["convert_s"] > 0 and r["peak_rss_gib"] > 0
    assert (tmp_path / "work" / "hf" / "config.json").is_file()


# ---------------------------------------------------------- what runs only as far as it can here


def _gpus(folder: Path, n: int) -> Path:
    """`folder`, to put first on PATH, with an `nvidia-smi -L` that lists `n` GPUs: the machine a
    launch line is written for, whatever GPUs the test machine has."""
    folder.mkdir()
    lines = "".join(f"GPU {i}: NVIDIA A100-SXM4-80GB (UUID: GPU-{i:08d})\\n" for i in range(n))
    (folder / "nvidia-smi").write_text(f"#!/bin/sh\nprintf '{lines}'\n")
    (folder / "nvidia-smi").chmod(0o755)
    return folder


def _training_run(train_args: list[str], world_size: int) -> Config:
    """The config every rank of a launch would load from `gpt-dist train ARGS`, checked to split
    its global batch over `world_size` ranks (UserError otherwise)."""
    args = build_parser().parse_args(train_args)
    assert args.command == "train", train_args
    cfg = load_config([str(REPO / c) for c in args.configs], args.overrides)
    assert run_geometry(cfg, world_size).world_size == world_size
    return cfg


def _dry_run(cmd: str, gpus: Path) -> list[str]:
    """The launcher command line `cmd` would start (LAUNCH_DRY_RUN=1) on the machine `gpus` stands for."""
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}  # only what `cmd` sets
    env.update(LAUNCH_DRY_RUN="1", PATH=os.pathsep.join([str(gpus), str(BIN), os.environ["PATH"]]))
    p = subprocess.run(["bash", "-c", cmd], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"{cmd} -> {p.returncode}\n{p.stderr[-3000:]}"
    return shlex.split(p.stdout)


def test_gpu_launch_lines_start_the_ranks_they_say(tmp_path):
    """launch.md's GPU lines on a machine with eight GPUs, up to the launcher (LAUNCH_DRY_RUN=1):
    the command line the script would start, as DeepSpeed's and torchrun's own parsers read it."""
    from deepspeed.launcher.runner import apply_num_nodes_and_gpus, parse_inclusion_exclusion
    from deepspeed.launcher.runner import parse_args as deepspeed_args
    from torch.distributed.run import parse_args as torchrun_args

    eight_gpus = _gpus(tmp_path / "gpus", 8)
    for cmd, (launcher, gpus, configs) in GPU_LAUNCHES.items():
        argv = _dry_run(cmd, eight_gpus)
        assert argv[0] == launcher, (cmd, argv)
        if launcher == "deepspeed":
            a = deepspeed_args(argv[1:])
            active = parse_inclusion_exclusion({"localhost": 8}, a.include, a.exclude)
            assert apply_num_nodes_and_gpus(active, a.num_nodes, a.num_gpus) == {"localhost": gpus}, cmd
            assert a.module and a.no_local_rank and a.user_script == "gpt_dist", cmd
            train_args = a.user_args
        else:
            a = torchrun_args(argv[1:])
            assert a.standalone and a.module and int(a.nproc_per_node) == len(gpus), cmd
            assert a.training_script == "gpt_dist"
            train_args = a.training_script_args
        assert train_args == ["train", *configs], cmd
        _training_run(train_args, world_size=len(gpus))


def test_cpu_zero3_launch_line_passes_its_override(tmp_path):
    """launch.md's ZeRO-3 line on a machine without GPUs: 2 CPU ranks, the --set reaching them."""
    from torch.distributed.run import parse_args as torchrun_args

    a = torchrun_args(_dry_run(CPU_ZERO3_LAUNCH, _gpus(tmp_path / "no_gpus", 0))[1:])  # 2 CPU ranks
    assert int(a.nproc_per_node) == 2 and a.training_script_args[:2] == ["train", "configs/sample_cpu.yaml"]
    assert _training_run(a.training_script_args, world_size=2).engine.zero_stage == 3


@pytest.mark.timeout(120)
def test_hostfile_launch_runs_deepspeed_up_to_pdsh(tmp_path):
    """launch.md's multi-node line, run as written by DeepSpeed's real runner; `ssh` and `pdsh`
    stand in for the two hosts and record what they were asked to run on them."""
    net = tmp_path / "net"
    net.mkdir()
    for tool in ("ssh", "pdsh"):
        (net / tool).write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{tmp_path}/{tool}.args"\n')
        (net / tool).chmod(0o755)
    _run(HOSTFILE_LAUNCH, REPO, 100, PATH=f"{net}:{BIN}:{os.environ['PATH']}")

    # The runner checks the first host answers over ssh before launching.
    assert (tmp_path / "ssh.args").read_text().split() == ["-o", "PasswordAuthentication=no", "node-01", "hostname"]
    pdsh = (tmp_path / "pdsh.args").read_text().splitlines()
    assert pdsh[:5] == ["-S", "-f", "1024", "-w", "node-01,node-02"]
    remote = pdsh[5:]  # what each host runs, %n its node rank
    assert f"cd {REPO};" in remote  # the same path on every host
    launch = remote[remote.index("deepspeed.launcher.launch") + 1:]
    world = json.loads(base64.urlsafe_b64decode(next(a for a in launch if a.startswith("--world_info="))[13:]))
    assert world == {"node-01": list(range(8)), "node-02": list(range(8))}
    expected = {"--node_rank=%n", "--master_addr=node-01", "--master_port=29500", "--module", "--no_local_rank"}
    assert expected <= set(launch)
    train_args = launch[launch.index("gpt_dist") + 1:]
    assert train_args == ["train", "configs/gpt2_124m.yaml"]
    _training_run(train_args, world_size=16)


def _sbatch_header() -> dict[str, str]:
    lines = (REPO / "slurm" / "pretrain.sbatch").read_text().splitlines()
    return dict(ln.split()[1].lstrip("-").split("=", 1) for ln in lines if ln.startswith("#SBATCH ") and "=" in ln)


def test_gpu_sbatch_lines_ask_for_a_run_that_divides_over_their_ranks():
    """launch.md's GPU sbatch lines: the resources they ask SLURM for (the script's #SBATCH lines,
    command-line options over them, as sbatch does) and the training run its ranks would load:
    the default CONFIG when none is given, every --set a valid key, the global batch whole over
    nodes x GPUs."""
    script = (REPO / "slurm" / "pretrain.sbatch").read_text()
    default_config = re.search(r"^CONFIG=\$\{CONFIG:-(\S+)\}", script, flags=re.M).group(1)
    for cmd, (nodes, gpus_per_node, train_args) in GPU_SBATCH.items():
        words = shlex.split(cmd)
        at = words.index("slurm/pretrain.sbatch")
        request = {**_sbatch_header(), **dict(w.lstrip("-").split("=", 1) for w in words[1:at])}
        assert (int(request["nodes"]), int(request["gpus-per-node"])) == (nodes, gpus_per_node), cmd
        assert request["partition"] == "gpu" and request["signal"] == "USR1@120"
        args = words[at + 1:] or [default_config]
        assert args == train_args, cmd
        _training_run(["train", *args], world_size=nodes * gpus_per_node)
