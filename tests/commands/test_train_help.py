"""`gpt-dist train --help` points to the config reference, and docs/config.md is what
tools/config_reference.py writes from gpt_dist/config.py today: every key, with its default."""

import dataclasses
import subprocess
import sys
from pathlib import Path

from gpt_dist.cli import main
from gpt_dist.config import Config

REPO = Path(__file__).resolve().parents[2]


def leaf_keys(cls, prefix=""):
    for f in dataclasses.fields(cls):
        t = cls.__annotations__[f.name]
        nested = getattr(sys.modules[cls.__module__], t, None) if isinstance(t, str) else t
        if dataclasses.is_dataclass(nested):
            yield from leaf_keys(nested, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}"


def test_train_help_points_to_the_config_reference(capsys):
    try:
        main(["train", "--help"])
    except SystemExit as e:
        assert e.code == 0
    out = capsys.readouterr().out
    assert "docs/config.md" in out and (REPO / "docs" / "config.md").is_file()


def test_config_reference_is_current_and_lists_every_key():
    p = subprocess.run([sys.executable, str(REPO / "tools" / "config_reference.py"), "--check"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    text = (REPO / "docs" / "config.md").read_text()
    keys = list(leaf_keys(Config))
    assert len(keys) > 60
    missing = [k for k in keys if f"| `{k}` |" not in text]
    assert not missing
    defaults = Config()
    assert f"| `train.lr` | `{defaults.train.lr}` |" in text
    assert f"| `engine.zero_stage` | `{defaults.engine.zero_stage}` |" in text
    assert "| `checkpoint.resume` | `auto` | str | auto: continue" in text and "(one of: auto, never)" in text
