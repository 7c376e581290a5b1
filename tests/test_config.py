import pytest

from loraleak.config import ConfigError, from_dict, load_config

BASE = {"model": {"name": "tiny-llama"}, "task": {"name": "toy"}}


def test_embedded_default_loads_and_meets_the_issue():
    cfg = load_config(None)
    assert cfg.model.name == "smollm2-135m" and cfg.task.name == "docstring"
    assert cfg.split.members >= 200 and cfg.split.nonmembers >= 200


@pytest.mark.parametrize("data, message", [
    ({"task": {"name": "toy"}}, "missing required key 'model'"),
    ({"model": {}, "task": {"name": "toy"}}, "missing required key 'model.name'"),
    ({**BASE, "trian": {"epochs": 2}}, "unknown key 'trian'; did you mean 'train'"),
    ({**BASE, "train": {"epoch": 2}}, "unknown key 'train.epoch'; did you mean 'epochs'"),
    ({**BASE, "train": {"epochs": "three"}}, "'train.epochs' must be int"),
    ({**BASE, "train": {"loss_on": "prompt"}}, "'train.loss_on' is 'prompt'; choose one of response, full"),
    ({**BASE, "split": {"members": 0}}, "'split.members' must be > 0"),
    ({**BASE, "attacks": []}, "'attacks' is empty"),
    ({**BASE, "attack_params": {"mope": 3}}, "'attack_params' must map names to mappings"),
])
def test_bad_config_names_the_problem(data, message):
    with pytest.raises(ConfigError, match="cfg.yaml: " + message.replace("(", r"\(").replace("[", r"\[")):
        from_dict(data, source="cfg.yaml")


def test_file_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model: {name: tiny-llama}\ntask: {name: toy}\ntrain: {epochs: 2}\n")
    cfg = load_config(f, ["train.epochs=5", "lora.target_modules=[q_proj, k_proj]"])
    assert cfg.train.epochs == 5 and cfg.lora.target_modules == ["q_proj", "k_proj"]
    assert cfg.train.lr == 1e-3  # untouched keys keep their defaults
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")


def test_fingerprint_tracks_only_its_sections():
    a, b = from_dict(BASE), from_dict({**BASE, "scoring": {"batch_size": 3}})
    assert a.fingerprint("model", "train") == b.fingerprint("model", "train")
    assert a.fingerprint("scoring") != b.fingerprint("scoring")


def test_grid_is_the_product_of_sweep_and_variants():
    from loraleak.config import expand_grid
    data = {**BASE, "output_dir": "runs/g", "train": {"epochs": [1, 3]},  # a list for a scalar: a sweep
            "sweep": {"lora.r": [4, 8]},
            "variants": [{"name": "none"}, {"name": "dropout", "lora.dropout": 0.1}]}
    cells = expand_grid(data)
    assert len(cells) == 8 and len({c.name for c in cells}) == 8
    c = next(c for c in cells if c.name == "dropout_r=8_epochs=3")
    assert (c.config.lora.r, c.config.train.epochs, c.config.lora.dropout) == (8, 3, 0.1)
    assert c.settings == {"lora.r": 8, "train.epochs": 3, "lora.dropout": 0.1}
    assert c.config.output_dir == "runs/g/cells/dropout_r=8_epochs=3"
    single = expand_grid({**BASE, "lora": {"target_modules": ["q_proj", "k_proj"]}})  # a list field is no sweep
    assert len(single) == 1 and single[0].config.lora.target_modules == ["q_proj", "k_proj"]


@pytest.mark.parametrize("extra, message", [
    ({"sweep": {"train.epochs": 3}}, "'sweep' must map dotted keys to non-empty lists"),
    ({"variants": [{"name": "a"}, {"name": "a"}]}, "two grid cells are both named 'a'"),
    ({"variants": [{"name": "x", "train.epoch": 2}]}, r"cfg.yaml \(cell x\): unknown key 'train.epoch'"),
    ({"dp": {"delta": 2}}, "'dp.delta' in \\(0, 1\\)"),
    ({"lora": {"exclude_layers": ["last"]}}, "'lora.exclude_layers' must be a list of integers"),
])
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
