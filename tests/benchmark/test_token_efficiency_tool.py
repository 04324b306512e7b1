"""tools/bench_token_efficiency.py: the fraction of the baseline's tokens is read off the eval
curves correctly, and the tool's whole chain (corpus, train-tokenizer, prepare, two gpt-dist
train runs, report) works end to end in its tiny mode."""

import importlib.util
import json
import sys

import pytest


@pytest.fixture(scope="module")
def tool(repo_root):
    spec = importlib.util.spec_from_file_location("bench_token_efficiency", repo_root / "tools" / "bench_token_efficiency.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_tokens_to_reach_interpolates_between_the_eval_points_around_the_first_crossing(tool):
    curve = [(100, 5.0), (200, 4.0), (300, 3.0), (400, 3.5), (500, 2.0)]
    assert tool.tokens_to_reach(curve, 3.5) == pytest.approx(250.0)  # halfway from 4.0 to 3.0
    assert tool.tokens_to_reach(curve, 4.0) == pytest.approx(200.0)
    assert tool.tokens_to_reach(curve, 3.0) == pytest.approx(300.0)  # not the later dip to 2.0
    assert tool.tokens_to_reach(curve, 6.0) == 100.0  # already below at the first eval
    assert tool.tokens_to_reach(curve, 1.0) is None


def test_token_fraction_is_against_the_baselines_final_loss_and_tokens(tool):
    baseline = [(1000, 6.0), (2000, 5.0), (4000, 4.0)]
    recipe = [(1000, 5.0), (2000, 3.0), (4000, 2.5)]
    assert tool.token_fraction(baseline, recipe) == pytest.approx(1500 / 4000)
    assert tool.token_fraction(baseline, baseline) == 1.0
    assert tool.token_fraction(recipe, baseline) is None  # the baseline never gets to 2.5


def test_the_runs_share_shapes_batch_and_budget_and_differ_in_block_and_optimizer(tool):
    specs = tool.run_specs(tool.FULL)
    base, recipe = specs["baseline"], specs["recipe"]
    for key in ("n_layer", "n_embd", "n_head", "vocab_size", "block_size"):
        assert base["model"][key] == recipe["model"][key]
    assert (base["model"]["arch"], base["train"]["optimizer"], base["train"]["schedule"]) == ("gpt2", "adamw", "cosine")
    assert (recipe["model"]["arch"], recipe["train"]["optimizer"], recipe["train"]["schedule"]) == ("llama", "muon", "wsd")
    p = {n: tool._parameters(specs[n]["model"]) for n in ("baseline", "recipe")}
    # The blocks, not the embedding, hold most of the weights, and about as many in both families.
    assert p["baseline"]["non_embedding"] > 0.5 * p["baseline"]["total"]
    assert p["recipe"]["non_embedding"] == pytest.approx(p["baseline"]["non_embedding"], rel=0.05)


def test_tiny_mode_trains_both_runs_through_the_commands_and_reports_the_fraction(tool, tmp_path):
    summary = tool.main(["--out", str(tmp_path), "--tiny", "--nice", "0", "--runs", "baseline", "recipe"])
    data = json.loads((tmp_path / "token_efficiency.json").read_text())
    assert (tmp_path / "token_efficiency.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "tokenizer" / "gpt_dist_tokenizer.json").exists()
    budget = tool.TINY.max_steps * tool.TINY.batch_tokens
    for name in ("baseline", "recipe"):
        run = data["runs"][name]
        assert (tmp_path / "runs" / name / "metrics.jsonl").exists()
        assert run["config"]["tokenizer"]["kind"] == "sentencepiece"
        assert run["curve"][-1][0] == budget and len(run["curve"]) == tool.TINY.max_steps // tool.TINY.eval_every
        assert all(0 < loss < 10 for _, loss in run["curve"])
    assert data["runs"]["recipe"]["config"]["train"]["optimizer"] == "muon"
    expected = tool.token_fraction(data["runs"]["baseline"]["curve"], data["runs"]["recipe"]["curve"])
    assert data["fraction_of_baseline_tokens"]["recipe"] == expected == summary["fraction_of_baseline_tokens"]["recipe"]
    assert data["baseline_final_val_loss"] == data["runs"]["baseline"]["curve"][-1][1]
