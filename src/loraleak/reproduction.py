"""reproduction.md: LoRA-Leak's claims, one row each, checked against a grid run with seeds.

Every comparison is paired by seed: seed S of two cells drew the same split and the same training
seed, so their difference removes the split's luck. A difference over n >= 2 seeds gets the
Student-t interval (`metrics.over_seeds`); its sign is resolved when the interval excludes 0, and
`metrics.seeds_needed` says how many seeds would resolve it were the measured mean and sd the truth.

"Mitigates while keeping utility", defined once (`mitigation`): against the undefended cell of the
same recipe (same model, task, epochs, rank, learning rate, batch ...; for DP-SGD: the same DP
recipe with no noise and no effective clipping),
- privacy gain: the best attack's AUC falls by more than its interval's half-width (the interval
  of the paired drop lies above 0), and the best TPR at 1% FPR does not rise by more than its own;
- keeps utility: the mean task utility falls by at most UTILITY_TOLERANCE of the undefended
  model's, and stays above the pre-trained model's (a defended model that learned nothing keeps
  "utility" only by the pre-trained model's grace);
- resolved the other way: "costs utility" when the utility loss's interval lies above the tolerance
  (or the defended model is no better than the pre-trained one); "no privacy gain" when the AUC
  drop's interval lies below MIN_EFFECT. Otherwise "not resolved".
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import platform
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import metrics as M

if TYPE_CHECKING:
    from .config import Cell, Config

UTILITY_TOLERANCE = 0.05  # a defense "keeps utility" if it loses at most 5% of the undefended utility
MIN_EFFECT = 0.02  # an AUC drop confidently below this is "no privacy gain"
CALIBRATED = ("loss", "min-k++", "mope", "gradnorm-x", "neighbourhood")  # LoRA-Leak's claim 2
MITIGATION_FIGURES = ("auc_drop", "tpr_drop", "utility_loss")
DEFENSE_KNOBS = {
    "lora": ("dropout", "exclude_first", "exclude_last", "exclude_layers", "exclude_part", "layers"),
    "train": ("weight_decay",),
    "dp": ("epsilon", "noise_multiplier", "max_grad_norm"),
}  # what a defense sets; everything else of model, task, split, lora, train and dp is the recipe


# --- the criterion: pure functions of per-seed figures ----------------------------------------------


def paired(base: Sequence[float], other: Sequence[float], confidence: float = 0.95) -> dict:
    """`metrics.over_seeds` of base - other, seed by seed (both in the same seed order)."""
    return M.over_seeds(np.asarray(base, float) - np.asarray(other, float), confidence)


def mitigation(base: dict, defended: dict, confidence: float = 0.95) -> dict:
    """The criterion of this module's docstring. `base` and `defended` map best_auc, best_tpr,
    utility and utility_pretrained to per-seed values in the same seed order. Returns the paired
    auc_drop, tpr_drop and utility_loss (relative to the undefended utility, per seed) and the verdict:
    mitigates | costs utility | no privacy gain | not resolved."""
    auc = paired(base["best_auc"], defended["best_auc"], confidence)
    tpr = paired(base["best_tpr"], defended["best_tpr"], confidence)
    u_base, u_def = np.asarray(base["utility"], float), np.asarray(defended["utility"], float)
    loss = M.over_seeds((u_base - u_def) / np.maximum(u_base, 1e-12), confidence)  # a useless base: no loss
    above_pretrained = float(np.mean(u_def)) > float(np.mean(defended["utility_pretrained"]))
    out = {"auc_drop": auc, "tpr_drop": tpr, "utility_loss": loss}
    if auc["n"] < 2:
        return out | {"verdict": "not resolved", "why": "one seed: no interval"}
    if not np.isfinite(np.r_[u_base, u_def]).all():
        return out | {"verdict": "not resolved", "why": "utility not measured (eval.utility)"}
    gain = auc["ci_low"] > 0 and not tpr["ci_high"] < 0
    keeps = loss["mean"] <= UTILITY_TOLERANCE and above_pretrained
    if gain and keeps:
        return out | {"verdict": "mitigates", "why": "AUC falls beyond its interval; utility kept"}
    if loss["ci_low"] > UTILITY_TOLERANCE or not above_pretrained:
        why = "no better than the pre-trained model" if not above_pretrained else "utility loss beyond the tolerance"
        return out | {"verdict": "costs utility", "why": why}
    if auc["ci_high"] < MIN_EFFECT:
        return out | {"verdict": "no privacy gain", "why": f"AUC drop's interval below {MIN_EFFECT}"}
    return out | {"verdict": "not resolved", "why": "intervals too wide at this number of seeds"}


def direction(diff: dict) -> str:
    """confirmed (interval above 0) | contradicted (below 0) | not resolved, for a claim that a paired
    difference is positive."""
    if diff["n"] < 2:
        return "not resolved"
    return "confirmed" if diff["ci_low"] > 0 else "contradicted" if diff["ci_high"] < 0 else "not resolved"


# --- runs: what each run of a grid is, for the claims -------------------------------------------------


def defense(cfg: Config) -> str:
    """The defenses a cell's config sets ("" for none), e.g. "dropout 0.3" or "DP-SGD epsilon 8"."""
    lora, parts = cfg.lora, []
    if lora.dropout > 0:
        parts.append(f"dropout {lora.dropout:g}")
    layers = [
        f"{what} {value}"
        for what, value in (
            ("first", lora.exclude_first), ("last", lora.exclude_last), ("layers", lora.exclude_layers),
            ("the", lora.exclude_part), ("all but", lora.layers),
        )
        if value
    ]  # fmt: skip
    if layers:
        parts.append("excluded " + ", ".join(layers))
    if cfg.train.weight_decay > 0:
        parts.append(f"weight decay {cfg.train.weight_decay:g}")
    if cfg.dp.enabled and (cfg.dp.epsilon > 0 or cfg.dp.noise_multiplier > 0):
        dp = cfg.dp
        parts.append(f"DP-SGD epsilon {dp.epsilon:g}" if dp.epsilon > 0 else f"DP-SGD sigma {dp.noise_multiplier:g}")
    return "; ".join(parts)


def recipe(cfg: Config, *, free: Sequence[str] = ()) -> str:
    """What a run's training is, but for its defenses, its seeds and the dotted keys in `free`: runs
    with equal recipes differ only in those."""
    d = {k: dataclasses.asdict(getattr(cfg, k)) for k in ("model", "task", "split", "lora", "train", "dp")}
    for section, knobs in DEFENSE_KNOBS.items():
        for knob in knobs:
            d[section].pop(knob)
    d["split"].pop("seed"), d["train"].pop("seed")
    for dotted in free:
        section, key = dotted.split(".")
        d[section].pop(key)
    return repr(sorted((k, sorted(v.items())) for k, v in d.items()))


def runs_frame(cells: Sequence[Cell], frame: pd.DataFrame) -> pd.DataFrame:
    """The grid's per-run frame with, per run, its defense and what the claims group by; `seed` is the
    split's seed (what pairs two runs), also for a cell the config's `seeds:` left out."""
    by_name = {c.name: c for c in cells}
    frame = frame.assign(group=frame["group"] if "group" in frame else frame["cell"])
    extra = []
    for name in frame["cell"]:
        cfg = by_name[name].config
        extra.append(
            {
                "seed": cfg.split.seed, "model": cfg.model.name, "task": cfg.task.name, "epochs": cfg.train.epochs,
                "rank": cfg.lora.r, "defense": defense(cfg), "dp_recipe": cfg.dp.enabled, "recipe": recipe(cfg),
                "recipe_but_epochs": recipe(cfg, free=["train.epochs"]),
                "recipe_but_rank": recipe(cfg, free=["lora.r", "lora.alpha"]),
            }
        )  # fmt: skip
    return pd.concat(
        [frame.drop(columns=["seed"], errors="ignore").reset_index(drop=True), pd.DataFrame(extra)], axis=1
    )


# --- the claims ---------------------------------------------------------------------------------------

CLAIMS = {
    "vulnerable": "LoRA-tuned models are vulnerable at a conservative 3 epochs (best attack's AUC above 0.5)",
    "calibration": "calibration by the pre-trained model strengthens {attack} (AUC of {attack}-pt minus {attack})",
    "epochs": "more epochs leak more (best AUC at the most epochs minus at the fewest)",
    "rank": "a higher rank leaks more (best AUC at the highest rank minus at the lowest)",
    "dropout": "LoRA dropout mitigates while keeping utility",
    "excluded": "excluding layers from LoRA mitigates while keeping utility",
    "DP-SGD": "DP-SGD does not mitigate while keeping utility",
    "weight decay": "weight decay does not mitigate while keeping utility",
}
EXPECTED_TO_MITIGATE = {"dropout": True, "excluded": True, "DP-SGD": False, "weight decay": False}


def _values(runs: pd.DataFrame, group: str, col: str) -> pd.Series:
    return runs[runs["group"] == group].set_index("seed")[col]


def _pair(runs: pd.DataFrame, a: str, b: str, col_a: str, col_b: str | None = None) -> dict:
    """paired(a's col_a, b's col_b) over the seeds both groups ran."""
    x, y = _values(runs, a, col_a), _values(runs, b, col_b or col_a)
    seeds = x.index.intersection(y.index)
    return paired(x[seeds], y[seeds])


def _fmt(s: dict, sign: str = "+") -> str:
    """mean ± sd [interval], n seeds: a difference signed (sign "+"), a figure not (sign "")."""
    if s["n"] < 2:
        return f"{s['mean']:{sign}.3f} (1 seed)"
    interval = f"[{s['ci_low']:{sign}.3f}, {s['ci_high']:{sign}.3f}]"
    return f"{s['mean']:{sign}.3f} ± {s['sd']:.3f} {interval}, {s['n']} seeds"


def _to_resolve(verdict: str, s: dict, offset: float = 0.0) -> str:
    if verdict != "not resolved":
        return ""
    n = M.seeds_needed(s["mean"] - offset, s["sd"])
    return f"about {n:.0f} seeds" if np.isfinite(n) else "more seeds (sd unknown, or no effect measured)"


def _row(claim: str, scope: str, measured: str, verdict: str, resolve: str = "") -> dict:
    return {"claim": claim, "scope": scope, "loraleak measured": measured, "verdict": verdict, "to resolve": resolve}


def claims(runs: pd.DataFrame) -> tuple[list[dict], list[dict]]:
    """(one row per claim and model x task, one row per defended cell) from `runs_frame`'s output."""
    rows, defended = [], []
    base = runs[(runs["defense"] == "") & ~runs["dp_recipe"]]  # undefended, trained as usual (not DP's recipe)
    for (model, task), scoped in runs.groupby(["model", "task"], sort=False):
        scope = f"{model}, {task}"
        rows += _vulnerable(base[(base["model"] == model) & (base["task"] == task)], scope)
        rows += _trend(base[(base["model"] == model) & (base["task"] == task)], scope)
        found = _defenses(scoped, scope)
        defended += found
        rows += _defense_claims(found, scope)
    return rows, defended


def _vulnerable(base: pd.DataFrame, scope: str) -> list[dict]:
    """Claims 1 and 2, on the undefended 3-epoch cell with the most seeds (the first of ties)."""
    at3 = base[base["epochs"] == 3]
    if at3.empty:
        return [_row(CLAIMS["vulnerable"], scope, "no undefended cell at 3 epochs", "not measured")]
    group = at3.groupby("group", sort=False).size().idxmax()
    runs = at3[at3["group"] == group]
    s, tpr = M.over_seeds(runs["best_auc"].to_numpy()), M.over_seeds(runs["best_tpr@1%fpr"].to_numpy())
    verdict = direction({**s, "ci_low": s["ci_low"] - 0.5, "ci_high": s["ci_high"] - 0.5})  # AUC above chance
    measured = f"{group}: best AUC {_fmt(s, '')}; best TPR@1%FPR {_fmt(tpr, '')}"
    rows = [_row(CLAIMS["vulnerable"], scope, measured, verdict, _to_resolve(verdict, s, 0.5))]
    for attack in CALIBRATED:
        claim = CLAIMS["calibration"].format(attack=attack)
        if f"auc:{attack}-pt" not in runs or f"auc:{attack}" not in runs:
            rows.append(_row(claim, scope, f"{attack} or {attack}-pt not in this run's attacks", "not measured"))
            continue
        d = _pair(at3, group, group, f"auc:{attack}-pt", f"auc:{attack}")
        rows.append(_row(claim, scope, f"{group}: {_fmt(d)}", direction(d), _to_resolve(direction(d), d)))
    return rows


def _trend(base: pd.DataFrame, scope: str) -> list[dict]:
    """Claims 'more epochs / a higher rank leak more': the undefended groups that differ only there."""
    rows = []
    for claim, axis, key in (("epochs", "epochs", "recipe_but_epochs"), ("rank", "rank", "recipe_but_rank")):
        found = False
        for _, same in base.groupby(key, sort=False):
            levels = sorted(same[axis].unique())
            if len(levels) < 2:
                continue
            found = True
            lo, hi = (same[same[axis] == v]["group"].iloc[0] for v in (levels[0], levels[-1]))
            d = _pair(same, hi, lo, "best_auc")
            means = ", ".join(f"{v}: {same[same[axis] == v]['best_auc'].mean():.3f}" for v in levels)
            measured = f"best AUC by {axis} ({means}); {hi} minus {lo}: {_fmt(d)}"
            rows.append(_row(CLAIMS[claim], scope, measured, direction(d), _to_resolve(direction(d), d)))
        if not found:
            rows.append(_row(CLAIMS[claim], scope, f"no undefended cells that differ only in {axis}", "not measured"))
    return rows


def _figures(runs: pd.DataFrame, group: str, seeds: pd.Index) -> dict:
    g = runs[runs["group"] == group].set_index("seed").loc[seeds]
    missing = pd.Series(np.nan, index=g.index)  # a grid run with eval.utility off has no utility columns
    return {
        "best_auc": g["best_auc"], "best_tpr": g["best_tpr@1%fpr"],
        "utility": g.get("utility", missing), "utility_pretrained": g.get("utility_pretrained", missing),
    }  # fmt: skip


def _defenses(runs: pd.DataFrame, scope: str) -> list[dict]:
    """The criterion for every defended group against the undefended group of its recipe."""
    out = []
    for group in dict.fromkeys(runs[runs["defense"] != ""]["group"]):
        mine = runs[runs["group"] == group]
        base = runs[(runs["defense"] == "") & (runs["recipe"] == mine["recipe"].iloc[0])]
        row = {"scope": scope, "cell": group, "defense": mine["defense"].iloc[0]}
        if base.empty:
            out.append(row | {"baseline": "none (no undefended cell of its recipe)", "verdict": "not measured"})
            continue
        baseline = base["group"].iloc[0]
        seeds = pd.Index(mine["seed"]).intersection(pd.Index(base[base["group"] == baseline]["seed"]))
        m = mitigation(_figures(runs, baseline, seeds), _figures(runs, group, seeds))
        out.append(row | {"baseline": baseline, **m})
    return out


def _defense_claims(defended: list[dict], scope: str) -> list[dict]:
    rows = []
    for kind, expected in EXPECTED_TO_MITIGATE.items():
        mine = [d for d in defended if d["defense"].startswith(kind) and ";" not in d["defense"]]
        if not mine:
            rows.append(_row(CLAIMS[kind], scope, f"no cell defended by {kind} alone", "not measured"))
            continue
        verdicts = [d["verdict"] for d in mine]
        if "mitigates" in verdicts:
            verdict = "confirmed" if expected else "contradicted"
        elif all(v in ("costs utility", "no privacy gain") for v in verdicts):
            verdict = "contradicted" if expected else "confirmed"
        else:
            verdict = "not resolved"
        measured = "; ".join(f"{d['defense'].removeprefix(kind).strip()}: {d['verdict']}" for d in mine)
        resolve = "more seeds for: " + ", ".join(d["cell"] for d in mine if d["verdict"] == "not resolved")
        rows.append(_row(CLAIMS[kind], scope, measured, verdict, resolve if verdict == "not resolved" else ""))
    return rows


# --- reproduction.md ------------------------------------------------------------------------------------


def machine() -> str:
    """The machine in words: OS, CPU, cores, torch and the GPU where there is one."""
    import os

    import torch

    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    from .models import resolve_dtype

    cpu = _cpu_name() or platform.machine()
    bf16 = "with" if resolve_dtype("auto", "cpu") == torch.bfloat16 else "without"
    where = f"{platform.system()}, {cpu} ({bf16} bf16 arithmetic), {os.cpu_count()} CPU cores"
    return f"{where}{gpu}; torch {torch.__version__}"


def _cpu_name() -> str:
    """The CPU's model name on Linux ('' elsewhere): how fast a CPU run is depends on it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")


def _table(rows: list[dict], columns: Sequence[str]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(str(r.get(c, "")).replace("|", "/") for c in columns) + " |" for r in rows]


def markdown(cells: Sequence[Cell], frame: pd.DataFrame, command: str, source: str, when: str, where: str) -> str:
    """reproduction.md of a finished grid (`frame`: its grid.csv rows) and the cells it ran."""
    from .report import seed_frame, seeds_markdown

    runs = runs_frame(cells, frame)
    rows, defended = claims(runs)
    seeds = sorted(set(runs["seed"]))
    for d in defended:
        d |= {k: _fmt(d[k]) for k in MITIGATION_FIGURES if k in d}
    lines = [
        "# Reproducing LoRA-Leak's claims",
        "",
        "Generated by `loraleak reproduce` from the grid it ran; do not edit by hand.",
        "",
        f"- **Measured:** {when}.",
        f"- **Machine:** {where}.",
        f"- **Command:** `{command}`; **config:** `{source}`: {len(set(runs['group']))} cells, seeds {seeds}, "
        f"{len(runs)} runs (each cell's runs in `cells/CELL_seed=S/`; every figure in `grid.csv`).",
        *_time(frame),
        *_tpr_caveat(frame),
        "- **Uncertainty:** every difference is paired by seed (seed S of two cells drew the same split and "
        "training seed): mean ± sd [95% Student-t interval] over seeds. A claim is *confirmed* or "
        "*contradicted* when the interval excludes no effect; otherwise *not resolved*, with the seeds "
        "that would resolve it were the measured mean and sd the truth.",
        f"- **Mitigates while keeping utility** (`loraleak.reproduction.mitigation`): against the undefended "
        "cell of the same recipe and seeds, the best attack's AUC falls by more than its interval's "
        "half-width and its TPR@1%FPR does not rise by more than its own, while the mean task utility "
        f"loses at most {UTILITY_TOLERANCE:.0%} of the undefended model's and stays above the pre-trained "
        "model's. *Costs utility*: the loss's interval lies above that tolerance (or the model is no better "
        f"than the pre-trained one); *no privacy gain*: the AUC drop's interval lies below {MIN_EFFECT}.",
        "",
        "## Claims",
        "",
        *_table(rows, ["claim", "scope", "loraleak measured", "verdict", "to resolve"]),
        "",
        "## Defenses, cell by cell",
        "",
        "AUC drop, TPR drop: undefended minus defended; utility loss: relative to the undefended model.",
        "",
        *_table(defended, ["scope", "cell", "defense", "baseline", *MITIGATION_FIGURES, "verdict", "why"]),
        "",
        "## Every cell over its seeds",
        "",
        seeds_markdown(seed_frame(frame if "group" in frame else frame.assign(group=frame["cell"]))),
    ]
    return "\n".join(lines)


def _time(frame: pd.DataFrame) -> list[str]:
    if "time_s" not in frame:
        return []
    minutes = frame["time_s"].sum() / 60
    return [
        f"- **Time:** {minutes:.0f} min, the sum of the runs' own times (a run reused from the cache counts the time "
        "it took when it ran)."
    ]


def _tpr_caveat(frame: pd.DataFrame) -> list[str]:
    """A TPR at 1% FPR that the non-members cannot resolve is the TPR at no false positive: say so."""
    from .report import min_nonmembers_for, resolvable

    if "nonmembers" not in frame or resolvable(0.01, n := int(frame["nonmembers"].min())):
        return []
    needed = min_nonmembers_for(0.01)
    return [
        f"- **TPR@1%FPR** with {n} non-members (1% FPR needs {needed}): below one false positive, so each "
        "TPR here is the TPR at no false positive, the strictest threshold; the criterion compares those."
    ]


def write(root, cells: Sequence[Cell], frame: pd.DataFrame, command: str, source: str) -> Any:
    """root/reproduction.md, written atomically; its path."""
    from .cache import atomic

    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    with atomic(root / "reproduction.md") as tmp:
        tmp.write_text(markdown(cells, frame, command, source, when, machine()), encoding="utf-8")
    return root / "reproduction.md"
