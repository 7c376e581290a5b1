"""One experiment: model -> data split -> LoRA fine-tune -> token statistics -> attacks -> metrics -> report.

Each expensive stage leaves its product in the output directory with a fingerprint of the config
sections it depends on (`stages.json`); a re-run with the same inputs reuses it, so an interrupted
or extended run (say, more attacks) never recomputes what it already has.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import __version__, report, utility
from .attacks import check_params, params_for, resolve
from .config import Cell, Config
from .data import SKIPPED, dedup, encode_examples, get_task, load_task, make_split, shift_check, write_manifest
from .finetune import (active_adapter, add_lora, attach_lora, load_adapter, load_extra_adapter, save_adapter,
                       train_lora, train_lora_dp)
from .metrics import evaluate
from .models import load_model
from .scoring import Evidence

STAGE_SECTIONS = {
    "adapter": ("model", "task", "split", "lora", "train", "dp"),
    "stats": ("model", "task", "split", "lora", "train", "dp", "scoring"),
    "utility": ("model", "task", "split", "lora", "train", "dp", "scoring"),
}


class Stages:
    """Fingerprints of finished stages, persisted in OUT/stages.json."""

    def __init__(self, out: Path, cfg: Config):
        self.path, self.cfg = out / "stages.json", cfg
        self.done = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def _fingerprint(self, stage: str) -> str:
        return self.cfg.fingerprint(*STAGE_SECTIONS[stage.split(":")[0]])  # "adapter:NAME" as "adapter"

    def fresh(self, stage: str) -> bool:
        return self.done.get(stage) == self._fingerprint(stage)

    def mark(self, stage: str) -> None:
        self.done[stage] = self._fingerprint(stage)
        self.path.write_text(json.dumps(self.done, indent=2))

    def forget(self, stage: str) -> None:
        self.done.pop(stage, None)
        self.path.write_text(json.dumps(self.done, indent=2))


def run(cfg: Config, progress: bool = True, echo=print, base=None) -> dict:
    """One experiment. `base`: an already loaded (model, tokenizer) to fine-tune, left as it came
    (adapters removed) when the run ends: a grid reuses one resident base model for every cell."""
    attacks = resolve(cfg.attacks)  # fail on a bad name before any heavy work
    check_params(cfg.attack_params)
    task = get_task(cfg.task.name)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    stages, timings = Stages(out, cfg), {}

    @contextmanager
    def timed(name):
        t0 = time.perf_counter()
        yield
        timings[name] = round(time.perf_counter() - t0, 3)

    with timed("load_model"):
        model, tok = base or load_model(cfg.model.name, cfg.model.dtype, trust_remote_code=cfg.model.trust_remote_code,
                                        allow_pickle=cfg.model.allow_pickle, echo=echo)
    with timed("data"):
        # a classification task repeats its few responses by design: only repeated texts are duplicates
        examples, duplicates = dedup(load_task(cfg.task.name, **cfg.task.options()),
                                     by_response=task.kind != "classification")
        split = make_split(examples, cfg.split.members, cfg.split.nonmembers, cfg.split.population,
                           cfg.split.seed, cfg.task.name)
        write_manifest(split, out / "manifest.jsonl")
        caps = (cfg.task.max_prompt_tokens, cfg.task.max_response_tokens)
        members = encode_examples(split.members, tok, *caps)
    pad_id = tok.pad_token_id

    adapter_dir = out / "adapter"
    with timed("finetune"):
        if stages.fresh("adapter"):
            echo(f"[loraleak] reusing the adapter in {adapter_dir}")
            peft_model = load_adapter(model, adapter_dir)
            train_log = [json.loads(line) for line in open(adapter_dir / "train_log.jsonl")]
            privacy = json.loads((adapter_dir / "privacy.json").read_text()) if cfg.dp.enabled else None
        else:
            stages.forget("stats")
            peft_model = attach_lora(model, cfg.lora, cfg.train.seed)
            privacy = None
            if cfg.dp.enabled:
                train_log, privacy = train_lora_dp(peft_model, members, cfg.train, cfg.dp, pad_id, progress)
            else:
                train_log = train_lora(peft_model, members, cfg.train, pad_id, progress)
            save_adapter(peft_model, adapter_dir, train_log)
            if privacy:
                (adapter_dir / "privacy.json").write_text(json.dumps(privacy, indent=2) + "\n")
            write_manifest(split, adapter_dir / "manifest.jsonl")
            stages.mark("adapter")

    stats_dir = out / "stats"
    if not stages.fresh("stats"):  # statistics of an older adapter or scoring setup: start afresh
        shutil.rmtree(stats_dir, ignore_errors=True)
        stages.mark("stats")
    elif any(stats_dir.glob("*.npz")):
        echo(f"[loraleak] reusing token statistics in {stats_dir}")
    evidence = Evidence(peft_model, tok, split.targets, encode=lambda exs: encode_examples(exs, tok, *caps),
                        tokens=cfg.scoring.tokens, batch_size=cfg.scoring.batch_size, population=split.population,
                        cache_dir=stats_dir, progress=progress)

    labels, scores, attack_time = split.labels, {}, {}
    with timed("attacks"):
        for a in attacks:  # what an attack triggers (adapters, passes) is timed with it; later ones reuse it
            t0 = time.perf_counter()
            params = params_for(a, cfg.attack_params)
            for spec in a.adapters(**{**a.defaults, **params}) if a.adapters else []:
                if spec.name not in evidence.roles:
                    prepare_extra_adapter(spec, peft_model, split, evidence, cfg, stages, out, echo, progress)
                    evidence.add_role(spec.name, lambda name=spec.name: active_adapter(peft_model, name))
            scores[a.name] = a(evidence, **params)
            attack_time[a.name] = round(time.perf_counter() - t0, 3)
    with timed("metrics"):
        attack_metrics = {name: evaluate(labels, s, cfg.eval.bootstrap, cfg.eval.confidence, cfg.eval.seed)
                          for name, s in scores.items()}
    task_utility = None
    if cfg.eval.utility:
        with timed("utility"):
            task_utility = measure_utility(peft_model, tok, task, split, caps, cfg, stages, out, progress)
    family_time: dict[str, float] = {}
    for a in attacks:
        family_time[a.family] = round(family_time.get(a.family, 0.0) + attack_time[a.name], 3)
    scored, starts = evidence.encoded()
    scored_tokens = [len(seq) - s for seq, s in zip(scored.input_ids, starts)]

    results = {
        "loraleak_version": __version__,
        "config": cfg.to_dict(),
        "split": {**split.sizes(), "pool_after_dedup": len(examples), "duplicates_dropped": duplicates,
                  "records_skipped": dict(SKIPPED.get(cfg.task.name, {})),
                  "members_truncated": members.truncated,
                  "targets_truncated": scored.truncated,
                  "scored_tokens_per_sample": float(np.mean(scored_tokens)),
                  "shift_check": shift_check(split.members, split.nonmembers)},
        "task": {"name": cfg.task.name, "kind": task.kind, "choices": list(task.choices)},
        "training": {"steps": len(train_log), "first_loss": _finite(train_log, 0), "final_loss": _finite(train_log, -1),
                     "trainable_parameters": sum(p.numel() for n, p in peft_model.named_parameters()
                                                 if "lora_" in n and ".default." in n)},
        "privacy": privacy,
        "attacks": {a.name: {**attack_metrics[a.name], "family": a.family, "time_s": attack_time[a.name],
                             "citation": a.citation} for a in attacks},
        "utility": task_utility,
        "family_time_s": family_time,
        "forward_passes": evidence.passes,
        "environment": environment(),
        "timings_s": timings,
    }
    report.write(out, results, report.scores_frame([ex.id for ex in split.targets], labels, scores),
                 report.roc_frame(labels, scores))
    if base is not None:
        peft_model.unload()  # every adapter out: the base model is as it came, for the next cell
    return results


def _finite(log: list[dict], i: int):
    """The first (i = 0) or last (i = -1) finite training loss (a DP step on an empty batch has none)."""
    losses = [row["loss"] for row in (log if i == 0 else reversed(log)) if np.isfinite(row["loss"])]
    return losses[0] if losses else None


def run_grid(cells: list[Cell], progress: bool = True, echo=print) -> pd.DataFrame:
    """Every cell of a grid, one after another, on one resident base model per (model, dtype): each
    cell fine-tunes its own adapter on it and removes it when done. Cells already finished are
    reused (each is resumable like a single run). Writes OUT/grid.csv, grid.md, privacy_utility.png."""
    loaded: dict[tuple, tuple] = {}
    rows, keys = [], list(dict.fromkeys(k for cell in cells for k in cell.settings))  # what the grid varies
    for i, cell in enumerate(cells, 1):
        m = cell.config.model
        key = (m.name, m.dtype, m.trust_remote_code, m.allow_pickle)
        if key not in loaded:
            loaded.clear()  # one resident model at a time
            loaded[key] = load_model(m.name, m.dtype, trust_remote_code=m.trust_remote_code,
                                     allow_pickle=m.allow_pickle, echo=echo)
        echo(f"[loraleak] cell {i}/{len(cells)}: {cell.name}")
        t0 = time.perf_counter()
        res = run(cell.config, progress, echo, base=loaded[key])
        rows.append(report.grid_row(cell, res, time.perf_counter() - t0, keys))
    frame = pd.DataFrame(rows)
    out = Path(cells[0].config.output_dir).parent.parent
    report.write_grid(out, frame)
    return frame


def measure_utility(peft_model, tok, task, split, caps, cfg: Config, stages: Stages, out: Path, progress: bool):
    """Utility of the fine-tuned and the pre-trained model on the held-out (non-member) examples;
    passes and generations are cached in OUT/utility/ while the stage's inputs are unchanged."""
    where = out / "utility"
    if not stages.fresh("utility"):
        shutil.rmtree(where, ignore_errors=True)
        stages.mark("utility")
    held_out = utility.HeldOut(peft_model, tok, split.nonmembers, lambda exs: encode_examples(exs, tok, *caps),
                               batch_size=cfg.scoring.batch_size, cache_dir=where, progress=progress,
                               choices=task.choices)
    return utility.measure(held_out, task, cfg.task.max_response_tokens, where)


def prepare_extra_adapter(spec, peft_model, split, evidence, cfg: Config, stages: Stages, out: Path, echo,
                          progress: bool) -> None:
    """Load adapter `spec.name` from OUT/adapters/NAME, or train it with the target's recipe and save it."""
    where, stage = out / "adapters" / spec.name, f"adapter:{spec.name}"
    if stages.fresh(stage):
        echo(f"[loraleak] reusing the {spec.name} adapter in {where}")
        load_extra_adapter(peft_model, where, spec.name)
        return
    for stale in (out / "stats").glob(f"{spec.name}-*"):
        stale.unlink()
    examples = spec.data(split, evidence)
    train = dataclasses.replace(cfg.train, seed=cfg.train.seed + spec.seed_offset)
    add_lora(peft_model, spec.name, cfg.lora, train.seed)
    with active_adapter(peft_model, spec.name):
        log = train_lora(peft_model, evidence.encode(examples), train, evidence.tokenizer.pad_token_id, progress,
                         desc=f"fine-tune {spec.name}")
    shutil.rmtree(where, ignore_errors=True)
    save_adapter(peft_model, where, log, spec.name)
    stages.mark(stage)


def environment() -> dict:
    import peft
    import transformers
    return {"python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__,
            "torch_threads": torch.get_num_threads()}
