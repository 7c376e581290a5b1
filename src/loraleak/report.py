"""Write what a run found: results.json, scores.csv, roc.csv, roc.png, and the printed table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import metrics as M


def scores_frame(ids: list[str], labels: np.ndarray, scores: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per target sample: id, split, one column per attack."""
    df = pd.DataFrame({"id": ids, "split": np.where(labels == 1, "member", "nonmember")})
    for name, s in scores.items():
        df[name] = s
    return df


def roc_frame(labels: np.ndarray, scores: dict[str, np.ndarray]) -> pd.DataFrame:
    rows = []
    for name, s in scores.items():
        fpr, tpr, thr = M.roc(labels, s)
        rows.append(pd.DataFrame({"attack": name, "fpr": fpr, "tpr": tpr, "threshold": thr}))
    return pd.concat(rows, ignore_index=True)


def plot_roc(roc: pd.DataFrame, results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for name, g in roc.groupby("attack", sort=False):
        ax.plot(g["fpr"].clip(lower=1e-4), g["tpr"].clip(lower=1e-4),
                label=f"{name} (AUC {results[name]['auc']:.3f})")
    ax.plot([1e-4, 1], [1e-4, 1], "k:", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="false positive rate", ylabel="true positive rate",
           xlim=(1e-3, 1), ylim=(1e-3, 1), title="membership inference ROC (log-log)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(attack_metrics: dict[str, dict]) -> str:
    """attack | AUC [CI] | TPR@1%FPR | TPR@0.1%FPR, as fixed-width text."""
    head = f"{'attack':<16} {'AUC':>6} {'95% CI':>15} {'TPR@1%FPR':>10} {'TPR@0.1%FPR':>12}"
    lines = [head, "-" * len(head)]
    for name, m in attack_metrics.items():
        ci = m.get("ci", {}).get("auc")
        ci_s = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
        lines.append(f"{name:<16} {m['auc']:>6.3f} {ci_s:>15} {m['tpr@0.01fpr']:>10.3f} {m['tpr@0.001fpr']:>12.3f}")
    return "\n".join(lines)


def utility_line(u: dict) -> str:
    """One line: the task utility of the fine-tuned and the pre-trained model on the held-out examples."""
    def fmt(m):
        return ", ".join(f"{k.replace('_', '-')} {v:.3f}" for k, v in m.items())
    return f"utility on {u['held_out']} held-out examples: fine-tuned {fmt(u['target'])} | pre-trained {fmt(u['pretrained'])}"


def write(out: Path, results: dict, scores: pd.DataFrame, roc: pd.DataFrame) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=_jsonable) + "\n")
    scores.to_csv(out / "scores.csv", index=False)
    roc.to_csv(out / "roc.csv", index=False)
    plot_roc(roc, results["attacks"], out / "roc.png")


def _jsonable(o):
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot write {type(o).__name__} to JSON")
