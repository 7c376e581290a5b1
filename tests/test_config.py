import dataclasses

import pytest
import yaml

from loraleak.cache import Keys
from loraleak.config import Config, ConfigError, from_dict, load_config, render_yaml

BASE = {"model": {"name": "tiny-llama"}, "task": {"name": "toy"}}


def test_embedded_default_is_the_declared_defaults_and_the_demo_settings():
    cfg = load_config(None)
    assert cfg == Config() == from_dict({})
    assert (cfg.model.name, cfg.task.name, cfg.train.epochs, cfg.attacks) == (
        "smollm2-135m",
        "docstring",
        5,
        ["one-pass"],
    )
    assert cfg.split.members >= 200 and cfg.split.nonmembers >= 200


def test_loraleak_config_prints_every_field_with_help_and_loads_back_to_the_defaults(capsys):
    from loraleak.cli import main

    assert main(["config"]) == 0
    text = capsys.readouterr().out
    assert text == render_yaml() and from_dict(yaml.safe_load(text)) == Config()
    lines = text.splitlines()
    for section in dataclasses.fields(Config):
        value = getattr(Config(), section.name)
        fields = dataclasses.fields(value) if dataclasses.is_dataclass(value) else [section]
        indent = "  " if dataclasses.is_dataclass(value) else ""
        start = lines.index(f"{section.name}:") if indent else 0
        for f in fields:
            i = next(i for i, line in enumerate(lines) if i > start and line.startswith(f"{indent}{f.name}:"))
            assert lines[i - 1].startswith(f"{indent}# {f.metadata['help']}"), f.name


@pytest.mark.parametrize(
    "data, message",
    [
        ({"model": "tiny-llama"}, "'model' must be a mapping of keys to values"),
        ({**BASE, "trian": {"epochs": 2}}, "unknown key 'trian'; did you mean 'train'"),
        ({**BASE, "train": {"epoch": 2}}, "unknown key 'train.epoch'; did you mean 'epochs'"),
        ({**BASE, "train": {"epochs": "three"}}, "'train.epochs' must be int"),
        ({**BASE, "train": {"loss_on": "prompt"}}, "'train.loss_on' is 'prompt'; choose one of response, full"),
        ({**BASE, "split": {"members": 0}}, "'split.members' must be >= 10"),
        ({**BASE, "attacks": []}, "'attacks' is empty"),
        ({**BASE, "attack_params": {"mope": 3}}, "'attack_params' must map names to mappings"),
    ],
)
def test_bad_config_names_the_problem(data, message):
    with pytest.raises(ConfigError, match="cfg.yaml: " + message.replace("(", r"\(").replace("[", r"\[")):
        from_dict(data, source="cfg.yaml")


def test_file_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model: {name: tiny-llama}\ntask: {name: toy}\ntrain: {epochs: 2}\n")
    cfg = load_config(f, overrides=["train.epochs=5", "lora.target_modules=[q_proj, k_proj]"])
    assert cfg.train.epochs == 5 and cfg.lora.target_modules == ["q_proj", "k_proj"]
    assert cfg.train.lr == 1e-3  # untouched keys keep their defaults
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")


def test_cache_keys_track_exactly_their_inputs():
    from loraleak.attacks import ExtraAdapter

    a = from_dict(BASE)
    same = [
        from_dict({**BASE, "scoring": {"batch_size": 3}}),
        from_dict({**BASE, "eval": {"bootstrap": 0}}),
        from_dict({**BASE, "output_dir": "elsewhere", "attacks": ["zlib"]}),
    ]
    assert all(Keys(b).target() == Keys(a).target() for b in same)
    assert Keys(from_dict({**BASE, "train": {"lr": 0.02}})).target() != Keys(a).target()
    ref = ExtraAdapter("reference", data=list, seed_offset=1)
    spv = ExtraAdapter("spv-reference", data=list, inputs={"max_new_tokens": 32}, reads_target=True)
    dp = from_dict({**BASE, "dp": {"enabled": True}})
    assert Keys(dp).extra_adapter(ref) == Keys(a).extra_adapter(ref)  # attacker adapters train without DP
    assert Keys(dp).extra_adapter(spv) != Keys(a).extra_adapter(spv)  # ... but spv's data comes from the target
    assert Keys(same[0]).extra_adapter(spv) != Keys(a).extra_adapter(spv)  # and its generation batches
    assert Keys(a).extra_adapter(dataclasses.replace(spv, inputs={"max_new_tokens": 16})) != Keys(a).extra_adapter(spv)
    # what moves numbers beyond the config: the data's content and the numerics (torch threads, ...)
    for other in (Keys(a, data="edited"), Keys(a, numerics={"threads": 1}), Keys(a, numerics={"threads": 2})):
        assert other.target() != Keys(a).target() and other.extra_adapter(ref) != Keys(a).extra_adapter(ref)
        assert other.report() != Keys(a).report()
    assert Keys(a, numerics={"threads": 1}).pretrained() != Keys(a, numerics={"threads": 2}).pretrained()
    assert Keys(a, data="edited").targets() != Keys(a).targets()


def test_grid_is_the_product_of_sweep_and_variants():
    from loraleak.config import expand_grid

    data = {
        **BASE,
        "output_dir": "runs/g",
        "train": {"epochs": [1, 3]},  # a list for a scalar: a sweep
        "sweep": {"lora.r": [4, 8]},
        "variants": [{"name": "none"}, {"name": "dropout", "lora.dropout": 0.1}],
    }
    cells = expand_grid(data)
    assert len(cells) == 8 and len({c.name for c in cells}) == 8
    c = next(c for c in cells if c.name == "dropout_r=8_epochs=3")
    assert (c.config.lora.r, c.config.train.epochs, c.config.lora.dropout) == (8, 3, 0.1)
    assert c.settings == {"lora.r": 8, "train.epochs": 3, "lora.dropout": 0.1}
    assert c.config.output_dir == "runs/g/cells/dropout_r=8_epochs=3"
    single = expand_grid({**BASE, "lora": {"target_modules": ["q_proj", "k_proj"]}})  # a list field is no sweep
    assert len(single) == 1 and single[0].config.lora.target_modules == ["q_proj", "k_proj"]


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"sweep": {"train.epochs": 3}}, "'sweep' must map dotted keys to non-empty lists"),
        ({"variants": [{"name": "a"}, {"name": "a"}]}, "two grid cells are both named 'a'"),
        ({"variants": [{"name": "x", "train.epoch": 2}]}, r"cfg.yaml \(cell x\): unknown key 'train.epoch'"),
        ({"dp": {"delta": 2}}, "'dp.delta' must be in \\(0, 1\\), got 2"),
        ({"lora": {"exclude_layers": ["last"]}}, "'lora.exclude_layers' must be a list of integers"),
    ],
)
def test_bad_grids_and_defenses_name_the_problem(extra, message):
    from loraleak.config import expand_grid

    with pytest.raises(ConfigError, match=message):
        expand_grid({**BASE, **extra}, source="cfg.yaml")


def test_every_example_config_expands_into_valid_cells():
    from pathlib import Path

    from loraleak.config import load_grid

    files = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
    assert len(files) >= 8
    for f in files:
        cells = load_grid(f)
        assert len(cells) >= 3, f.name
        assert all(c.config.output_dir.startswith("runs/") for c in cells)


def test_example_configs_list_only_what_they_change():
    from pathlib import Path

    for f in sorted((Path(__file__).parent.parent / "configs").glob("*.yaml")):
        for section, value in yaml.safe_load(f.read_text()).items():
            if section in ("sweep", "variants", "seeds", "repeat"):
                continue
            default = getattr(Config(), section)
            for key, v in value.items() if isinstance(value, dict) else [("", value)]:
                assert v != (getattr(default, key) if key else default), f"{f.name}: {section}.{key} is the default"


def test_an_option_added_later_enters_the_keys_only_when_set():
    """`keyed_if_set` options (the token budgets) left at their default give the key a config had
    before they existed, so caches from then stay valid; set, they change it."""
    from loraleak.cache import fingerprint
    from loraleak.config import ScoringConfig, TrainConfig

    for section in (TrainConfig(), ScoringConfig()):
        before = {f.name: getattr(section, f.name) for f in dataclasses.fields(section) if f.name != "max_batch_tokens"}
        assert fingerprint(section) == fingerprint(before)
        assert fingerprint(dataclasses.replace(section, max_batch_tokens=4096)) != fingerprint(before)
    assert fingerprint(TrainConfig(epochs=3)) != fingerprint(TrainConfig())  # an ordinary field is always keyed
