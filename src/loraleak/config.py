"""Experiment configuration: every field declared once, with its default, a one-line help text and
its constraints; loaded from YAML or a dict, validated with errors a user can act on.

The defaults *are* the embedded default run (`loraleak run` without `--config`, `make demo`), so a
config file names only what it changes, and `loraleak config` (generated from these declarations)
prints exactly what an empty file means.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import itertools
import re
import reprlib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError


class ConfigError(UserError, ValueError):
    """A config problem, phrased as: where it is, what is wrong, what to do."""


MIN_SCORED = 10  # members and non-members each: below it an AUC and its interval measure nothing


def option(default: Any, help: str, keyed_if_set: bool = False, **check: Any) -> Any:
    """A config field: default, one-line help, and checks (choices=(...), gt=, ge=, lt=, nonempty=True).
    keyed_if_set: a field added after caches existed enters the cache keys only when it is not the
    default, so results cached before it came stay valid (`cache.fingerprint`)."""
    meta = {"help": help, "keyed_if_set": keyed_if_set, **check}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    """The pre-trained model that is fine-tuned (and that calibrates the attacks)."""

    name: str = option(
        "smollm2-135m",
        "bundled alias (`loraleak models`), local directory, .gguf file or Hugging Face id (owner/name, needs network)",
    )
    dtype: str = option(
        "bfloat16",
        "weights' dtype for training and scoring; auto: bf16 where the device computes in it natively (CUDA with "
        "bf16, a CPU with AVX512-BF16 or AMX), else fp32",
        choices=("float32", "bfloat16", "float16", "auto"),
    )
    device: str = option("auto", "where the model runs: auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N, mps")
    device_map: str = option(
        "", "accelerate's placement for a model larger than one device (e.g. auto: several GPUs, CPU offload)"
    )
    trust_remote_code: bool = option(False, "run a hub model's own Python code (off unless you trust it)")
    allow_pickle: bool = option(False, "accept pickle (.bin/.pt) checkpoints (off: safetensors or GGUF only)")


@dataclass
class TaskConfig:
    """The fine-tuning data: a registered task or a generic one (jsonl:PATH, csv:PATH, hf:NAME[:CONFIG])."""

    name: str = option(
        "docstring", "registered task (docstring, spam, subject) or jsonl:PATH, csv:PATH, hf:NAME[:CONFIG]"
    )
    max_prompt_tokens: int = option(96, "a longer prompt keeps its head and its last 8 tokens", gt=0)
    max_response_tokens: int = option(32, "a longer response keeps its head", gt=0)
    prompt_field: str = option("prompt", "generic tasks: the field holding the prompt")
    response_field: str = option("response", "generic tasks: the field holding the response")
    text_field: str = option(
        "text", "generic tasks: used when a row has no prompt/response: the whole text is the response"
    )
    id_field: str = option("id", "generic tasks: the example id (rows without it get FILE:ROW)")
    hf_split: str = option("train", "hf: tasks: the dataset split to read")

    def options(self) -> dict[str, str]:
        """What a task loader takes."""
        return {k: getattr(self, k) for k in ("prompt_field", "response_field", "text_field", "id_field", "hf_split")}


@dataclass
class SplitConfig:
    """The seeded, disjoint member / non-member / population split of the deduplicated examples."""

    members: int = option(
        200, "examples the adapter is fine-tuned on (at least 10: fewer measure nothing)", ge=MIN_SCORED
    )
    nonmembers: int = option(
        200, "held-out examples of the same distribution (scored, and utility; at least 10)", ge=MIN_SCORED
    )
    population: int = option(200, "disjoint pool for reference / shadow adapters and calibration", ge=0)
    seed: int = option(0, "seed of the split")


@dataclass
class LoraConfig:
    """The LoRA adapter (PEFT), and the two defenses that shape it."""

    r: int = option(8, "rank of the low-rank update B A", gt=0)
    alpha: int = option(16, "scaling numerator (scale = alpha / r)", gt=0)
    dropout: float = option(0.0, "defense: LoRA dropout on the adapter's input while training", ge=0, lt=1)
    target_modules: list[str] = option(
        ["q_proj", "v_proj"], "module names, or one preset: attention | attention+mlp | all-linear", nonempty=True
    )
    layers: list[int] = option([], "the layers that get adapters; empty = all")
    exclude_first: int = option(0, "defense: no adapters on the first k layers", ge=0)
    exclude_last: int = option(0, "defense: no adapters on the last k layers", ge=0)
    exclude_layers: list[int] = option([], "defense: no adapters on these layers (negative counts from the end)")
    exclude_part: str = option(
        "", "defense: no adapters on a part of the layers, whatever the model's depth (rounded to whole layers)",
        choices=("", *(f"{w}-{p}" for p in ("third", "half") for w in ("first", "middle", "last"))), keyed_if_set=True,
    )  # fmt: skip


@dataclass
class TrainConfig:
    """The fine-tuning loop (AdamW, linear decay to zero); attacker-side adapters use it too."""

    epochs: int = option(5, "passes over the members", gt=0)
    lr: float = option(1e-3, "peak learning rate", gt=0)
    batch_size: int = option(8, "examples per step", gt=0)
    max_batch_tokens: int = option(
        0, "padded tokens per forward pass: a step over more is split into passes whose gradients add up "
        "to the same update (accumulation); 0 = one pass per step", keyed_if_set=True, ge=0
    )  # fmt: skip
    weight_decay: float = option(0.0, "defense: AdamW's decoupled weight decay on the adapter", ge=0)
    loss_on: str = option("response", "tokens the loss covers", choices=("response", "full"))
    seed: int = option(0, "seed of the adapter's initialisation, data order and dropout")


@dataclass
class DPConfig:
    """Defense: DP-SGD on the target adapter (Opacus: per-sample clipping, Gaussian noise, Poisson
    sampling, RDP accountant). Attacker-side adapters (reference, shadows) train without it."""

    enabled: bool = option(False, "train the target adapter with DP-SGD")
    noise_multiplier: float = option(1.0, "noise std / clipping bound (ignored when epsilon > 0)", ge=0)
    epsilon: float = option(0.0, "> 0: the target epsilon; the noise multiplier is computed for it", ge=0)
    max_grad_norm: float = option(1.0, "per-sample clipping bound C", gt=0)
    delta: float = option(1e-5, "delta of (epsilon, delta)-DP", gt=0, lt=1)


@dataclass
class ScoringConfig:
    """The forward passes that all logit attacks read."""

    batch_size: int = option(16, "samples per forward pass", gt=0)
    max_batch_tokens: int = option(
        0, "padded tokens per forward pass, as well (large on a GPU, small on a CPU); 0 = batch_size alone",
        keyed_if_set=True, ge=0,
    )  # fmt: skip
    tokens: str = option(
        "response",
        "which tokens of a sample the statistics cover (full: all after the first)",
        choices=("response", "full"),
    )


@dataclass
class EvalConfig:
    """Metrics and utility."""

    utility: bool = option(True, "measure the task utility of the fine-tuned and pre-trained models on the non-members")
    bootstrap: int = option(200, "bootstrap resamples for the confidence intervals (0 = none)", ge=0)
    confidence: float = option(0.95, "confidence level of the intervals", gt=0, lt=1)
    seed: int = option(0, "seed of the bootstrap")


@dataclass
class AuditConfig:
    """`loraleak audit`: an adapter someone already trained (or the model it was merged into), with the
    records it was trained on and records it never saw (jsonl or csv, with the task section's field
    names). Unused by `run`, but for `redact`."""

    adapter: str = option("", "PEFT adapter directory (adapter_config.json + adapter_model.safetensors) or hub id")
    finetuned: str = option(
        "", "instead of an adapter: the fine-tuned model with the adapter merged in (as model.name); a second "
        "resident model beside the pre-trained one, so twice the weights' memory"
    )  # fmt: skip
    members: str = option("", "file of records the adapter was fine-tuned on (all of them or a sample)")
    nonmembers: str = option("", "file of records from the same distribution that it never saw")
    population: str = option("", "further unseen records, for attacks that train a reference or shadows")
    redact: bool = option(False, "leave record texts out of records.csv and report.html (runs and audits alike)")


@dataclass
class ExecutionConfig:
    """How a grid's cells run: one after another on one resident model (local), or each as a Ray task
    holding its resources, on this machine or a cluster (ray; docs/devices.md)."""

    backend: str = option("local", "local | ray", choices=("local", "ray"))
    address: str = option("", "a Ray cluster to join (HOST:6379 or ray://HOST:10001); empty: start Ray here")
    gpus_per_cell: float = option(1.0, "GPUs a cell's task holds, where the cluster has GPUs (else none)", ge=0)
    cpus_per_cell: float = option(1.0, "CPUs a cell's task holds; its torch uses as many threads", gt=0)


def section(cls: type) -> Any:
    return field(default_factory=cls, metadata={"help": " ".join((cls.__doc__ or "").split())})


@dataclass
class Config:
    """One experiment. The defaults are the embedded default run."""

    model: ModelConfig = section(ModelConfig)
    task: TaskConfig = section(TaskConfig)
    split: SplitConfig = section(SplitConfig)
    lora: LoraConfig = section(LoraConfig)
    train: TrainConfig = section(TrainConfig)
    dp: DPConfig = section(DPConfig)
    scoring: ScoringConfig = section(ScoringConfig)
    eval: EvalConfig = section(EvalConfig)
    audit: AuditConfig = section(AuditConfig)
    execution: ExecutionConfig = section(ExecutionConfig)
    attacks: list[str] = option(["one-pass"], "attack names and presets (`loraleak attacks`)", nonempty=True)
    attack_params: dict[str, dict[str, Any]] = option(
        {}, "per-attack hyperparameters over their defaults, e.g. {mope: {n: 10}}; NAME also sets NAME-pt"
    )
    output_dir: str = option("runs/default", "where the run writes (and finds what it can reuse)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


ConfigLike = Config | dict | str | Path | None


# --- building and checking ------------------------------------------------------------------------


def from_dict(data: Any, source: str = "<config>") -> Config:
    """A validated Config from a raw mapping (what a YAML file holds); missing fields take defaults."""
    cfg = _build(Config, data, "", source)
    _check(cfg, "", source)
    return cfg


def _build(cls: Any, data: Any, where: str, source: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: '{where or 'the top level'}' must be a mapping of keys to values, got {_shown(data)}"
        )
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            near = difflib.get_close_matches(_join("", key), names, n=1)
            hint = f"; did you mean '{near[0]}'?" if near else f"; known keys: {', '.join(names)}"
            raise ConfigError(f"{source}: unknown key '{_join(where, key)}'{hint}")
    return cls(**{k: _coerce(hints[k], v, _join(where, k), source) for k, v in data.items()})


def _coerce(tp: Any, value: Any, key: str, source: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key, source)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list:
        value = [value] if isinstance(value, str) and args[0] is str else value  # `attacks: loss` is [loss]
        if not isinstance(value, list) or not all(_is(args[0], v) for v in value):
            raise ConfigError(f"{source}: '{key}' must be a list of {_NAMES[args[0]]}, got {_shown(value)}")
        return value
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
            raise ConfigError(
                f"{source}: '{key}' must map names to mappings, e.g. {{mope: {{n: 10}}}}, got {_shown(value)}"
            )
        return value
    if not _is(tp, value):
        raise ConfigError(f"{source}: '{key}' must be {tp.__name__}, got {_shown(value)}")
    if tp is not float:
        return value
    try:
        return float(value)
    except OverflowError:  # an int beyond a float's range
        raise ConfigError(
            f"{source}: '{key}' is {_shown(value)}, too large for a float; give a smaller number"
        ) from None


_NAMES = {str: "names", int: "integers"}


def _is(tp: type, value: Any) -> bool:
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, tp) and (tp is bool or not isinstance(value, bool))


def _check(obj: Any, where: str, source: str) -> None:
    """Each field's declared checks (choices, range, non-empty), section by section."""
    for f in dataclasses.fields(obj):
        key, value, meta = _join(where, f.name), getattr(obj, f.name), f.metadata
        if dataclasses.is_dataclass(value):
            _check(value, key, source)
            continue
        bad = None
        if "choices" in meta and value not in meta["choices"]:
            bad = f"is {_shown(value)}; choose one of {', '.join(meta['choices'])}"
        elif meta.get("nonempty") and not value:
            bad = "is empty; give at least one" + (" (see `loraleak attacks`)" if f.name == "attacks" else "")
        elif any(op in meta for op in ("gt", "ge", "lt")) and not _in_range(value, meta):
            bad = f"must be {_range_text(meta)}, got {_shown(value)}"
        if bad:
            raise ConfigError(f"{source}: '{key}' {bad}")


def _in_range(value: float, meta: typing.Mapping[str, Any]) -> bool:
    return (
        ("gt" not in meta or value > meta["gt"])
        and ("ge" not in meta or value >= meta["ge"])
        and ("lt" not in meta or value < meta["lt"])
    )


def _range_text(meta: typing.Mapping[str, Any]) -> str:
    if "lt" in meta:
        low = f"({meta['gt']}" if "gt" in meta else f"[{meta['ge']}"
        return f"in {low}, {meta['lt']})"
    return f"> {meta['gt']}" if "gt" in meta else f">= {meta['ge']}"


def _join(where: str, key: Any) -> str:
    # a key in a message stays one line: a line break escaped, an int over 4300 digits (no str) not spelled out
    if not isinstance(key, str):
        key = _shown(key)
    elif not key.isprintable():
        key = repr(key)[1:-1]
    return f"{where}.{key}" if where else key


# bounded: a value in a message is a hint, not a dump (a YAML alias can expand to millions of items)
_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlevel = 80, 80, 3


def _shown(value: Any) -> str:
    """`value` for a one-line message, at most about 200 characters."""
    try:
        text = _REPR.repr(value)
    except ValueError:  # an int over Python's 4300-digit limit for str
        return "a number too long to show"
    return text if len(text) <= 200 else text[:200] + "..."


def get(cfg: Config, dotted: str) -> Any:
    """The value of a dotted key, e.g. get(cfg, "train.epochs")."""
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


# --- sources: files, dicts, overrides ---------------------------------------------------------------


def load_config(config: ConfigLike = None, *, overrides: typing.Sequence[str] = (), **sections: Any) -> Config:
    """A validated Config from a YAML path, a raw mapping, a Config, or None (the defaults), with
    `--set`-style `overrides` ("train.epochs=3") and keyword `sections` (train={"epochs": 3})
    merged over it. A config that describes a grid is refused: use `load_grid`."""
    source, data = read(config)
    data = merge(apply_overrides(data, list(overrides)), sections)
    cells = expand_grid(data, source)
    if len(cells) > 1:
        raise ConfigError(
            f"{source} describes a grid of {len(cells)} cells; run it with `loraleak run` or loraleak.run_grid"
        )
    return cells[0].config


def load_grid(config: ConfigLike = None, *, overrides: typing.Sequence[str] = (), **sections: Any) -> list[Cell]:
    """Like `load_config`, but a config with `sweep:` / `variants:` (or a list for a scalar setting)
    gives one cell per grid point."""
    source, data = read(config)
    return expand_grid(merge(apply_overrides(data, list(overrides)), sections), source)


def read(config: ConfigLike) -> tuple[str, dict[str, Any]]:
    """(where it came from, the raw mapping) of a path, mapping, Config or None (= {}: the defaults)."""
    if config is None:
        return "default config", {}
    if isinstance(config, Config):
        return "<Config>", config.to_dict()
    if isinstance(config, dict):
        return "<dict>", copy.deepcopy(config)
    path = Path(config)
    try:
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it ({e.strerror or e}); check its permissions") from None
    try:
        text = raw.decode()
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"{path}: line {line} has a byte that is not UTF-8; re-save the file as UTF-8") from None
    data = _parse_yaml(text, f"{path}: not valid YAML") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping (model:, task:, ...)")
    return str(path), data


def merge(data: dict[str, Any], update: typing.Mapping[str, Any]) -> dict[str, Any]:
    """`update` merged into `data`: mappings key by key, everything else replaced."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            merge(data[key], value)
        else:
            data[key] = copy.deepcopy(value)
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str], source: str = "--set") -> dict[str, Any]:
    """`key.sub=value` pairs (value parsed as YAML) merged into a raw config mapping."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{source}: '{_join('', item)}' is not KEY=VALUE (e.g. train.epochs=5)")
        dotted, raw = item.split("=", 1)
        value = _parse_yaml(raw, f"{source}: the value of '{_join('', dotted)}' is not valid YAML", "; quote a string")
        _set(data, dotted.strip(), value, source)
    return data


def _parse_yaml(text: str, problem: str, fix: str = "") -> Any:
    """yaml.safe_load(text); a failure is a ConfigError `problem` + why, in one line (PyYAML's own text
    spans lines) + `fix`."""
    try:
        return yaml.safe_load(text)
    except yaml.reader.ReaderError as e:  # a control character; PyYAML says where as an offset
        why = f"line {text.count(chr(10), 0, e.position) + 1} has character #x{e.character:04x}: {e.reason}"
    except yaml.YAMLError as e:
        mark, what = getattr(e, "problem_mark", None), getattr(e, "problem", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark and what else ""
        why = " ".join(str(what or e).split()) + where
    except (RecursionError, ValueError) as e:  # nested too deep for the parser; a bad date, an int of 4300+ digits
        why = "nested too deeply" if isinstance(e, RecursionError) else " ".join(str(e).split(";")[0].split())
    raise ConfigError(f"{problem} ({why}){fix}")


def _set(data: dict[str, Any], dotted: str, value: Any, source: str) -> None:
    if not isinstance(dotted, str):  # a sweep or variant key YAML read as a number, null, ...
        raise ConfigError(f"{source}: grid key {_shown(dotted)} is not a dotted key like train.epochs")
    node, parts = data, dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(
                f"{source}: '{_join('', dotted)}' goes through '{_join('', part)}', which is not a section"
            )
    node[parts[-1]] = value


# --- grids --------------------------------------------------------------------------------------------


@dataclass
class Cell:
    """One point of a grid: its name, the values that set it apart, its full config."""

    name: str
    settings: dict[str, Any]
    config: Config
    seed: int | None = None  # with `seeds:`, the seed this run of its group has (split and training)
    group: str = ""  # the cell's name without its seed: the runs that `seeds:` repeats share it

    def values(self, keys: typing.Iterable[str]) -> dict[str, Any]:
        """This cell's value of each dotted key (also of keys another cell varies and this one keeps)."""
        return {k: get(self.config, k) for k in keys}


SCALARS = (int, float, str, bool)


def expand_grid(data: dict[str, Any], source: str = "<config>") -> list[Cell]:
    """The cells of a raw config: the product of `sweep:` (dotted key -> list of values; a list given
    for a scalar setting, e.g. `train: {epochs: [1, 3, 5]}`, is a sweep of it too) and `variants:`
    (a list of named sets of overrides, e.g. `{name: dropout, lora.dropout: 0.1}`). Without either,
    one cell: the config itself, writing to output_dir. Otherwise cell NAME writes to
    output_dir/cells/NAME. `seeds:` / `repeat:` repeat every cell once per seed, as NAME_seed=S (a
    variant's own `seeds:` replaces the config's for its cells)."""
    data = copy.deepcopy(data)
    seeds = _seeds(data, source)
    sweep, variants = _grid_axes(data, source)
    if not sweep and variants == [{}] and seeds == [None]:
        return [Cell("default", {}, from_dict(data, source))]
    keys, cells = list(sweep), []
    out = _coerce(str, data.get("output_dir", Config().output_dir), "output_dir", source)  # Path() takes no number
    for values in itertools.product(*sweep.values()):
        for variant in variants:
            variant = dict(variant)
            label = str(variant.pop("name", ""))
            own = _seeds(variant, f"{source} (variant {label or '#'})", seeds)  # a variant may run other seeds
            settings = {**dict(zip(keys, values, strict=True)), **variant}
            group = "_".join(
                [label] * bool(label) + [f"{_short(str(k))}={v}" for k, v in zip(keys, values, strict=True)]
            )
            group = re.sub(r"[^\w.=+-]+", "-", group) or "default"
            if own != [None] and SEEDED & set(settings):
                raise ConfigError(
                    f"{source}: cell {group} sets {sorted(SEEDED & set(settings))[0]} and the config has "
                    "`seeds:`, which sets split.seed and train.seed; drop one of the two"
                )
            for seed in own:
                cell = copy.deepcopy(data)
                for dotted, value in {**settings, **dict.fromkeys(SEEDED if seed is not None else (), seed)}.items():
                    _set(cell, dotted, value, source)
                name = group if seed is None else f"{group}_seed={seed}"
                cell["output_dir"] = str(Path(out) / "cells" / name)
                cells.append(Cell(name, settings, from_dict(cell, f"{source} (cell {name})"), seed, group))
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise ConfigError(
            f"{source}: two grid cells are both named '{next(n for n in names if names.count(n) > 1)}'; "
            "give every variant a distinct name"
        )
    return cells


def _short(dotted: str) -> str:
    """A swept key in a cell's name: its field (epochs for train.epochs), its section for a name (model)."""
    section, _, key = dotted.rpartition(".")
    return section.split(".")[-1] if key == "name" and section else key


SEEDED = {"split.seed", "train.seed"}  # what one seed of `seeds:` sets: which records are members, and the training


def _seeds(data: dict[str, Any], source: str, default: list[int | None] | None = None) -> list[int | None]:
    """Pop `seeds: [0, 1, 2]` or `repeat: N` (= seeds 0 .. N-1) off `data` (the config, or one variant);
    without either, `default` ([None]: no seeds)."""
    seeds, repeat = data.pop("seeds", None), data.pop("repeat", None)
    if seeds is not None and repeat is not None:
        raise ConfigError(f"{source}: give `seeds:` or `repeat:`, not both")
    if repeat is not None:
        if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
            raise ConfigError(f"{source}: 'repeat' must be a whole number of runs per cell >= 1, got {_shown(repeat)}")
        return list(range(repeat))
    if seeds is None:
        return default or [None]
    ok = isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    if not ok or len(set(seeds)) != len(seeds):
        raise ConfigError(
            f"{source}: 'seeds' must be a list of distinct whole numbers, e.g. [0, 1, 2], got {_shown(seeds)}"
        )
    return list(seeds)


def _grid_axes(data: dict[str, Any], source: str) -> tuple[dict[str, list[Any]], list[dict[str, Any]]]:
    """Pop `sweep:` (with lists given for scalar settings folded in) and `variants:` off `data`."""
    sweep = data.pop("sweep", None) or {}
    variants = data.pop("variants", None) or [{}]
    if not isinstance(sweep, dict) or not all(isinstance(v, list) and v for v in sweep.values()):
        raise ConfigError(
            f"{source}: 'sweep' must map dotted keys to non-empty lists, e.g. "
            f"{{train.epochs: [1, 3, 5]}}, got {_shown(sweep)}"
        )
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        raise ConfigError(
            f"{source}: 'variants' must be a list of mappings, e.g. [{{name: dropout, "
            f"lora.dropout: 0.1}}], got {_shown(variants)}"
        )
    for name, cls in typing.get_type_hints(Config).items():
        if dataclasses.is_dataclass(cls) and isinstance(data.get(name), dict):
            hints = typing.get_type_hints(cls)
            for key, value in list(data[name].items()):
                if isinstance(value, list) and hints.get(key) in SCALARS:
                    if not value:  # a sweep of no values would be a grid of no cells
                        raise ConfigError(
                            f"{source}: '{name}.{key}' is an empty list; give a value, or values to sweep"
                        )
                    sweep[f"{name}.{key}"] = data[name].pop(key)
    return sweep, variants


# --- generated documentation: `loraleak config` and docs/configuration.md ----------------------------


def render_yaml() -> str:
    """Every field with its default, its help as a comment: what `loraleak config` prints. Loading
    it gives exactly `Config()`."""
    lines = [
        "# loraleak's configuration: every field, set to its default (= the embedded default run).",
        "# A config file names only what it changes; `loraleak run --config FILE`.",
    ]
    for f in dataclasses.fields(Config):
        value = getattr(Config(), f.name)
        lines += ["", f"# {_help(f)}"]
        if dataclasses.is_dataclass(value):
            lines.append(f"{f.name}:")
            for sub in dataclasses.fields(value):
                lines += [f"  # {_help(sub)}", f"  {sub.name}: {_yaml(getattr(value, sub.name))}"]
        else:
            lines.append(f"{f.name}: {_yaml(value)}")
    return "\n".join(lines) + "\n"


def render_markdown() -> str:
    """docs/configuration.md: one table per section."""
    out = [
        "# Configuration",
        "",
        "Generated from `src/loraleak/config.py` (`python -m loraleak.docs`); do not edit.",
        "Every field, its default (the embedded default run, `make demo`) and what it does. A config file",
        "names only what it changes. `loraleak config` prints the same as YAML.",
        "",
    ]
    top = []
    for f in dataclasses.fields(Config):
        value = getattr(Config(), f.name)
        if not dataclasses.is_dataclass(value):
            top.append(f"| `{f.name}` | `{_yaml(value)}` | {_help(f)} |")
            continue
        out += [f"## `{f.name}`", "", _help(f), "", "| field | default | meaning |", "|---|---|---|"]
        out += [
            f"| `{f.name}.{s.name}` | `{_yaml(getattr(value, s.name))}` | {_help(s)} |"
            for s in dataclasses.fields(value)
        ] + [""]
    out += [
        "## Attacks and output",
        "",
        "| field | default | meaning |",
        "|---|---|---|",
        *top,
        "",
        "## Grids",
        "",
        "`sweep: {DOTTED.KEY: [values]}` (a list given for a scalar field is a sweep of it too) and",
        "`variants: [{name: NAME, DOTTED.KEY: value, ...}]` expand into one run per cell, in",
        "`output_dir/cells/NAME/`, with `grid.csv`, `grid.md` and `privacy_utility.png` in `output_dir`.",
        "`seeds: [0, 1, 2]` (or `repeat: 3`) runs every cell once per seed (`NAME_seed=S`: split.seed and",
        "train.seed set to S; a variant's own `seeds:` replaces the config's); `grid_seeds.csv`, `grid.md` and",
        "the figure then give each cell's mean, standard deviation and 95% t-interval over its seeds.",
        "",
    ]
    return "\n".join(out)


def _help(f: dataclasses.Field[Any]) -> str:
    meta = f.metadata
    choices = f" ({' | '.join(meta['choices'])})" if "choices" in meta else ""
    return meta["help"] + choices


def _yaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1000).removesuffix("\n...\n").strip()
