import pytest

from gpt_dist.batch_geometry import run_geometry, total_steps
from gpt_dist.config import Config, ConfigError, config_from_dict, load_config


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


SMALL = ["model.preset=mini", "train.global_batch_tokens=4096", "train.micro_batch_size=4", "train.seq_len=256"]


def test_files_compose_later_wins_and_overrides_come_last(tmp_path):
    a = write(tmp_path, "a.yaml", "model: {preset: mini}\ntrain: {lr: 1.0e-3, micro_batch_size: 4, global_batch_tokens: 8192}\n")
    b = write(tmp_path, "b.yaml", "train: {lr: 2.0e-3}\nengine: {zero_stage: 1}\n")
    cfg = load_config([a, b], overrides=["train.min_lr=1e-5", "checkpoint.every_steps=7"])
    assert cfg.train.lr == 2.0e-3  # b overrides a
    assert cfg.train.micro_batch_size == 4  # a's value survives b
    assert cfg.train.min_lr == 1e-5 and cfg.checkpoint.every_steps == 7
    assert cfg.engine.zero_stage == 1
    assert cfg.model.n_layer == 4 and cfg.model.block_size == 256  # filled from the preset


def test_preset_fields_can_be_overridden():
    cfg = load_config(overrides=SMALL + ["model.n_layer=2"])
    assert cfg.model.n_layer == 2 and cfg.model.n_embd == 128


def test_list_of_sources(tmp_path):
    p = write(tmp_path, "d.yaml", "data:\n  train:\n    - {path: shards/web, weight: 0.6}\n    - {path: shards/wiki, weight: 0.4}\n  val: shards/val\n")
    cfg = load_config([p], overrides=SMALL)
    assert [(s.path, s.weight) for s in cfg.data.train] == [("shards/web", 0.6), ("shards/wiki", 0.4)]


def test_unknown_key_names_file_and_suggests_closest(tmp_path):
    p = write(tmp_path, "bad.yaml", "train: {lrr: 1.0e-3}\n")
    with pytest.raises(ConfigError) as e:
        load_config([p])
    msg = str(e.value)
    assert "bad.yaml" in msg and "train.lrr" in msg and "did you mean 'train.lr'" in msg


def test_unknown_section_suggests_closest(tmp_path):
    p = write(tmp_path, "bad.yaml", "trian: {lr: 1.0e-3}\n")
    with pytest.raises(ConfigError, match="did you mean 'train'"):
        load_config([p])


def test_unknown_key_in_override():
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["model.n_layers=3"])
    assert "--set" in str(e.value) and "model.n_layer" in str(e.value)


def test_wrong_type_names_file_and_key(tmp_path):
    p = write(tmp_path, "bad.yaml", "train: {micro_batch_size: eight}\n")
    with pytest.raises(ConfigError) as e:
        load_config([p])
    assert "bad.yaml" in str(e.value) and "train.micro_batch_size" in str(e.value)


def test_heads_must_divide_embedding():
    with pytest.raises(ConfigError, match=r"model.n_embd: 130 is not divisible by model.n_head=4"):
        load_config(overrides=SMALL + ["model.n_embd=130"])


def test_global_batch_must_be_a_multiple_and_error_proposes_values():
    with pytest.raises(ConfigError) as e:
        load_config(overrides=SMALL + ["train.global_batch_tokens=5000"])
    msg = str(e.value)
    assert "train.global_batch_tokens" in msg and "use 4096" in msg and "5120" in msg


def test_gradient_accumulation_from_world_size():
    cfg = load_config(overrides=SMALL + ["train.global_batch_tokens=16384"])
    assert run_geometry(cfg, world_size=1).grad_accum == 16
    assert run_geometry(cfg, world_size=2).grad_accum == 8
    with pytest.raises(ConfigError, match="data-parallel ranks"):
        run_geometry(cfg, world_size=3)


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.precision=fp8", "train.precision"),
        ("train.schedule=cosin", "train.schedule"),
        ("model.attn_impl=flash", "model.attn_impl"),
        ("stage=finetune", "stage"),
        ("model.preset=gpt3", "model.preset"),
        ("engine.zero_stage=4", "engine.zero_stage"),
        ("train.min_lr=1.0", "train.min_lr"),
        ("train.seq_len=512", "train.seq_len"),
    ],
)
def test_inconsistent_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(overrides=SMALL + [override])


def test_misspelt_choice_is_suggested():
    with pytest.raises(ConfigError, match="did you mean 'cosine'"):
        load_config(overrides=SMALL + ["train.schedule=cosin"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config([tmp_path / "nope.yaml"])
    p = write(tmp_path, "broken.yaml", "train: {lr: [1, \n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config([p])
    p = write(tmp_path, "list.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError, match="list.yaml: the top level must be a mapping"):
        load_config([p])


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(overrides=["train.lr"])


def test_resolved_config_round_trips_through_a_dict():
    cfg = load_config(overrides=SMALL + ["train.lr=3e-4"])
    again = config_from_dict(cfg.to_dict())
    assert isinstance(again, Config) and again == cfg


def test_shipped_configs_load(repo_root):
    for path in sorted((repo_root / "configs").glob("*.yaml")):
        load_config([path])


def test_lora_needs_starting_weights_and_known_targets(tmp_path):
    with pytest.raises(ConfigError, match=r"checkpoint.init_from: lora.r=8 adapts existing weights"):
        load_config([], SMALL + ["lora.r=8"])
    with pytest.raises(ConfigError, match=r"lora.target_modules: 'c_atn' is not one of .*did you mean 'c_attn'"):
        load_config([], SMALL + ["lora.r=8", "checkpoint.init_from=runs/x/ckpt", "lora.target_modules=[c_atn]"])
    with pytest.raises(ConfigError, match=r"lora.dropout: 1.0 is outside \[0, 1\)"):
        load_config([], SMALL + ["lora.r=8", "checkpoint.init_from=runs/x/ckpt", "lora.dropout=1.0"])
    cfg = load_config([], SMALL + ["lora.r=8", "checkpoint.init_from=runs/x/ckpt"])
    assert cfg.lora.r == 8 and list(cfg.lora.target_modules) == ["c_attn", "c_proj", "c_fc"]


@pytest.mark.parametrize("yaml_text, message", [
    # a section given a scalar
    ("model: 5\n", "bad.yaml: 'model' must be a mapping of its keys (preset, n_layer, "),
    ("log:\n  wandb: 3\n", "bad.yaml: 'log.wandb' must be a mapping of its keys (mode, project, name), not the int 3"),
    # wrong types: what was expected, in words
    ("data:\n  train: 5\n", "bad.yaml: key 'data.train' expects a list, not 5 (int)."),
    ("train:\n  lr: [1, 2]\n", "bad.yaml: key 'train.lr' expects a number, not [1, 2] (list)."),
    ("model:\n  n_layer: abc\n", "bad.yaml: key 'model.n_layer' expects an integer, not 'abc' (str)."),
])
def test_wrong_shapes_and_types_say_what_was_expected(tmp_path, yaml_text, message):
    f = tmp_path / "bad.yaml"
    f.write_text(yaml_text)
    with pytest.raises(ConfigError) as e:
        load_config([f])
    assert str(e.value).startswith(str(f.parent / message) if message.startswith("bad.yaml") else message)
    assert "Merge error" not in str(e.value) and "AnyNode" not in str(e.value) and "subclass" not in str(e.value)


@pytest.mark.parametrize("override, suggestion", [
    ("train.learning_rate=1e-3", "train.lr"),
    ("train.max_grad_norm=1", "train.grad_clip"),
    ("model.num_layers=3", "model.n_layer"),
])
def test_other_frameworks_names_suggest_ours(override, suggestion):
    with pytest.raises(ConfigError) as e:
        load_config([], [override])
    msg = str(e.value)
    assert f"did you mean '{suggestion}'? Valid keys in {suggestion.split('.')[0]}: " in msg
    assert msg.endswith(".")  # sentences end; none runs into the next


def test_unknown_key_without_a_close_one_is_two_sentences():
    with pytest.raises(ConfigError, match=r"^--set: unknown key 'train.zzz'\. Valid keys in train: global_batch_tokens"):
        load_config([], ["train.zzz=1"])


def test_global_batch_size_counts_sequences_and_gives_the_same_geometry_as_tokens():
    by_tokens = run_geometry(load_config(overrides=SMALL + ["train.global_batch_tokens=16384"]), world_size=2)
    by_size = run_geometry(load_config(overrides=[x for x in SMALL if "tokens" not in x] + ["train.global_batch_size=64"]), 2)
    assert by_tokens == by_size
    assert (by_size.global_batch_size, by_size.grad_accum, by_size.positions_per_step) == (64, 8, 16384)
    assert by_size.deepspeed() == dict(train_micro_batch_size_per_gpu=4, gradient_accumulation_steps=8, train_batch_size=64)


def test_exactly_one_batch_unit():
    with pytest.raises(ConfigError, match="both global_batch_tokens .* and global_batch_size"):
        load_config(overrides=SMALL + ["train.global_batch_size=16"])
    # neither: GPT-2's half a million tokens for pre-training
    cfg = load_config(overrides=["model.preset=mini", "train.micro_batch_size=4", "train.seq_len=256"])
    assert cfg.train.global_batch_tokens == 524288 and run_geometry(cfg, 1).global_batch_size == 2048


@pytest.mark.parametrize("stage, unit", [("sft", "rows"), ("dpo", "preference pairs")])
def test_finetuning_counts_its_batch_in_rows_or_pairs(stage, unit, tmp_path):
    base = ["model.preset=mini", "train.micro_batch_size=4", "train.seq_len=256", f"stage={stage}",
            "data.train=[{path: x.jsonl}]", "checkpoint.init_from=somewhere"]
    with pytest.raises(ConfigError) as e:
        load_config(overrides=base + ["train.global_batch_tokens=2048"])
    assert f"counts its batch in {unit}" in str(e.value) and "train.global_batch_size: 8" in str(e.value)
    with pytest.raises(ConfigError, match="train.global_batch_size: not set"):
        load_config(overrides=base)
    cfg = load_config(overrides=base + ["train.global_batch_size=8", "train.max_tokens=8192"])
    g = run_geometry(cfg, world_size=2)
    assert (g.grad_accum, g.unit) == (1, "pair" if stage == "dpo" else "sequence")
    # a DPO pair is two sequences: 8 pairs x 2 x 256 positions per step
    assert g.positions_per_step == 8 * 256 * (2 if stage == "dpo" else 1)
    assert total_steps(cfg.train, g) == (2 if stage == "dpo" else 4)


def test_batch_size_that_does_not_divide_proposes_sizes():
    with pytest.raises(ConfigError) as e:
        run_geometry(load_config(overrides=[x for x in SMALL if "tokens" not in x] + ["train.global_batch_size=12"]), 2)
    msg = str(e.value)
    assert "train.global_batch_size: 12 sequences is not a multiple of" in msg and "use 8" in msg and "16" in msg


def test_a_config_saved_before_finetuning_counted_rows_still_loads():
    saved = load_config(overrides=["model.preset=mini", "train.micro_batch_size=4", "train.seq_len=256", "stage=sft",
                                   "data.train=[{path: x.jsonl}]", "train.global_batch_size=4"]).to_dict()
    saved["train"].update(global_batch_tokens=1024, global_batch_size=None)  # the old unit
    assert config_from_dict(saved).train.global_batch_size == 4
