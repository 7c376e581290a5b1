"""Write what a run found: results.json, scores.csv, records.csv, roc.csv, roc.png, the printed table
(report.html: `report_html`), and a grid's grid.csv, grid.md and privacy-utility figure."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from . import metrics as M
from .cache import RunFiles, atomic

if TYPE_CHECKING:
    from .config import Cell
    from .results import RunResult


def scores_frame(ids: list[str], labels: np.ndarray | None, scores: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per target sample: id, split (when labels are known), one column per attack."""
    df = pd.DataFrame({"id": ids})
    if labels is not None:
        df["split"] = np.where(labels == 1, "member", "nonmember")
    for name, s in scores.items():
        df[name] = s
    return df


def roc_frame(labels: np.ndarray, scores: dict[str, np.ndarray]) -> pd.DataFrame:
    rows = []
    for name, s in scores.items():
        fpr, tpr, thr = M.roc(labels, s)
        rows.append(pd.DataFrame({"attack": name, "fpr": fpr, "tpr": tpr, "threshold": thr}))
    return pd.concat(rows, ignore_index=True)


def roc_figure(roc: pd.DataFrame, results: dict, names: Sequence[str] | None = None):
    """Log-log ROC curves (the low-FPR end is where membership inference matters) of `names` (all)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for name, g in roc.groupby("attack", sort=False):
        if names is None or name in names:
            ax.plot(
                g["fpr"].clip(lower=1e-4), g["tpr"].clip(lower=1e-4), label=f"{name} (AUC {results[name]['auc']:.3f})"
            )
    ax.plot([1e-4, 1], [1e-4, 1], "k:", lw=0.8)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="false positive rate",
        ylabel="true positive rate",
        xlim=(1e-3, 1),
        ylim=(1e-3, 1),
        title="membership inference ROC (log-log)",
    )
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def plot_roc(roc: pd.DataFrame, results: dict, path: Path) -> None:
    save_png(roc_figure(roc, results), path, dpi=120)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path, dpi: int) -> None:
    fig.savefig(path, dpi=dpi, format="png")
    pyplot().close(fig)


def min_nonmembers_for(fpr: float) -> int:
    """Non-members needed to resolve a false positive rate: one false positive must be <= `fpr`
    of them, else TPR@`fpr` is just the TPR at zero false positives (see `metrics`)."""
    return int(np.ceil(1 / fpr - 1e-9))  # the tolerance keeps 1 / 0.001 = 1000.0000000000001 at 1000


def resolvable(fpr: float, nonmembers: int) -> bool:
    return nonmembers >= min_nonmembers_for(fpr)


def tpr_cell(tpr: float, fpr: float, nonmembers: int | None) -> str:
    if nonmembers is None or resolvable(fpr, nonmembers):
        return f"{tpr:.3f}"
    return f"n/a (needs {min_nonmembers_for(fpr)})"


def table(attack_metrics: dict[str, dict], nonmembers: int | None = None) -> str:
    """attack | AUC [CI] | TPR@1%FPR | TPR@0.1%FPR, as fixed-width text. Given the number of
    `nonmembers`, a TPR at an FPR they cannot resolve shows "n/a (needs N)"; None shows every number."""
    rows = []
    for name, m in attack_metrics.items():
        ci = m.get("ci", {}).get("auc")
        ci_s = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
        tpr1 = tpr_cell(m["tpr@0.01fpr"], 0.01, nonmembers)
        tpr01 = tpr_cell(m["tpr@0.001fpr"], 0.001, nonmembers)
        rows.append((name, m["auc"], ci_s, tpr1, tpr01))
    # the TPR columns widen only for an "n/a (needs N)" cell, so the numbers-only table is unchanged
    w1 = max([10, *(len(r[3]) for r in rows)])
    w2 = max([12, *(len(r[4]) for r in rows)])
    head = f"{'attack':<16} {'AUC':>6} {'95% CI':>15} {'TPR@1%FPR':>{w1}} {'TPR@0.1%FPR':>{w2}}"
    lines = [head, "-" * len(head)]
    lines += [f"{n:<16} {a:>6.3f} {ci_s:>15} {t1:>{w1}} {t2:>{w2}}" for n, a, ci_s, t1, t2 in rows]
    return "\n".join(lines)


def summary(result: RunResult) -> str:
    """What `loraleak run` and `loraleak audit` print: the setting, the attack table, the verdict, the
    blind baseline (with a warning when the split alone tells members apart), the utility line."""
    lines = [_setting(result), table(result.attacks, nonmembers=result.split.nonmembers), verdict(result)]
    if result.blind_baseline:
        lines.append(blind_line(result.blind_baseline))
    return "\n".join(lines + ([utility_line(result.utility)] if result.utility else []))


def _setting(result: RunResult) -> str:
    cfg, s, a = result.config, result.split, result.audit
    sizes = f"{s.members} members vs {s.nonmembers} non-members"
    if a:
        audited = (
            f"fine-tuned {a['finetuned']} (merged, sha256 {a['finetuned_sha256'][:12]}) against {cfg.model.name}"
            if a.get("finetuned")
            else f"{cfg.model.name} + adapter {a['adapter']} "
            f"({a['adapter_variant']}, sha256 {a['adapter_sha256'][:12]})"
        )
        files = f"{a['members_file']} / {a['nonmembers_file']}"
        return f"{audited}: {sizes} from {files} ({s.duplicates_dropped} overlaps dropped)"
    dp = f"; DP-SGD epsilon {result.privacy['epsilon']:.2f} at delta {cfg.dp.delta:g}" if result.privacy else ""
    loss = result.training.final_loss
    return (
        f"{cfg.model.name} on {cfg.task.name}: {sizes} "
        f"({cfg.model.dtype}, LoRA r={cfg.lora.r} on {','.join(cfg.lora.target_modules)}, "
        f"{cfg.train.epochs} epochs; final train loss {'-' if loss is None else f'{loss:.3f}'}{dp})"
    )


def verdict(result: RunResult) -> str:
    """The finding in one sentence a provider can act on: the strongest attack and the access it needs,
    its AUC and the share of members it finds at 1% false positives (with CIs), and what calibrating by
    the pre-trained model adds (the best `-pt` or `-pt-token` attack against its uncalibrated self)."""
    from .attacks import ATTACKS

    m = result.attacks
    best = max(m, key=lambda n: m[n]["auc"])
    ci = m[best].get("ci", {})
    access = ATTACKS[best].access if best in ATTACKS else ("?",)  # an attack a plugin registered, not loaded now

    def interval(key: str) -> str:
        return f" [{ci[key][0]:.3f}, {ci[key][1]:.3f}]" if key in ci else ""

    found = (
        f"finds {m[best]['tpr@0.01fpr']:.1%}{interval('tpr@0.01fpr')} of members at 1% false positives"
        if resolvable(0.01, result.split.nonmembers)
        else f"its TPR at 1% false positives needs {min_nonmembers_for(0.01)} non-members"
    )
    text = (
        f"Verdict: the strongest attack, {best} ({m[best]['family']}; needs {', '.join(access)}), "
        f"reaches AUC {m[best]['auc']:.3f}{interval('auc')} and {found}"
    )
    pairs = [(n, base) for n in m for suffix in ("-pt", "-pt-token")
             if n.endswith(suffix) and (base := n.removesuffix(suffix)) in m]  # fmt: skip
    if pairs:
        pt, plain = max(pairs, key=lambda p: m[p[0]]["auc"])
        text += f"; the pre-trained reference adds {m[pt]['auc'] - m[plain]['auc']:+.3f} AUC ({plain} -> {pt})"
    return text + "."


def blind_line(blind: dict) -> str:
    """The blind baseline's AUC, and a warning when it tells members from non-members without the model."""
    ci = blind.get("auc_ci")
    line = f"blind baseline (no model: {blind['features']}): AUC {blind['auc']:.3f}" + (
        f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
    )
    if blind["shifted"]:
        line += (
            "\nWARNING: a model-free classifier tells members from non-members: they differ in distribution, so "
            "the attacks may measure the split, not the adapter (Das et al. 2024). Use a random split of one pool."
        )
    return line


def utility_line(u: dict) -> str:
    """One line: the task utility of the fine-tuned and the pre-trained model on the held-out examples."""

    def fmt(m):
        return ", ".join(f"{k.replace('_', '-')} {v:.3f}" for k, v in m.items())

    return (
        f"utility on {u['held_out']} held-out examples: fine-tuned {fmt(u['target'])} | "
        f"pre-trained {fmt(u['pretrained'])}"
    )


def write(files: RunFiles, result: RunResult, texts: dict[str, str] | None = None) -> None:
    """results.json, scores.csv, records.csv (with each record's text from `texts`, id -> text, unless
    None), roc.csv, roc.png and report.html of a run."""
    files.root.mkdir(parents=True, exist_ok=True)
    labels = (result.scores["split"] == "member").to_numpy(int)
    roc = roc_frame(labels, {name: result.scores[name].to_numpy() for name in result.attacks})
    with atomic(files.results) as tmp:
        tmp.write_text(json.dumps(result.to_dict(), indent=2, default=_jsonable) + "\n")
    with atomic(files.scores) as tmp:
        result.scores.to_csv(tmp, index=False)
    with atomic(files.roc_csv) as tmp:
        roc.to_csv(tmp, index=False)
    with atomic(files.roc_png) as tmp:
        plot_roc(roc, result.attacks, tmp)
    with atomic(files.records) as tmp:
        records_frame(result.scores, list(result.attacks), texts).to_csv(tmp, index=False)
    from .report_html import write_run_page

    write_run_page(files.root)  # last: it reads the files above, as `loraleak report DIR` does


TEXT_CHARS = 300  # of each record's text kept in records.csv (whitespace collapsed)


def records_frame(scores: pd.DataFrame, attacks: list[str], texts: dict[str, str] | None = None) -> pd.DataFrame:
    """records.csv: each scored record's id, split, and per attack its score and empirical p-value
    against the non-members (metrics.empirical_pvalues): a member with a small p-value is exposed.
    Given `texts` (id -> text), the start of each record's text is the last column."""
    out = scores[["id", "split"]].copy()
    nonmember = (scores["split"] == "nonmember").to_numpy()
    for name in attacks:
        values = scores[name].to_numpy(float)
        out[name] = values
        out[f"{name}_p"] = M.empirical_pvalues(values, values[nonmember])
    if texts is not None:
        out["text"] = [shortened(texts[i], TEXT_CHARS) for i in out["id"]]
    return out


def shortened(text: str, chars: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= chars else flat[: chars - 1] + "…"


def _jsonable(o):
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


# --- grids: one row per cell, a table and the privacy-utility plot ---------------------------------

PRIMARY_UTILITY = {"classification": "accuracy", "generation": "rouge_l"}


def grid_row(cell: Cell, result: RunResult, seconds: float, keys: Sequence[str] = ()) -> dict:
    """What a grid table shows of one cell: its value of every setting the grid varies (`keys`),
    epsilon, the best attack, every attack's AUC and TPR@1%FPR, and utility of the fine-tuned and
    the pre-trained model."""
    attacks, u, p = result.attacks, result.utility, result.privacy
    best = max(attacks, key=lambda a: attacks[a]["auc"])
    row = {
        "cell": cell.name,
        **({"group": cell.group, "seed": cell.seed} if cell.seed is not None else {}),
        **{k: _plain(v) for k, v in cell.values(keys or cell.settings).items()},
        "epsilon": p["epsilon"] if p else float("inf"),
        "nonmembers": result.split.nonmembers,
        "best_attack": best,
        "best_auc": attacks[best]["auc"],
        "best_tpr@1%fpr": max(a["tpr@0.01fpr"] for a in attacks.values()),
    }
    if u:
        metric = PRIMARY_UTILITY[u["kind"]]
        row.update(
            {"utility_metric": metric, "utility": u["target"][metric], "utility_pretrained": u["pretrained"][metric]}
        )
        row.update({k: v for k, v in u["target"].items() if k != metric})
    row.update({f"auc:{a}": m["auc"] for a, m in attacks.items()})
    row.update({f"tpr@1%fpr:{a}": m["tpr@0.01fpr"] for a, m in attacks.items()})
    row.update(
        {
            "final_train_loss": result.training.final_loss,
            "time_s": round(seconds, 1),
            "output": result.config.output_dir,
        }
    )
    return row


def grid_frame(rows: list[dict]) -> pd.DataFrame:
    """The grid table of its rows. With seeds on some cells only (a variant's own `seeds:` may be
    left out), a cell without one is a group of its own, seed empty."""
    frame = pd.DataFrame(rows)
    if "group" in frame:
        frame["group"], frame["seed"] = frame["group"].fillna(frame["cell"]), frame["seed"].astype("Int64")
        frame = frame[["cell", "group", "seed", *(c for c in frame.columns if c not in ("cell", "group", "seed"))]]
    return frame


def _plain(v):
    return ",".join(map(str, v)) if isinstance(v, list) else v


def grid_markdown(frame: pd.DataFrame) -> str:
    """The grid as a Markdown table: settings, epsilon, best attack, utility, then each attack's
    AUC / TPR@1%FPR. With seeds, first the table over seeds (`seeds_markdown`), then every run's."""
    if "group" in frame:
        return seeds_markdown(seed_frame(frame)) + "\nEvery run (one per seed):\n\n" + runs_markdown(frame)
    return runs_markdown(frame)


def runs_markdown(frame: pd.DataFrame) -> str:
    attacks = [c.split(":", 1)[1] for c in frame.columns if c.startswith("auc:")]
    lead = list(frame.columns[: frame.columns.get_loc("epsilon")])  # the cell and the settings it varies
    metric = frame["utility_metric"].iloc[0] if "utility_metric" in frame else None
    head = lead + ["epsilon", "best attack (AUC)", "best TPR@1%FPR"]
    head += [f"{metric} (fine-tuned / pre-trained)"] if metric else []
    head += [f"{a} AUC / TPR@1%" for a in attacks] + ["time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in frame.iterrows():
        cells = [str(r[c]) for c in lead]
        n = int(r["nonmembers"])  # a TPR at 1% FPR that the cell's non-members cannot resolve shows n/a
        cells += [
            "-" if np.isinf(r["epsilon"]) else f"{r['epsilon']:.2f}",
            f"{r['best_attack']} ({r['best_auc']:.3f})",
            tpr_cell(r["best_tpr@1%fpr"], 0.01, n),
        ]
        cells += [f"{r['utility']:.3f} / {r['utility_pretrained']:.3f}"] if metric else []
        cells += [f"{r[f'auc:{a}']:.3f} / {tpr_cell(r[f'tpr@1%fpr:{a}'], 0.01, n)}" for a in attacks]
        cells += [f"{r['time_s'] / 60:.1f} min"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def privacy_utility_figure(frame: pd.DataFrame):
    """x: the fine-tuned model's utility; y: best-attack AUC (left) and best TPR@1%FPR (right); one
    labelled point per cell. The pre-trained model (no adapter: utility for free, nothing leaked)
    marks where fine-tuning starts from. With seeds, one point per cell at its mean over seeds, with
    error bars of the 95% t-interval on both axes."""
    plt = pyplot()
    seeded = "group" in frame
    frame = seed_frame(frame) if seeded else frame
    metric = frame["utility_metric"].iloc[0] if "utility_metric" in frame else None
    x = frame["utility"] if metric else np.arange(len(frame))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, col, label, chance in (
        (axes[0], "best_auc", "best attack AUC", 0.5),
        (axes[1], "best_tpr@1%fpr", "best TPR at 1% FPR", 0.01),
    ):
        ax.scatter(x, frame[col], zorder=3)
        if seeded:
            xerr = _bars(frame, "utility") if metric else None
            ax.errorbar(x, frame[col], yerr=_bars(frame, col), xerr=xerr, fmt="none", lw=0.8, capsize=2, zorder=2)
        xs, ys = np.asarray(x, float), np.asarray(frame[col], float)
        dx, dy = (np.ptp(xs) or 1.0) * 0.04, (np.ptp(ys) or 1.0) * 0.04
        for i, name in enumerate(frame["cell"]):
            near = sum(abs(xs[j] - xs[i]) < dx and abs(ys[j] - ys[i]) < dy for j in range(i))
            ax.annotate(name, (xs[i], ys[i]), textcoords="offset points", xytext=(5, 3 - 9 * near), fontsize=7)
        if metric:
            pre = frame["utility_pretrained"].iloc[0]
            ax.scatter([pre], [chance], marker="x", color="k", zorder=3)
            ax.annotate("pre-trained", (pre, chance), textcoords="offset points", xytext=(4, -10), fontsize=7)
        ax.axhline(chance, color="k", lw=0.6, ls=":")
        ax.set(
            xlabel=f"utility: {metric.replace('_', '-')} of the fine-tuned model on held-out data"
            if metric
            else "cell",
            ylabel=label,
        )
        ax.grid(alpha=0.3)
    over = "; mean and 95% interval over seeds" if seeded else ""
    fig.suptitle(f"privacy-utility trade-off (up = more leakage, right = more useful{over})", fontsize=10)
    fig.tight_layout()
    return fig


def plot_privacy_utility(frame: pd.DataFrame, path: Path) -> None:
    save_png(privacy_utility_figure(frame), path, dpi=130)


GRID_FILES = ("grid.csv", "grid.md", "privacy_utility.png", "report.html", "grid_seeds.csv")


def write_grid(out: Path, frame: pd.DataFrame) -> None:
    out.mkdir(parents=True, exist_ok=True)
    table, markdown, plot = (out / name for name in GRID_FILES[:3])
    with atomic(table) as tmp:
        frame.to_csv(tmp, index=False)
    if "group" in frame:
        with atomic(out / GRID_FILES[4]) as tmp:
            seed_frame(frame).to_csv(tmp, index=False)
    with atomic(markdown) as tmp:
        tmp.write_text(grid_markdown(frame))
    with atomic(plot) as tmp:
        plot_privacy_utility(frame, tmp)
    from .report_html import write_grid_page

    write_grid_page(out)


# --- grids with seeds: each cell's figures over its seeds ---------------------------------------------

SPREAD = ("sd", "ci_low", "ci_high")  # seed_frame's columns beside each figure's mean: FIGURE:sd, ...


def seed_frame(frame: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """One row per cell of a grid run with `seeds:` (its runs share `group`): the settings, the number
    of seeds, and for every figure (best AUC and TPR, utility, each attack's AUC and TPR, loss, time)
    its mean over seeds and FIGURE:sd, FIGURE:ci_low, FIGURE:ci_high (`metrics.over_seeds`). The best
    AUC is the mean of each run's best attack's AUC; best_attack names the attack of highest mean AUC.
    epsilon and the non-members are the same in every seed of a cell (the recipe fixes them)."""
    lead = list(frame.columns[: frame.columns.get_loc("epsilon")])
    settings = [c for c in lead if c not in ("cell", "group", "seed")]
    fixed = ["epsilon", "nonmembers", *(["utility_metric"] if "utility_metric" in frame else [])]
    figures = [
        c for c in frame.columns[frame.columns.get_loc("epsilon") :]
        if c not in fixed and pd.api.types.is_numeric_dtype(frame[c])
    ]  # fmt: skip
    rows = []
    for group, runs in frame.groupby("group", sort=False):
        aucs = {c.split(":", 1)[1]: runs[c].mean() for c in runs.columns if c.startswith("auc:")}
        row = {"cell": group, **runs.iloc[0][settings].to_dict(), "seeds": len(runs), **runs.iloc[0][fixed].to_dict()}
        row["best_attack"] = max(aucs, key=lambda a: aucs[a])
        for c in figures:
            stats = M.over_seeds(runs[c].to_numpy(), confidence)
            row |= {c: stats["mean"], **{f"{c}:{k}": stats[k] for k in SPREAD}}
        rows.append(row)
    return pd.DataFrame(rows)


def _bars(frame: pd.DataFrame, col: str) -> np.ndarray:
    """Asymmetric error bars [below, above] of a seed_frame column's interval (0 where unknown)."""
    mean = frame[col].to_numpy(float)
    bars = np.vstack([mean - frame[f"{col}:ci_low"].to_numpy(float), frame[f"{col}:ci_high"].to_numpy(float) - mean])
    return np.nan_to_num(bars)


def spread(r: pd.Series, col: str, interval: bool = True) -> str:
    """mean ± sd [interval] of one seed_frame figure; just the mean for one seed; n/a for a TPR at 1%
    FPR that the cell's non-members cannot resolve."""
    if col.startswith("tpr@1%") and not resolvable(0.01, int(r["nonmembers"])):
        return tpr_cell(r[col], 0.01, int(r["nonmembers"]))
    if not np.isfinite(r[f"{col}:sd"]):
        return f"{r[col]:.3f}"
    text = f"{r[col]:.3f} ± {r[f'{col}:sd']:.3f}"
    return text + f" [{r[f'{col}:ci_low']:.3f}, {r[f'{col}:ci_high']:.3f}]" * interval


def seeds_markdown(seeds: pd.DataFrame) -> str:
    """A seed_frame as Markdown: mean ± sd [95% t-interval] over seeds of the best attack's AUC and
    TPR@1%FPR and the utility; mean ± sd of each attack's AUC / TPR@1%FPR."""
    attacks = [c.split(":", 1)[1] for c in seeds.columns if c.startswith("auc:") and c.count(":") == 1]
    lead = list(seeds.columns)[: list(seeds.columns).index("seeds") + 1]
    metric = seeds["utility_metric"].iloc[0] if "utility_metric" in seeds else None
    head = lead + ["epsilon", "best attack", "best AUC", "best TPR@1%FPR"]
    head += [f"{metric} (fine-tuned)"] if metric else []
    head += [f"{a} AUC / TPR@1%" for a in attacks]
    lines = [
        "Over seeds: mean ± sd [95% t-interval] (the best attack's AUC and TPR: each run's best, averaged).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for _, r in seeds.iterrows():
        cells = [str(r[c]) for c in lead]
        cells += ["-" if np.isinf(r["epsilon"]) else f"{r['epsilon']:.2f}", str(r["best_attack"])]
        cells += [spread(r, "best_auc"), spread(r, "best_tpr@1%fpr")] + ([spread(r, "utility")] if metric else [])
        cells += [f"{spread(r, f'auc:{a}', False)} / {spread(r, f'tpr@1%fpr:{a}', False)}" for a in attacks]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
