"""Membership-inference metrics as pure functions of (labels, scores); ROC from scikit-learn.

labels: 1 = member, 0 = non-member. scores: higher = more likely member.
TPR at FPR a is the highest TPR among ROC points with FPR <= a (as in Carlini et al., S&P 2022).
With n non-members the smallest non-zero FPR is 1/n, so below that TPR@a is the TPR at zero
false positives.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

FPR_LEVELS = (0.01, 0.001)


def _check(labels, scores):
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in shape")
    if not np.isfinite(scores).all():
        raise ValueError(f"{int((~np.isfinite(scores)).sum())} scores are not finite")
    if len(np.unique(labels)) != 2:
        raise ValueError("need both members (1) and non-members (0)")
    return labels, scores


def roc(labels, scores):
    """(fpr, tpr, thresholds), all thresholds kept so the curve can be redrawn exactly."""
    labels, scores = _check(labels, scores)
    return roc_curve(labels, scores, drop_intermediate=False)


def auc(labels, scores) -> float:
    return float(roc_auc_score(*_check(labels, scores)))


def _tpr_at(fpr, tpr, fpr_max: float) -> float:
    return float(tpr[fpr <= fpr_max].max())  # roc_curve always includes (0, 0), so never empty


def _best_balanced_accuracy(fpr, tpr) -> float:
    return float(((tpr + 1 - fpr) / 2).max())


def tpr_at_fpr(labels, scores, fpr_max: float) -> float:
    fpr, tpr, _ = roc(labels, scores)
    return _tpr_at(fpr, tpr, fpr_max)


def best_balanced_accuracy(labels, scores) -> float:
    """max over thresholds of (TPR + TNR) / 2."""
    fpr, tpr, _ = roc(labels, scores)
    return _best_balanced_accuracy(fpr, tpr)


def summary(labels, scores) -> dict:
    fpr, tpr, _ = roc(labels, scores)  # one ROC for every number
    out = {"auc": auc(labels, scores)}
    out.update({f"tpr@{a:g}fpr": _tpr_at(fpr, tpr, a) for a in FPR_LEVELS})
    out["best_balanced_accuracy"] = _best_balanced_accuracy(fpr, tpr)
    return out


def evaluate(labels, scores, bootstrap: int = 200, confidence: float = 0.95, seed: int = 0) -> dict:
    """`summary` plus percentile-bootstrap confidence intervals (members and non-members resampled
    separately, so every resample keeps the class sizes)."""
    labels, scores = _check(labels, scores)
    point = summary(labels, scores)
    out = dict(point)
    if bootstrap > 0:
        draws = paired_bootstrap(labels, {"scores": scores}, bootstrap, seed)["scores"]
        lo, hi = (1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100
        out["ci"] = {k: [float(np.percentile(v, lo)), float(np.percentile(v, hi))] for k, v in draws.items()}
        out["ci_level"] = confidence
    return out


def paired_bootstrap(labels, scores: dict, bootstrap: int = 1000, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Every attack's `summary` on the same resamples of the examples (members and non-members
    resampled apart; `evaluate`'s intervals are these draws for one attack), as
    {attack: {metric: [bootstrap] values}}. Two attacks' draws pair up, so a contrast between them
    (AUC_a - AUC_b, TPR_a - 2 TPR_b) gets its own interval rather than two overlapping ones."""
    labels = np.asarray(labels)
    checked = {name: _check(labels, s)[1] for name, s in scores.items()}
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    draws: dict[str, dict[str, list[float]]] = {name: {} for name in checked}
    for _ in range(bootstrap):
        idx = np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]
        for name, s in checked.items():
            for k, v in summary(labels[idx], s[idx]).items():
                draws[name].setdefault(k, []).append(v)
    return {name: {k: np.asarray(v) for k, v in d.items()} for name, d in draws.items()}


# --- over seeds: one figure measured in several independent runs ---------------------------------


def over_seeds(values, confidence: float = 0.95) -> dict:
    """Mean, sample standard deviation (ddof 1) and the Student-t interval for the mean of one figure
    measured once per seed (each seed draws its own split and trains its own adapter: independent
    runs). One value: sd and the interval are NaN (one run says nothing about its spread)."""
    from scipy.stats import t

    x = np.asarray(values, dtype=np.float64)
    n, mean = len(x), float(np.mean(x))
    if n < 2:
        return {"mean": mean, "sd": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": n}
    sd = float(np.std(x, ddof=1))
    half = float(t.ppf((1 + confidence) / 2, n - 1)) * sd / np.sqrt(n)
    return {"mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half, "n": n}


def seeds_needed(mean: float, sd: float, confidence: float = 0.95) -> float:
    """Seeds for which the t-interval's half-width falls below |mean| (so its sign is resolved), were
    the measured mean and sd the truth: the smallest n >= 2 with t(n-1) sd / sqrt(n) < |mean|. inf
    when mean is 0 or sd unknown."""
    from scipy.stats import t

    if not np.isfinite(sd) or mean == 0:
        return float("inf")
    for n in range(2, 10_001):
        if t.ppf((1 + confidence) / 2, n - 1) * sd / np.sqrt(n) < abs(mean):
            return float(n)
    return float("inf")


# --- task utility: how well the fine-tuned model does its job (pure functions too) ----------------


def rouge_l(predictions: list[str], references: list[str]) -> float:
    """Mean ROUGE-L F1 (the `rouge-score` package, Porter stemming) of predictions against references."""
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return float(np.mean([scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references, strict=True)]))


def perplexity(token_logprobs: np.ndarray) -> float:
    """exp of the mean negative log-likelihood over all tokens pooled (corpus-level, token-weighted)."""
    return float(np.exp(-np.mean(np.asarray(token_logprobs, dtype=np.float64))))


def classification(true: list[str], predicted: list[str]) -> dict:
    """Accuracy and macro-F1 (scikit-learn) of predicted labels."""
    from sklearn.metrics import accuracy_score, f1_score

    return {
        "accuracy": float(accuracy_score(true, predicted)),
        "macro_f1": float(f1_score(true, predicted, average="macro", zero_division=0)),
    }


def empirical_pvalues(scores: np.ndarray, null: np.ndarray) -> np.ndarray:
    """For each score, the share of `null` scores (the non-members') at least as high: how often a record
    the model never saw scores like this one (higher = more member-like, as every attack's score)."""
    ref = np.sort(np.asarray(null, dtype=float))
    return (len(ref) - np.searchsorted(ref, np.asarray(scores, dtype=float), side="left")) / len(ref)
