"""A blind baseline: can members be told from non-members by their text alone, with no model at all?

Membership inference results only mean something when members and non-members come from one
distribution; when the split itself is learnable, a "blind" classifier that never sees the model
matches or beats published attacks (Duan et al. 2024, "Do Membership Inference Attacks Work on Large
Language Models?"; Das et al. 2024, "Blind Baselines Beat Membership Inference Attacks for Foundation
Models"). `blind_baseline` runs such a classifier: text length (characters, words) plus character
1-4-gram and word 1-2-gram TF-IDF features, logistic regression, stratified K-fold cross-validation
so that every example gets one out-of-fold score, and the AUC of those scores with a bootstrap CI
(`metrics.evaluate`).

The split is flagged `shifted` when the blind AUC is at least `SHIFTED_MIN_AUC` (0.6) and the CI's
lower bound is above `CHANCE_AUC` (0.5): the first keeps tiny, practically irrelevant shifts from
being flagged, the second keeps noise from small samples from being flagged. The flag is about the
sample at hand: with 100 members and 100 non-members drawn at random from one pool, the blind AUC
varies by about +-0.05, and roughly 1 split in 20 is flagged because it does differ by chance (in
length, say), which confounds an attack's AUC on that sample just the same.

Every feature is learnt inside the fold: the n-grams of all texts are counted once (the slow part),
then each fold keeps only its training rows' vocabulary, IDF weights and length scaling.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from . import metrics as M

if TYPE_CHECKING:
    from .data.example import Example

# A blind AUC of 0.6 is as large as the signal many published LLM MIAs report, so above it an
# attack's AUC cannot be told apart from the data shift.
SHIFTED_MIN_AUC = 0.6
CHANCE_AUC = 0.5  # the CI's lower bound must exclude chance, so sampling noise alone is not "shifted"
MIN_FOLDS = 2  # cross-validation needs at least one held-out fold besides the training ones

FEATURES = "length (chars, words) + char_wb 1-4-gram TF-IDF + word 1-2-gram TF-IDF (sublinear)"
METHOD = (
    "blind baseline: model-free logistic regression on text features, out-of-fold scores from "
    "stratified K-fold CV (Das et al. 2024, Blind Baselines Beat Membership Inference Attacks for "
    "Foundation Models; Duan et al. 2024)"
)
NGRAMS = (("char_wb", (1, 4)), ("word", (1, 2)))  # (analyzer, n-gram range) of each TF-IDF block


def text_lengths(texts: list[str]) -> np.ndarray:
    """(n, 2): log(1 + characters), log(1 + words); logs so a few very long texts do not dominate."""
    return np.log1p([[len(t), len(t.split())] for t in texts])


def ngram_counts(texts: list[str]) -> list[Any]:
    """Raw n-gram counts of every text, one sparse matrix per `NGRAMS` block: the costly text
    analysis, done once for all folds. Nothing is learnt from them here (see `fold_features`)."""
    from sklearn.feature_extraction.text import CountVectorizer

    return [CountVectorizer(analyzer=a, ngram_range=r).fit_transform(texts).tocsr() for a, r in NGRAMS]


def fold_features(counts: list[Any], lengths: np.ndarray, train: np.ndarray, test: np.ndarray) -> tuple[Any, Any]:
    """(train, test) feature matrices with everything learnt from the `train` rows alone: the n-gram
    vocabulary, IDF weights and length scaling come out exactly as a TfidfVectorizer and a
    StandardScaler fitted on those rows would give them."""
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfTransformer
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(lengths[train])
    parts = [(sparse.csr_matrix(scaler.transform(lengths[train])), sparse.csr_matrix(scaler.transform(lengths[test])))]
    for block in counts:
        seen = np.flatnonzero(block[train].getnnz(axis=0))  # the vocabulary of the training rows
        tfidf = TfidfTransformer(sublinear_tf=True).fit(block[train][:, seen])
        parts.append((tfidf.transform(block[train][:, seen]), tfidf.transform(block[test][:, seen])))
    return sparse.hstack([p[0] for p in parts], format="csr"), sparse.hstack([p[1] for p in parts], format="csr")


def fold_scores(
    counts: list[Any], lengths: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray, seed: int
) -> np.ndarray:
    """Fit the classifier on the `train` rows; return its scores (log-odds of member) of the `test` rows."""
    from sklearn.linear_model import LogisticRegression

    x_train, x_test = fold_features(counts, lengths, train, test)
    model = LogisticRegression(solver="liblinear", random_state=seed).fit(x_train, labels[train])
    return model.decision_function(x_test)


def _folds(labels: np.ndarray, folds: int) -> int:
    """`folds`, lowered to the smaller class's size (each fold needs one example of each class)."""
    smaller = int(min((labels == 1).sum(), (labels == 0).sum()))
    if folds < MIN_FOLDS:
        raise ValueError(f"folds must be >= {MIN_FOLDS}, got {folds}")
    if smaller < MIN_FOLDS:
        raise ValueError(f"the blind baseline needs >= {MIN_FOLDS} members and non-members, got {smaller}")
    return min(folds, smaller)


def out_of_fold_scores(texts: list[str], labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """One score per text (higher = more member-like) from the model of the fold that held it out."""
    from sklearn.model_selection import StratifiedKFold

    counts, lengths = ngram_counts(texts), text_lengths(texts)
    scores = np.full(len(texts), np.nan)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(np.zeros(len(texts)), labels):
        scores[test] = fold_scores(counts, lengths, labels, train, test, seed)
    return scores


def blind_baseline(
    members: list[Example],
    nonmembers: list[Example],
    *,
    folds: int = 5,
    seed: int = 0,
    bootstrap: int = 200,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """AUC (with a bootstrap CI) of a model-free classifier telling `members` from `nonmembers` by
    their `.text`; `shifted` says the split is learnable, so MIA results on it are not evidence of
    leakage. With `bootstrap=0` there is no CI: `auc_ci` is None and `shifted` rests on the AUC alone.
    Deterministic for a given `seed`; the dict is JSON-able."""
    texts = [ex.text for ex in members] + [ex.text for ex in nonmembers]
    labels = np.r_[np.ones(len(members), dtype=int), np.zeros(len(nonmembers), dtype=int)]
    used_folds = _folds(labels, folds)
    scores = out_of_fold_scores(texts, labels, used_folds, seed)
    result = M.evaluate(labels, scores, bootstrap=bootstrap, confidence=confidence, seed=seed)
    auc = float(result["auc"])
    ci = [float(v) for v in result["ci"]["auc"]] if "ci" in result else None  # bootstrap=0: no CI
    return {
        "auc": auc,
        "auc_ci": ci,
        "folds": used_folds,
        "features": FEATURES,
        "shifted": auc >= SHIFTED_MIN_AUC and (ci is None or ci[0] > CHANCE_AUC),
        "method": METHOD,
    }
