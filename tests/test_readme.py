"""Every command README.md shows is run by some test: it appears verbatim in a test file
(which runs it as written, in a temporary directory), or it is a script that tests drive with
arguments of their own, listed in RUN_BY with the test file that runs it."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PREFIXES = ("gpt-dist ", "python -m gpt_dist", "make ", "launch/", "sbatch ", "scancel ", "deepspeed ", "torchrun ",
            "lm_eval ")
RUN_BY = {
    "make setup": ".ci/run",
    "make test": ".ci/run",
    # the launchers with 2 CPU ranks, plus --set run_dir/data pointing at the test's folders
    "launch/single_node.sh configs/sample_cpu.yaml 2": "tests/launch/test_launchers.py",
    "launch/torchrun.sh configs/sample_cpu.yaml 2": "tests/launch/test_launchers.py",
    # the sbatch scripts on the two-node test bed, with CPU-node options (NPROC_PER_NODE=1, partition debug)
    "sbatch slurm/pretrain.sbatch configs/gpt2_xl.yaml": "tests/slurm/test_pretrain_sbatch.py",
    "scancel --signal=USR1 JOBID": "tests/slurm/test_pretrain_sbatch.py",
    "sbatch slurm/prepare_data.sbatch configs/data/example.yaml": "tests/slurm/test_prepare_data_sbatch.py",
}


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    cmds = []
    for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = re.split(r"\s+#\s", line)[0].strip()
            if line.startswith(PREFIXES):
                cmds.append(line)
    return cmds


def test_readme_leads_with_setup_and_test_commands():
    assert readme_commands()[:2] == ["make setup", "make test"]


def test_every_readme_command_is_run_by_a_test():
    sources = "\n".join(p.read_text() for p in (REPO / "tests").rglob("*.py") if p.name != "test_readme.py")
    missing = [c for c in readme_commands() if c not in RUN_BY and c not in sources]
    assert not missing, f"README commands that no test runs: {missing}"


def test_listed_runners_exist_and_drive_the_script():
    for cmd, runner in RUN_BY.items():
        text = (REPO / runner).read_text()
        script = cmd.split()[0] if cmd.startswith(("launch/", "make")) else cmd.split()[1]
        if script.startswith("--"):  # scancel --signal=USR1
            script = "--signal=USR1"
        assert Path(script).name in text or script in text, (cmd, runner)
