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
