"""Experiment configuration: typed sections, loaded from YAML, validated with errors a user can act on.

A config file names every section it changes; anything it leaves out takes the default below,
except `model.name` and `task.name`, which a file must give. The embedded default
(`configs/default.yaml`) is what `loraleak run` uses without `--config`.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import itertools
import json
import re
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

REQUIRED = object()  # sentinel default: the key must be given


class ConfigError(ValueError):
    """A config problem, phrased as: where it is, what is wrong, what to do."""


@dataclass
class ModelConfig:
    name: str = REQUIRED  # bundled alias, local directory, .gguf file or Hugging Face id
    dtype: str = "bfloat16"  # float32 | bfloat16 | float16; recorded in results
    trust_remote_code: bool = False  # never on unless the user says so
    allow_pickle: bool = False  # refuse pickle (.bin/.pt) checkpoints unless set


@dataclass
class TaskConfig:
    name: str = REQUIRED  # registered task, e.g. "docstring"
    max_prompt_tokens: int = 96  # prompt is cut to this many tokens (its head is kept)
    max_response_tokens: int = 32  # response is cut to this many tokens (its head is kept)
    # for the generic tasks jsonl:PATH, csv:PATH and hf:NAME[:CONFIG] (registered tasks ignore them)
    prompt_field: str = "prompt"
    response_field: str = "response"
    text_field: str = "text"  # used when a row has no prompt/response: the whole text is the response
    id_field: str = "id"  # rows without it get FILE:ROW
    hf_split: str = "train"

    def options(self) -> dict:
        """What the task loader takes."""
        return {k: getattr(self, k) for k in ("prompt_field", "response_field", "text_field", "id_field", "hf_split")}


@dataclass
class SplitConfig:
    members: int = 200  # fine-tuning set
    nonmembers: int = 200  # held out, same distribution
    population: int = 200  # disjoint pool for reference / shadow models and calibration
    seed: int = 0


@dataclass
class LoraConfig:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0  # defense: LoRA dropout (PEFT lora_dropout) on the adapter's input
    # module names, or one preset: attention | attention+mlp | all-linear
    target_modules: list = field(default_factory=lambda: ["q_proj", "v_proj"])
    layers: list[int] = field(default_factory=list)  # the layers that get adapters; empty = all
    # defense: no adapters on the first k / last k layers / these layers (negative indices count from the end)
    exclude_first: int = 0
    exclude_last: int = 0
    exclude_layers: list[int] = field(default_factory=list)


@dataclass
class TrainConfig:
    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 8
    weight_decay: float = 0.0
    loss_on: str = "response"  # response | full
    seed: int = 0


@dataclass
class DPConfig:
    """Defense: DP-SGD on the target adapter (Opacus: per-sample clipping, Gaussian noise, Poisson
    sampling, RDP accountant). Attacker-side adapters (reference, shadows) train without it."""
    enabled: bool = False
    noise_multiplier: float = 1.0
    epsilon: float = 0.0  # > 0: target epsilon; the noise multiplier is computed for it (and overrides the above)
    max_grad_norm: float = 1.0  # per-sample clipping bound C
    delta: float = 1e-5


@dataclass
class ScoringConfig:
    batch_size: int = 16
    tokens: str = "response"  # which tokens of a sample the statistics cover: response | full


@dataclass
class EvalConfig:
    utility: bool = True  # measure the task utility of the fine-tuned and pre-trained models on held-out data
    bootstrap: int = 200  # resamples for the confidence intervals (0 = none)
    confidence: float = 0.95
    seed: int = 0


@dataclass
class Config:
    model: ModelConfig = REQUIRED
    task: TaskConfig = REQUIRED
    split: SplitConfig = field(default_factory=SplitConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    dp: DPConfig = field(default_factory=DPConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    attacks: list = field(default_factory=lambda: ["loss", "loss-pt"])
    # per-attack hyperparameters over their defaults, e.g. {mope: {n: 10, sigma: 0.01}}; an entry
    # for NAME applies to NAME-pt too
    attack_params: dict = field(default_factory=dict)
    output_dir: str = "runs/default"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def fingerprint(self, *sections: str) -> str:
        """Hash of the named sections: a cached stage is reused only while its inputs are unchanged."""
        d = self.to_dict()
        blob = json.dumps({s: d[s] for s in sections}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


CHOICES = {
    "model.dtype": ("float32", "bfloat16", "float16"),
    "train.loss_on": ("response", "full"),
    "scoring.tokens": ("response", "full"),
}
POSITIVE = ("task.max_prompt_tokens", "task.max_response_tokens", "split.members", "split.nonmembers",
            "lora.r", "lora.alpha", "train.epochs", "train.lr", "train.batch_size", "scoring.batch_size")


def _build(cls, data: Any, where: str, source: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: '{where}' must be a mapping of keys to values, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        k = unknown[0]
        near = difflib.get_close_matches(str(k), list(fields), n=1)
        hint = f"; did you mean '{near[0]}'?" if near else f"; known keys: {', '.join(fields)}"
        raise ConfigError(f"{source}: unknown key '{_join(where, k)}'{hint}")
    kwargs = {}
    for name, f in fields.items():
        key = _join(where, name)
        if name not in data:
            if f.default is REQUIRED:
                raise ConfigError(f"{source}: missing required key '{key}'")
            continue
        kwargs[name] = _coerce(hints[name], data[name], key, source)
    return cls(**kwargs)


def _coerce(tp, value, key: str, source: str):
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key, source)
    bad = ConfigError(f"{source}: '{key}' must be {getattr(tp, '__name__', tp)}, got {value!r}")
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        value = float(value)
    elif tp is str:
        if not isinstance(value, str):
            raise bad
    elif tp is dict:
        if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
            raise ConfigError(f"{source}: '{key}' must map names to mappings, e.g. {{mope: {{n: 10}}}}, got {value!r}")
    elif typing.get_origin(tp) is list:  # list[int]
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ConfigError(f"{source}: '{key}' must be a list of integers, got {value!r}")
    elif tp is list:
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{source}: '{key}' must be a list of names, got {value!r}")
    return value


def _join(where: str, key) -> str:
    return f"{where}.{key}" if where else str(key)


def _validate(cfg: Config, source: str) -> Config:
    for key, allowed in CHOICES.items():
        value = _get(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{source}: '{key}' is {value!r}; choose one of {', '.join(allowed)}")
    for key in POSITIVE:
        if _get(cfg, key) <= 0:
            raise ConfigError(f"{source}: '{key}' must be > 0, got {_get(cfg, key)}")
    if cfg.split.population < 0:
        raise ConfigError(f"{source}: 'split.population' must be >= 0, got {cfg.split.population}")
    if not 0.0 <= cfg.lora.dropout < 1.0:
        raise ConfigError(f"{source}: 'lora.dropout' must be in [0, 1), got {cfg.lora.dropout}")
    for key in ("lora.exclude_first", "lora.exclude_last", "dp.noise_multiplier", "dp.epsilon"):
        if _get(cfg, key) < 0:
            raise ConfigError(f"{source}: '{key}' must be >= 0, got {_get(cfg, key)}")
    if cfg.dp.max_grad_norm <= 0 or not 0 < cfg.dp.delta < 1:
        raise ConfigError(f"{source}: 'dp.max_grad_norm' must be > 0 and 'dp.delta' in (0, 1), got "
                          f"{cfg.dp.max_grad_norm} and {cfg.dp.delta}")
    if not cfg.attacks:
        raise ConfigError(f"{source}: 'attacks' is empty; name at least one attack (see `loraleak attacks`)")
    return cfg


def _get(cfg: Config, dotted: str):
    obj = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def from_dict(data: dict, source: str = "<config>") -> Config:
    return _validate(_build(Config, data, "", source), source)


def apply_overrides(data: dict, overrides: list[str], source: str = "--set") -> dict:
    """`key.sub=value` pairs (value parsed as YAML) merged into a raw config mapping."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{source}: '{item}' is not KEY=VALUE (e.g. train.epochs=5)")
        dotted, raw = item.split("=", 1)
        node = data
        parts = dotted.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: '{dotted}' goes through '{part}', which is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def default_config_text() -> str:
    return resources.files("loraleak").joinpath("configs/default.yaml").read_text()


@dataclass
class Cell:
    """One point of a grid: its name, the values that set it apart, its full config."""
    name: str
    settings: dict
    config: Config

    def values(self, keys) -> dict:
        """This cell's value of each dotted key (also of keys another cell varies and this one keeps)."""
        return {k: _get(self.config, k) for k in keys}


SCALARS = (int, float, str, bool)


def expand_grid(data: dict, source: str = "<config>") -> list[Cell]:
    """The cells of a raw config: the product of `sweep:` (dotted key -> list of values; a list given
    for a scalar setting, e.g. `train: {epochs: [1, 3, 5]}`, is a sweep of it too) and `variants:`
    (a list of named sets of overrides, e.g. `{name: dropout, lora.dropout: 0.1}`). Without either,
    one cell: the config itself, writing to output_dir. Otherwise cell NAME writes to
    output_dir/cells/NAME."""
    data = copy.deepcopy(data)
    sweep = data.pop("sweep", None) or {}
    variants = data.pop("variants", None) or [{}]
    if not isinstance(sweep, dict) or not all(isinstance(v, list) and v for v in sweep.values()):
        raise ConfigError(f"{source}: 'sweep' must map dotted keys to non-empty lists, e.g. "
                          f"{{train.epochs: [1, 3, 5]}}, got {sweep!r}")
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        raise ConfigError(f"{source}: 'variants' must be a list of mappings, e.g. [{{name: dropout, "
                          f"lora.dropout: 0.1}}], got {variants!r}")
    for section, cls in typing.get_type_hints(Config).items():
        if dataclasses.is_dataclass(cls) and isinstance(data.get(section), dict):
            hints = typing.get_type_hints(cls)
            for key, value in list(data[section].items()):
                if isinstance(value, list) and hints.get(key) in SCALARS:
                    sweep[f"{section}.{key}"] = data[section].pop(key)
    if not sweep and variants == [{}]:
        return [Cell("default", {}, from_dict(data, source))]
    keys, cells = list(sweep), []
    for values in itertools.product(*sweep.values()):
        for variant in variants:
            variant = dict(variant)
            label = str(variant.pop("name", ""))
            settings = {**dict(zip(keys, values)), **variant}
            cell = copy.deepcopy(data)
            for dotted, value in settings.items():
                _set(cell, dotted, value, source)
            name = "_".join([label] * bool(label) + [f"{k.split('.')[-1]}={v}" for k, v in zip(keys, values)])
            name = re.sub(r"[^\w.=+-]+", "-", name) or "default"
            cell["output_dir"] = str(Path(data.get("output_dir", Config.output_dir)) / "cells" / name)
            cells.append(Cell(name, settings, from_dict(cell, f"{source} (cell {name})")))
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: two grid cells are both named '{next(n for n in names if names.count(n) > 1)}'; "
                          "give every variant a distinct name")
    return cells


def _set(data: dict, dotted: str, value, source: str) -> None:
    node, parts = data, dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{source}: '{dotted}' goes through '{part}', which is not a section")
    node[parts[-1]] = value


def load_grid(path: str | Path | None = None, overrides: list[str] = ()) -> list[Cell]:
    """Like `load_config`, but a config with `sweep:` / `variants:` (or a list for a scalar setting)
    gives one cell per grid point."""
    source, data = _read(path)
    return expand_grid(apply_overrides(data, list(overrides)), source)


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Load `path` (or the embedded default when None), apply `--set` overrides, validate."""
    source, data = _read(path)
    return from_dict(apply_overrides(data, list(overrides)), source)


def _read(path: str | Path | None) -> tuple[str, dict]:
    if path is None:
        source, text = "default config", default_config_text()
    else:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"{source}: no such config file")
        text = path.read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping (model:, task:, ...)")
    return source, data
