"""Does attack A beat attack B on one run? Paired-bootstrap intervals of their differences.

Two attacks scored on the same examples are not independent: their separate CIs overlap even when one
is better on nearly every resample. Here both are evaluated on the same resamples
(`metrics.paired_bootstrap`), so each contrast gets its own interval: AUC_A - AUC_B - margin, and
TPR_A - factor x TPR_B at 1% FPR (factor 2: "finds twice the members").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import metrics as M
from .errors import UserError
from .report import min_nonmembers_for, resolvable


class CompareError(UserError, ValueError):
    """The directory holds no labelled scores.csv, or it has no column for a named attack."""


def labelled_scores(directory: Path, attacks: tuple[str, ...]) -> pd.DataFrame:
    """DIR/scores.csv, checked: labelled, with finite scores for each of `attacks`."""
    path = Path(directory) / "scores.csv"
    if not path.is_file():
        raise CompareError(f"{path} does not exist: give the output directory of a finished run or audit")
    frame = pd.read_csv(path)
    if "split" not in frame:
        raise CompareError(f"{path} has no split column (unlabelled scores): nothing to compare on")
    for name in attacks:
        if name not in frame.columns[2:]:
            raise CompareError(f"{path} has no attack '{name}' (it has: {', '.join(frame.columns[2:])})")
        if not np.isfinite(frame[name]).all():
            raise CompareError(f"{path}: attack '{name}' has scores that are not finite")
    return frame


def compare(
    directory: Path,
    a: str,
    b: str,
    *,
    tpr_factor: float = 1.0,
    auc_margin: float = 0.0,
    bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> str:
    """A text: each contrast's point value and percentile interval over paired resamples, and the share
    of resamples in which A beats B by both margins."""
    if bootstrap < 1:
        raise CompareError(f"--bootstrap must be at least 1, got {bootstrap}")
    frame = labelled_scores(directory, (a, b))
    y = (frame["split"] == "member").to_numpy().astype(int)
    draws = M.paired_bootstrap(y, {a: frame[a].to_numpy(), b: frame[b].to_numpy()}, bootstrap, seed)
    point = {n: M.summary(y, frame[n].to_numpy()) for n in (a, b)}
    tpr = "tpr@0.01fpr"
    contrasts = {
        f"AUC {a} - AUC {b}" + (f" - {auc_margin:g}" if auc_margin else ""): (
            point[a]["auc"] - point[b]["auc"] - auc_margin,
            draws[a]["auc"] - draws[b]["auc"] - auc_margin,
        ),
        f"TPR@1%FPR {a} - {tpr_factor:g} x {b}": (
            point[a][tpr] - tpr_factor * point[b][tpr],
            draws[a][tpr] - tpr_factor * draws[b][tpr],
        ),
    }
    lo, hi = (1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100
    lines = [f"{a} against {b}: {bootstrap} paired bootstrap resamples, {confidence:.0%} percentile intervals"]
    for label, (value, d) in contrasts.items():
        lines.append(f"  {label}: {value:+.3f} [{np.percentile(d, lo):+.3f}, {np.percentile(d, hi):+.3f}]")
    both = np.logical_and.reduce([d >= 0 for _, d in contrasts.values()])
    lines.append(f"  resamples where {a} meets both: {both.mean():.3f}")
    n = int((y == 0).sum())
    if not resolvable(0.01, n):
        need = min_nonmembers_for(0.01)
        lines.append(f"  ({n} non-members: TPR@1%FPR is the TPR at no false positive; {need} resolve it)")
    return "\n".join(lines)
