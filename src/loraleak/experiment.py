"""One experiment as a list of stages: data -> fine-tune -> evidence -> attacks -> metrics -> utility -> report.

Each stage is a function with typed inputs and outputs. Whatever a stage computes is cached in the
run's output directory under a key of exactly what it depends on (`cache`), so a re-run with the
same inputs, or an extended one (more attacks, another bootstrap), recomputes only what changed.
A grid runs the same stages per cell on one resident base model.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import __version__, cache, finetune, report, utility
from .adapter import AdapterError, check_fit, find_adapter
from .attacks import Attack, ExtraAdapter, check_params, check_population, params_for, resolve
from .blind import blind_baseline
from .cache import RunFiles, read_cached
from .config import MIN_SCORED, Cell, Config, ConfigLike, ModelConfig, load_config
from .data import (
    SPLITS,
    Encoded,
    Example,
    Split,
    Task,
    TaskError,
    dedup,
    encode_examples,
    get_task,
    load_task,
    make_split,
    shift_check,
    write_manifest,
)
from .metrics import evaluate
from .models import check_model, load_model, resolve_device, resolve_dtype, weights_digest
from .results import RunResult, SplitSummary, TaskSummary, TrainingSummary
from .scoring import Evidence, EvidenceError

Echo = Callable[[str], Any]


def run(
    config: ConfigLike = None,
    *,
    progress: bool = True,
    echo: Echo = print,
    base: tuple[Any, Any] | Callable[[], tuple[Any, Any]] | None = None,
    shared: Path | None = None,
    **sections: Any,
) -> RunResult:
    """One experiment from a Config, a raw mapping, a YAML path or None (the embedded default), with
    `sections` merged over it (e.g. train={"epochs": 1}, attacks=["loss"]). `base`: an already
    loaded (model, tokenizer) to fine-tune, or a function that gives it when the run needs it (not
    when the directory is finished), left as it came (adapters removed) when the run ends: a grid
    reuses one resident base model for every cell. `shared`: a folder where the pre-trained model's
    passes and generations are kept for other runs too (a grid's cells share `RunFiles.grid_shared`).

    Everything a user gave is checked before any model loads: config, attack names and parameters,
    the output directory (writable, and held by this run alone: a lock), the data and split sizes (a
    population large enough for every attack), the further adapters the attacks would train (an odd
    shadow count stops here), then the model's path and weights format
    (`load_model`). A directory already finished under this config, data and numerics is read back
    (`finished`): no model loads."""
    cfg, attacks, files, clock = _begin(config, sections, shared)
    with _held(files, echo):
        with clock("data"):
            task_split = _split(cfg)
        check_population(attacks, cfg.attack_params, len(task_split[1].population), "split.population")
        adapter_specs(attacks, cfg.attack_params)  # names every further adapter: an odd shadow count stops here
        keys = cache.Keys(cfg, _digest(task_split[1]), numerics(cfg.model))
        done = finished(files, keys)
        if done is not None:  # this very config, data and numerics, already reported: nothing to redo
            echo(f"[loraleak] {files.root} is finished under this config: nothing recomputed")
            return done
        files.clear_report_unless(keys.report())  # before anything in the directory changes
        with clock("load_model"):  # load_model checks the model's path and weights format before it loads
            model, tok = (base() if callable(base) else base) if base is not None else load_base(cfg, echo)
        data = prepare_data(cfg, task_split, tok, files)
        with clock("finetune"):
            target = fine_tune(cfg, keys, model, data, files, echo, progress)
        result = _stages(cfg, keys, attacks, files, clock, data, target, echo, progress)
        _report(cfg, files, keys, result, data)
    if base is not None:
        target.model.unload()  # every adapter out: the base model is as it came, for the next cell
    return result


def finished(files: RunFiles, keys: cache.Keys) -> RunResult | None:
    """The result `files` holds for exactly `keys` (config, data, numerics), read back; None when it
    holds none, another key's, or one written by another loraleak version."""
    if files.finished_under(files.root) != keys.report() or not all(p.is_file() for p in files.report):
        return None
    try:
        data = read_cached(files.results, _read_json)
        result = RunResult.from_dict(data, read_cached(files.scores, pd.read_csv))
    except (TypeError, KeyError, cache.CorruptCache):
        return None
    return result if result.loraleak_version == __version__ else None


def finished_cell(cfg: Config) -> RunResult | None:
    """A grid cell's result when its directory is finished under its config (no model is loaded)."""
    return finished(RunFiles(cfg.output_dir), cache.Keys(cfg, _digest(_split(cfg)[1]), numerics(cfg.model)))


def _begin(
    config: ConfigLike, sections: dict[str, Any], shared: Path | None = None
) -> tuple[Config, list[Attack], RunFiles, Clock]:
    """What `run` and `audit` check first (config, attack names and parameters) and where they write."""
    cfg = load_config(config, **sections)
    attacks = resolve(cfg.attacks)
    check_params(cfg.attack_params)
    return cfg, attacks, RunFiles(cfg.output_dir, shared), Clock()


def _report(cfg: Config, files: RunFiles, keys: cache.Keys, result: RunResult, data: RunData) -> None:
    """Write the report (record texts in it unless `audit.redact`), then mark the run finished."""
    texts = None if cfg.audit.redact else {ex.id: ex.text for ex in data.split.targets}
    report.write(files, result, texts)
    files.finish(files.root, keys.report())


@contextmanager
def _held(files: RunFiles, echo: Echo) -> Iterator[None]:
    """The output directory held by this run alone (a lock), a full or forbidden disk one clear line."""
    with files.locked() as killed, cache.disk_errors(files.root):
        if killed:
            echo(f"[loraleak] {files.root} was left by a killed run ({killed}): resuming from what it finished")
        yield


def _stages(
    cfg: Config,
    keys: cache.Keys,
    attacks: list[Attack],
    files: RunFiles,
    clock: Clock,
    data: RunData,
    target: Target,
    echo: Echo,
    progress: bool,
) -> RunResult:
    """Gather evidence, attack, evaluate and measure utility: the work on a target adapter, whether
    this run fine-tuned it or an audit was given it."""
    evidence = attack_evidence(cfg, keys, target, data, files, progress)
    with clock("attacks"):
        if cfg.execution.backend == "ray":
            adapters_over_ray(cfg, keys, attacks, data, files, echo)
        scores, attack_time = run_attacks(
            attacks,
            evidence,
            cfg.attack_params,
            extra=partial(extra_adapter, cfg, keys, target, data, evidence, files, echo, progress),
        )
    with clock("metrics"):
        metrics = evaluate_all(data.split.labels, scores, cfg)
    task_utility = None
    if cfg.eval.utility:
        with clock("utility"):
            task_utility = measure_utility(cfg, keys, target, data, files, progress)
    with clock("blind_baseline"):  # a model-free classifier on the texts: does the split itself leak membership?
        e = cfg.eval
        blind = blind_baseline(data.split.members, data.split.nonmembers, seed=e.seed, bootstrap=e.bootstrap,
                               confidence=e.confidence)  # fmt: skip
    result = collect(cfg, data, target, evidence, attacks, scores, metrics, attack_time, task_utility, clock.times)
    result.blind_baseline = blind
    return result


def load_base(cfg: Config, echo: Echo = print, name: str = "") -> tuple[Any, Any]:
    """The pre-trained (model, tokenizer) a config names; or the model `name`, loaded as the config's
    model section says (dtype, device, trust and pickle settings)."""
    m = cfg.model
    return load_model(
        name or m.name,
        m.dtype,
        device=m.device,
        device_map=m.device_map,
        trust_remote_code=m.trust_remote_code,
        allow_pickle=m.allow_pickle,
        echo=echo,
    )


def evaluate_all(labels: np.ndarray, scores: dict[str, np.ndarray], cfg: Config) -> dict[str, dict[str, Any]]:
    """Each attack's metrics with bootstrap CIs, as the config's eval section says."""
    e = cfg.eval
    return {name: evaluate(labels, s, e.bootstrap, e.confidence, e.seed) for name, s in scores.items()}


class Clock:
    """Wall time per stage, for results.json."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.times[name] = round(time.perf_counter() - t0, 3)


# --- data ---------------------------------------------------------------------------------------------


@dataclass
class RunData:
    """The task's examples, split, and the members encoded for training."""

    task: Task
    split: Split
    pool: int  # examples after dedup
    duplicates: int
    skipped: dict[str, int]
    encode: Callable[[list[Example]], Encoded]  # the one tokenization of training and scoring
    members: Encoded
    tokenizer: Any


def prepare_data(cfg: Config, task_split: TaskSplit, tok: Any, files: RunFiles) -> RunData:
    """The split task (`_split`) with its manifest written and its members encoded by `tok`."""
    task, split, pool, duplicates, skipped = task_split
    write_manifest(split, files.manifest)
    encode = partial(_encode, tok=tok, caps=(cfg.task.max_prompt_tokens, cfg.task.max_response_tokens))
    return RunData(task, split, pool, duplicates, skipped, encode, encode(split.members), tok)


def load_split(config: ConfigLike = None, **sections: Any) -> Split:
    """The seeded member / non-member / population split a config fine-tunes and attacks on (the
    examples its manifest.jsonl lists), without loading a model."""
    return _split(load_config(config, **sections))[1]


TaskSplit = tuple[Task, Split, int, int, dict[str, int]]  # task, split, pool after dedup, duplicates, skipped


def _split(cfg: Config) -> TaskSplit:
    """Load, dedup and split the task's examples (seeded): no model needed, so bad data fails first."""
    task = get_task(cfg.task.name)
    loaded = load_task(cfg.task.name, **cfg.task.options())
    # a classification task repeats its few responses by design: only repeated texts are duplicates
    examples, duplicates = dedup(loaded.examples, by_response=task.kind != "classification")
    split = make_split(
        examples, cfg.split.members, cfg.split.nonmembers, cfg.split.population, cfg.split.seed, cfg.task.name
    )
    return task, split, len(examples), duplicates, dict(loaded.skipped)


def _digest(split: Split) -> str:
    """What the split's examples are, by id and text hash: an edited data file changes every key."""
    return cache.fingerprint(
        [[[ex.id, ex.sha256] for ex in part] for part in (split.members, split.nonmembers, split.population)]
    )


def _encode(examples: list[Example], tok: Any, caps: tuple[int, int]) -> Encoded:
    return encode_examples(examples, tok, *caps)


# --- fine-tuning ----------------------------------------------------------------------------------------


@dataclass
class Target:
    """The fine-tuned model: a PeftModel whose adapter "default" is the target (disabled: pre-trained)."""

    model: Any
    log: list[dict[str, Any]]
    privacy: dict[str, Any] | None
    pretrained: Any = None  # a pre-trained model of its own, when `model` is merged weights (audit --finetuned)


def fine_tune(
    cfg: Config, keys: cache.Keys, model: Any, data: RunData, files: RunFiles, echo: Echo, progress: bool
) -> Target:
    """The target adapter, reused from adapter/ when it was finished under the same key."""
    where, key = files.adapter(), keys.target()
    if files.finished_under(where) == key:
        echo(f"[loraleak] reusing the adapter in {where}")
        log = read_cached(where / "train_log.jsonl", _read_jsonl)
        privacy = read_cached(where / "privacy.json", _read_json) if cfg.dp.enabled else None
        return Target(read_cached(where, partial(finetune.load_adapter, model)), log, privacy)
    peft_model = finetune.attach_lora(model, cfg.lora, cfg.train.seed)
    privacy = None
    if cfg.dp.enabled:
        log, privacy = finetune.train_lora_dp(
            peft_model, data.members, cfg.train, cfg.dp, data.tokenizer.pad_token_id, progress
        )
    else:
        log = finetune.train_lora(peft_model, data.members, cfg.train, data.tokenizer.pad_token_id, progress)
    with _saving(where):
        finetune.save_adapter(peft_model, where, log)
        if privacy:
            (where / "privacy.json").write_text(json.dumps(privacy, indent=2) + "\n")
        write_manifest(data.split, where / "manifest.jsonl")
    files.finish(where, key)
    return Target(peft_model, log, privacy)


def extra_adapter(
    cfg: Config,
    keys: cache.Keys,
    target: Target,
    data: RunData,
    evidence: Evidence,
    files: RunFiles,
    echo: Echo,
    progress: bool,
    spec: ExtraAdapter,
) -> str:
    """Adapter `spec.name` on the resident model, loaded from adapters/NAME when it was finished under
    the same key, else trained with the target's recipe (without DP) and saved; returns its key."""
    where, key = files.adapter(spec.name), keys.extra_adapter(spec)
    if files.finished_under(where) == key:
        echo(f"[loraleak] reusing the {spec.name} adapter in {where}")
        read_cached(where, partial(finetune.load_extra_adapter, target.model, name=spec.name))
        return key
    examples = spec.examples(data.split, evidence)
    train = dataclasses.replace(cfg.train, seed=cfg.train.seed + spec.seed_offset)
    finetune.add_lora(target.model, spec.name, cfg.lora, train.seed)
    with finetune.active_adapter(target.model, spec.name):
        log = finetune.train_lora(
            target.model,
            data.encode(examples),
            train,
            data.tokenizer.pad_token_id,
            progress,
            desc=f"fine-tune {spec.name}",
        )
    with _saving(where):
        finetune.save_adapter(target.model, where, log, spec.name)
    files.finish(where, key)
    return key


def adapters_over_ray(
    cfg: Config, keys: cache.Keys, attacks: list[Attack], data: RunData, files: RunFiles, echo: Echo
) -> None:
    """The attacks' further adapters that are not finished and whose data is not the target's (the
    shadows), trained at once as Ray tasks and written to adapters/NAME as `extra_adapter` would:
    k shadows on k GPUs take about the time of one. The attacks then load them."""
    from .execution import adapter_files

    todo = {
        spec.name: spec
        for spec in adapter_specs(attacks, cfg.attack_params)
        if not spec.reads_target and files.finished_under(files.adapter(spec.name)) != keys.extra_adapter(spec)
    }
    if not todo:
        return
    echo(f"[loraleak] training {len(todo)} adapters as Ray tasks: {', '.join(todo)}")
    jobs = {
        name: (data.encode(spec.examples(data.split, None)),
               dataclasses.replace(cfg.train, seed=cfg.train.seed + spec.seed_offset), data.tokenizer.pad_token_id)
        for name, spec in todo.items()
    }  # fmt: skip
    for done, (name, adapter) in enumerate(adapter_files(cfg, jobs, keys.numerics["threads"]), 1):
        where = files.adapter(name)
        with _saving(where):
            where.mkdir(parents=True)
            for file, content in adapter.items():
                (where / file).write_bytes(content)
        files.finish(where, keys.extra_adapter(todo[name]))
        echo(f"[loraleak] adapters: {done} of {len(todo)} trained with Ray ({name})")


def adapter_specs(attacks: list[Attack], attack_params: dict[str, dict[str, Any]]) -> list[ExtraAdapter]:
    """The further adapters the attacks train, in attack order, under their parameters."""
    specs: list[ExtraAdapter] = []
    for a in attacks:
        if a.adapters:
            specs += a.adapters(**{**a.defaults, **params_for(a, attack_params)})
    return specs


@contextmanager
def _saving(adapter: Path) -> Iterator[None]:
    """Write an adapter folder afresh; a failed write (a full disk) removes it whole, never half of it."""
    shutil.rmtree(adapter, ignore_errors=True)
    try:
        yield
    except BaseException:
        shutil.rmtree(adapter, ignore_errors=True)
        raise


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


# --- evidence and attacks ---------------------------------------------------------------------------------


def attack_evidence(
    cfg: Config, keys: cache.Keys, target: Target, data: RunData, files: RunFiles | None, progress: bool
) -> Evidence:
    """What the attacks read about the targets (members, then non-members), cached in stats/."""
    return Evidence(
        target.model,
        data.tokenizer,
        data.split.targets,
        data.encode,
        tokens=cfg.scoring.tokens,
        batch_size=cfg.scoring.batch_size,
        max_batch_tokens=cfg.scoring.max_batch_tokens,
        population=data.split.population,
        cache_dir=files.stats if files else None,
        pretrained_dir=files.pretrained_stats if files else None,
        key=keys.targets(),
        role_keys=keys.roles(),
        progress=progress,
        pretrained=target.pretrained,
    )


def run_attacks(
    attacks: list[Attack],
    evidence: Evidence,
    attack_params: dict[str, dict[str, Any]],
    *,
    extra: Callable[[ExtraAdapter], str] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Each attack's scores and seconds. What an attack triggers (extra adapters via `extra`, which
    returns the adapter's cache key; forward passes) is timed with it; later attacks reuse it. Without
    `extra` (`score`), the caller has checked that no attack trains one (`_check_no_training`)."""
    scores, seconds = {}, {}
    for a in attacks:
        t0 = time.perf_counter()
        params = params_for(a, attack_params)
        for spec in adapter_specs([a], attack_params):
            if spec.name in evidence.roles or extra is None:
                continue
            evidence.add_role(spec.name, partial(finetune.active_adapter, evidence.model, spec.name), extra(spec))
        scores[a.name] = a(evidence, **params)
        seconds[a.name] = round(time.perf_counter() - t0, 3)
    return scores, seconds


def _check_no_training(attacks: list[Attack], attack_params: dict[str, dict[str, Any]]) -> None:
    """Where no training recipe is at hand (`score`), an attack that trains a further adapter stops first."""
    for a in attacks:
        for spec in adapter_specs([a], attack_params):
            raise EvidenceError(
                f"attack '{a.name}' trains a further adapter ({spec.name}) with the target's "
                "recipe: run it through loraleak.run / `loraleak run`"
            )


@dataclass
class Scores:
    """What `score` found: one row per example (id, split when labelled, one column per attack) and,
    with labels, each attack's metrics (metrics.evaluate); the forward passes it ran."""

    scores: pd.DataFrame
    metrics: dict[str, dict[str, Any]] | None
    forward_passes: list[dict[str, Any]]


def score(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example | str],
    labels: Sequence[int] | None = None,
    *,
    population: Sequence[Example | str] = (),
    config: ConfigLike = None,
    progress: bool = False,
    **sections: Any,
) -> Scores:
    """Score your own model on your own examples with membership inference attacks.

    model: a PeftModel: adapter on, it is the fine-tuned model; disabled, the pre-trained one (what
      the `-pt` attacks read). Any other causal LM serves the attacks that read one model only.
    examples: `Example`s (prompt + response; the response is scored) or strings (whole texts).
    labels: 1 = member, 0 = non-member, aligned with `examples`: then each attack gets metrics.
    population: the attacker's non-member examples (ReCaLL's prefix, DC-PDD's token frequencies).
    config, sections: as for `run`; read are task.max_prompt_tokens / max_response_tokens, scoring,
      eval, attacks (default `one-pass`) and attack_params. Attacks that train further adapters
      (reference, spv-mia, shadows) need the training recipe: use `run`.
    """
    cfg = load_config(config, **sections)
    attacks = resolve(cfg.attacks)
    check_params(cfg.attack_params)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked by the attention mask, never by token id
    model.eval()
    targets, pool = _as_examples(examples, "example"), _as_examples(population, "population")
    _check_no_training(attacks, cfg.attack_params)  # before the population: training is the first obstacle
    check_population(attacks, cfg.attack_params, len(pool), "score(population=...)")
    encode = partial(_encode, tok=tokenizer, caps=(cfg.task.max_prompt_tokens, cfg.task.max_response_tokens))
    evidence = Evidence(
        model,
        tokenizer,
        targets,
        encode,
        tokens=cfg.scoring.tokens,
        batch_size=cfg.scoring.batch_size,
        max_batch_tokens=cfg.scoring.max_batch_tokens,
        population=pool,
        progress=progress,
    )
    scores, _ = run_attacks(attacks, evidence, cfg.attack_params)
    y = None if labels is None else np.asarray(labels, dtype=int)
    metrics = None if y is None else evaluate_all(y, scores, cfg)
    return Scores(report.scores_frame([ex.id for ex in targets], y, scores), metrics, evidence.passes)


def _as_examples(items: Sequence[Example | str], prefix: str) -> list[Example]:
    return [ex if isinstance(ex, Example) else Example(f"{prefix}-{i}", "", str(ex)) for i, ex in enumerate(items)]


# --- utility and the result -------------------------------------------------------------------------------


def measure_utility(
    cfg: Config, keys: cache.Keys, target: Target, data: RunData, files: RunFiles | None, progress: bool
) -> dict[str, Any]:
    """Utility of the fine-tuned and the pre-trained model on the held-out (non-member) examples;
    passes and generations are cached in utility/."""
    held_out = utility.HeldOut(
        target.model,
        data.tokenizer,
        data.split.nonmembers,
        data.encode,
        batch_size=cfg.scoring.batch_size,
        cache_dir=files.utility if files else None,
        pretrained_dir=files.pretrained_utility if files else None,
        key=keys.held_out(),
        progress=progress,
        choices=data.task.choices,
        role_keys=keys.roles(),
        pretrained=target.pretrained,
    )
    return utility.measure(held_out, data.task, cfg.task.max_response_tokens)


def collect(
    cfg: Config,
    data: RunData,
    target: Target,
    evidence: Evidence,
    attacks: list[Attack],
    scores: dict[str, np.ndarray],
    metrics: dict[str, dict[str, Any]],
    attack_time: dict[str, float],
    task_utility: dict[str, Any] | None,
    timings: dict[str, float],
) -> RunResult:
    """The typed result of a run, from what its stages produced."""
    family_time: dict[str, float] = {}
    for a in attacks:
        family_time[a.family] = round(family_time.get(a.family, 0.0) + attack_time[a.name], 3)
    trainable = sum(p.numel() for n, p in target.model.named_parameters() if "lora_" in n and ".default." in n)
    split = data.split
    return RunResult(
        loraleak_version=__version__,
        config=cfg,
        split=summarize_split(data, evidence),
        task=TaskSummary(cfg.task.name, data.task.kind, list(data.task.choices)),
        training=TrainingSummary(len(target.log), _finite(target.log, 0), _finite(target.log, -1), trainable),
        privacy=target.privacy,
        attacks={
            a.name: {**metrics[a.name], "family": a.family, "time_s": attack_time[a.name], "citation": a.citation}
            for a in attacks
        },
        utility=task_utility,
        family_time_s=family_time,
        forward_passes=evidence.passes,
        environment=environment(target.model),
        timings_s=timings,
        scores=report.scores_frame([ex.id for ex in split.targets], split.labels, scores),
    )


def summarize_split(data: RunData, evidence: Evidence) -> SplitSummary:
    """Sizes, what dedup, the loader and the token caps dropped, and the distribution-shift check."""
    split, (scored, starts) = data.split, evidence.encoded()
    return SplitSummary(
        **split.sizes(),
        pool_after_dedup=data.pool,
        duplicates_dropped=data.duplicates,
        records_skipped=data.skipped,
        members_truncated=data.members.truncated,
        targets_truncated=scored.truncated,
        scored_tokens_per_sample=float(np.mean([len(q) - s for q, s in zip(scored.input_ids, starts, strict=True)])),
        shift_check=shift_check(split.members, split.nonmembers),
    )


def _finite(log: list[dict[str, Any]], i: int) -> float | None:
    """The first (i = 0) or last (i = -1) finite training loss (a DP step on an empty batch has none)."""
    losses = [row["loss"] for row in (log if i == 0 else reversed(log)) if np.isfinite(row["loss"])]
    return losses[0] if losses else None


def numerics(model: ModelConfig | None = None) -> dict[str, Any]:
    """What changes floating-point results beyond the config: torch's version, the device the model
    runs on (and which GPU, and the device map), and the thread count (CPU kernels split their
    reductions by thread), so it is in every cache key. None: the CPU."""
    device = resolve_device(model.device) if model else "cpu"
    out: dict[str, Any] = {"torch": torch.__version__, "device": device, "threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name(device)
    if model and model.device_map:
        out["device_map"] = model.device_map
    if model and model.dtype == "auto":  # what auto became here (bf16 or fp32, by the device)
        out["dtype"] = str(resolve_dtype("auto", device)).removeprefix("torch.")
    return out


def environment(model: Any = None) -> dict[str, Any]:
    """Versions, and what ran where: the device and dtype of `model`'s weights (every device a device
    map spread it over)."""
    import peft
    import transformers

    placed = {str(p.device) for p in model.parameters()} if model is not None else set()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "torch_threads": torch.get_num_threads(),
        **({"devices": sorted(placed), "dtype": str(next(model.parameters()).dtype)} if placed else {}),
        **({"gpu": torch.cuda.get_device_name(0)} if torch.cuda.is_available() else {}),
    }


# --- audits: an adapter someone already trained ---------------------------------------------------------------


def audit(config: ConfigLike = None, *, progress: bool = True, echo: Echo = print, **sections: Any) -> RunResult:
    """Measure the leak of an adapter someone already trained: `audit.adapter` on `model.name` (or the
    merged weights `audit.finetuned` against `model.name`), scored on the records in `audit.members`
    against those in `audit.nonmembers`, with the attacks, metrics, cache and report of `run` (the same
    stages, from evidence on). Checked first: the files, their overlap and sizes, the adapter's type,
    weights format and fit to the base model (or the merged model's format and vocabulary)."""
    cfg, attacks, files, clock = _begin(config, sections)
    with _held(files, echo):
        with clock("data"):
            task_split = _audit_split(cfg)
        given, identity = _audited(cfg, attacks, echo)
        check_population(attacks, cfg.attack_params, len(task_split[1].population), "--population (audit.population)")
        adapter_specs(attacks, cfg.attack_params)  # names every further adapter: an odd shadow count stops here
        keys = cache.Keys(cfg, _digest(task_split[1]), numerics(cfg.model), adapter=identity)
        files.clear_report_unless(keys.report())
        with clock("load_model"):
            model, tok = load_base(cfg, echo)
            target = _adapter_target(model, given) if given else _merged_target(cfg, model, tok, echo)
        data = prepare_data(cfg, task_split, tok, files)
        result = _stages(cfg, keys, attacks, files, clock, data, target, echo, progress)
        result.audit = {
            "adapter": str(given.path) if given else "",
            "adapter_sha256": given.sha256 if given else "",
            "adapter_variant": given.variant if given else "merged",
            "adapter_base_model": given.base_model if given else cfg.model.name,
            "finetuned": cfg.audit.finetuned,
            "finetuned_sha256": "" if given else identity.removeprefix("merged:"),
            "model_identity": weights_digest(cfg.model.name),  # its weights' sha256 (a hub id: its name)
            **{f"{name}_file": getattr(cfg.audit, name) for name in ("members", "nonmembers", "population")},
        }
        _report(cfg, files, keys, result, data)
    return result


def _audited(cfg: Config, attacks: list[Attack], echo: Echo) -> tuple[Any, str]:
    """The given adapter, checked (None for merged weights), and the identity of what is audited: the
    adapter's sha256, or "merged:" and the merged weights' digest."""
    a = cfg.audit
    if a.adapter:
        given = find_adapter(a.adapter, cfg.model.name, allow_pickle=cfg.model.allow_pickle, echo=echo)
        return given, given.sha256
    needs_adapters = [x.name for x in attacks if x.adapters]
    if needs_adapters:
        raise AdapterError(
            f"attacks {', '.join(needs_adapters)} train adapters on the base model beside the target: an audit of "
            "merged weights (--finetuned) runs the attacks that read the fine-tuned and pre-trained models only; "
            "drop them, or audit the adapter itself (--adapter)"
        )
    check_model(a.finetuned, allow_pickle=cfg.model.allow_pickle)
    return None, f"merged:{weights_digest(a.finetuned)}"


def _adapter_target(model: Any, given: Any) -> Target:
    check_fit(model, given)
    return Target(finetune.load_adapter(model, given.path), [], None)


def _merged_target(cfg: Config, base: Any, tok: Any, echo: Echo) -> Target:
    """The merged fine-tuned model, loaded beside the pre-trained one (the same dtype): both must read
    the same tokens, so their vocabularies must agree."""
    m = cfg.model
    merged, merged_tok = load_base(cfg, echo, name=cfg.audit.finetuned)
    sizes = [x.get_input_embeddings().weight.shape[0] for x in (merged, base)]
    if merged_tok.get_vocab() != tok.get_vocab() or sizes[0] != sizes[1]:
        raise AdapterError(
            f"the fine-tuned model {cfg.audit.finetuned} (vocabulary {sizes[0]}) and the base model {m.name} "
            f"(vocabulary {sizes[1]}) do not share a tokenizer: give the base model it was fine-tuned from"
        )
    return Target(merged, [], None, pretrained=base)


def _audit_split(cfg: Config) -> TaskSplit:
    """The audit's records as a split: members and non-members from their files; a non-member (or
    population record) equal to an earlier record up to whitespace and case is dropped and counted."""
    a = cfg.audit
    if not (bool(a.adapter) != bool(a.finetuned) and a.members and a.nonmembers):
        raise AdapterError(
            "an audit needs one adapter (--adapter DIR, or --finetuned MODEL for merged weights) and two files: "
            "--members FILE --nonmembers FILE (audit.adapter or audit.finetuned, audit.members, audit.nonmembers)"
        )
    parts, seen, dropped = [], set(), 0
    for path in (a.members, a.nonmembers, a.population):
        records = load_task(_generic(path), **cfg.task.options()).examples if path else []
        kept = [ex for ex in records if _normalised(ex.text) not in seen]
        dropped += len(records) - len(kept)
        seen |= {_normalised(ex.text) for ex in kept}
        parts.append(kept)
    for name, part in zip(("audit.members", "audit.nonmembers"), parts, strict=False):
        if len(part) < MIN_SCORED:
            raise TaskError(
                f"{name} ({getattr(a, name.split('.')[1])}) has {len(part)} records after dropping overlaps; "
                f"an audit needs at least {MIN_SCORED} members and {MIN_SCORED} non-members"
            )
    split = Split(*parts)
    ids = [ex.id for ex in split.targets + split.population]
    if len(set(ids)) != len(ids):
        raise TaskError(f"record id '{next(i for i in ids if ids.count(i) > 1)}' is in more than one audit file")
    return get_task(_generic(a.members)), split, len(seen), dropped, {}


def export_split(run_dir: Path, out: Path) -> dict[str, int]:
    """A finished run's (or audit's) members, non-members and population as jsonl in `out`: rebuilt from
    its task or files and checked against its manifest's sha256, so they are exactly what it scored."""
    files = RunFiles(run_dir)
    if not files.results.is_file() or not files.manifest.is_file():
        raise TaskError(f"{run_dir} has no results.json and manifest.jsonl: give a finished run's output directory")
    cfg = load_config(read_cached(files.results, _read_json)["config"])
    split = (_audit_split if cfg.audit.members else _split)(cfg)[1]
    rebuilt = [(ex.id, ex.sha256, role) for role, (_, part) in zip(SPLITS, _parts(split), strict=True) for ex in part]
    recorded = [(r["id"], r["sha256"], r["split"]) for r in read_cached(files.manifest, _read_jsonl)]
    if rebuilt != recorded:
        first = next((r for r, b in zip(recorded, rebuilt, strict=False) if r != b), recorded[len(rebuilt) :][:1])
        raise TaskError(
            f"the data of {run_dir} changed since it ran (first difference: {first}); its records cannot be "
            "rebuilt exactly: restore the data it was run on"
        )
    out.mkdir(parents=True, exist_ok=True)
    for name, part in _parts(split):
        with cache.atomic(out / f"{name}.jsonl") as tmp:
            tmp.write_text("".join(json.dumps({"id": ex.id, "prompt": ex.prompt, "response": ex.response}) + "\n"
                                   for ex in part))  # fmt: skip
    return {name: len(part) for name, part in _parts(split)}


def _parts(split: Split) -> list[tuple[str, list[Example]]]:
    return [("members", split.members), ("nonmembers", split.nonmembers), ("population", split.population)]


def _generic(path: str) -> str:
    return f"{'csv' if path.lower().endswith('.csv') else 'jsonl'}:{path}"


def _normalised(text: str) -> str:
    return " ".join(text.split()).casefold()


# --- grids ----------------------------------------------------------------------------------------------------


def run_grid(cells: list[Cell], *, progress: bool = True, echo: Echo = print) -> pd.DataFrame:
    """Every cell of a grid, one after another, on one resident base model per (model, dtype): each
    cell fine-tunes its own adapter on it and removes it when done. Cells already finished are
    reused (each is resumable like a single run). Writes OUT/grid.csv, grid.md, privacy_utility.png,
    report.html. With `execution.backend: ray` each cell is a Ray task instead (`execution`)."""
    root = RunFiles(cells[0].config.output_dir).root.parent.parent
    with cache.locked(root), cache.disk_errors(root):
        for name in report.GRID_FILES:
            (root / name).unlink(missing_ok=True)  # an older grid's table must not outlive its cells
        _check_cells(cells)
        if cells[0].config.execution.backend == "ray":
            return _ray_grid(cells, root, echo)
        frame = _grid_cells(cells, progress, echo)
        report.write_grid(root, frame)
    return frame


def _ray_grid(cells: list[Cell], root: Path, echo: Echo) -> pd.DataFrame:
    """The cells as Ray tasks; the table of those that finished, and one error naming those that failed."""
    from .execution import GridError, ray_rows

    rows, failed = ray_rows(cells, list(dict.fromkeys(k for cell in cells for k in cell.settings)), echo)
    frame = report.grid_frame(rows)
    if rows:
        report.write_grid(root, frame)
    if failed:
        raise GridError(
            f"{len(failed)} of {len(cells)} cells failed ("
            + "; ".join(f"{name}: {why}" for name, why in failed.items())
            + f"); the {len(rows)} finished are in {root}/grid.csv. Fix the cause and re-run: only these run again"
        )
    return frame


def _check_cells(cells: list[Cell]) -> None:
    """Every cell's attacks, data and model checked before the first one trains (each distinct one once)."""
    seen: set[str] = set()
    for cell in cells:
        c = cell.config
        check_params(c.attack_params)
        attacks = resolve(c.attacks)
        check_population(attacks, c.attack_params, c.split.population, f"cell {cell.name}: split.population")
        adapter_specs(attacks, c.attack_params)  # an odd shadow count stops here
        for key, check in (
            (cache.fingerprint("data", c.task, c.split), partial(_split, c)),
            (
                cache.fingerprint("model", c.model),
                partial(check_model, c.model.name, allow_pickle=c.model.allow_pickle),
            ),
        ):
            if key not in seen:
                seen.add(key)
                check()


def _grid_cells(cells: list[Cell], progress: bool, echo: Echo) -> pd.DataFrame:
    loaded: dict[tuple, tuple] = {}
    rows, keys = [], list(dict.fromkeys(k for cell in cells for k in cell.settings))  # what the grid varies
    for i, cell in enumerate(cells, 1):
        m = cell.config.model
        used: list[bool] = []  # whether the run asked for the model (a finished cell does not)
        key = (m.name, m.dtype, m.device, m.device_map, m.trust_remote_code, m.allow_pickle)

        def resident(key=key, cell=cell, used=used) -> tuple[Any, Any]:
            used.append(True)
            if key not in loaded:
                loaded.clear()  # one resident model at a time
                loaded[key] = load_base(cell.config, echo)
            return loaded[key]

        echo(f"[loraleak] cell {i}/{len(cells)}: {cell.name}")
        t0 = time.perf_counter()
        shared = RunFiles.grid_shared(cell.config.output_dir)
        res = run(cell.config, progress=progress, echo=echo, base=resident, shared=shared)
        seconds = time.perf_counter() - t0 if used else sum(res.timings_s.values())  # finished: its own time
        rows.append(report.grid_row(cell, res, seconds, keys))
    return report.grid_frame(rows)
