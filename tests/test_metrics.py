import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from loraleak import metrics as M


def test_auc_matches_sklearn_on_random_vectors():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = rng.normal(size=300) + labels
    assert M.auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))


def test_tpr_at_fpr_and_balanced_accuracy_by_hand():
    # non-members 0..9 score 0.0..0.9; members score 0.95 (x3), 0.85, 0.05 (x1)
    neg = np.arange(10) / 10
    pos = np.array([0.95, 0.95, 0.95, 0.85, 0.05])
    labels = np.r_[np.ones(5), np.zeros(10)]
    scores = np.r_[pos, neg]
    # threshold above 0.9: no false positive, 3/5 members caught
    assert M.tpr_at_fpr(labels, scores, 0.0) == pytest.approx(0.6)
    assert M.tpr_at_fpr(labels, scores, 0.01) == pytest.approx(0.6)
    # below one false positive in ten, still 3/5
    assert M.tpr_at_fpr(labels, scores, 0.05) == pytest.approx(0.6)
    # FPR 0.1: threshold 0.85 lets in one non-member (0.9) and a fourth member
    assert M.tpr_at_fpr(labels, scores, 0.1) == pytest.approx(0.8)
    # the last member (0.05) needs threshold 0.05: nine non-members above it
    assert M.tpr_at_fpr(labels, scores, 0.89) == pytest.approx(0.8)
    assert M.tpr_at_fpr(labels, scores, 0.9) == pytest.approx(1.0)
    # best (TPR + TNR)/2: threshold 0.85 -> TPR 0.8, FPR 0.1 -> 0.85
    assert M.best_balanced_accuracy(labels, scores) == pytest.approx(0.85)


def test_random_scores_give_chance_and_perfect_scores_give_one():
    labels = np.r_[np.ones(50), np.zeros(50)]
    assert M.auc(labels, np.zeros(100)) == 0.5
    assert M.tpr_at_fpr(labels, np.zeros(100), 0.01) == 0.0
    perfect = M.summary(labels, labels.astype(float))
    assert perfect == {"auc": 1.0, "tpr@0.01fpr": 1.0, "tpr@0.001fpr": 1.0, "best_balanced_accuracy": 1.0}


def test_bootstrap_interval_brackets_the_estimate_and_is_seeded():
    rng = np.random.default_rng(1)
    labels = np.r_[np.ones(100), np.zeros(100)]
    scores = rng.normal(size=200) + 0.8 * labels
    a, b = M.evaluate(labels, scores, bootstrap=100, seed=3), M.evaluate(labels, scores, bootstrap=100, seed=3)
    assert a == b
    lo, hi = a["ci"]["auc"]
    assert lo < a["auc"] < hi and hi - lo < 0.3


def test_paired_bootstrap_pairs_the_resamples():
    rng = np.random.default_rng(2)
    labels = np.r_[np.ones(60), np.zeros(40)]
    a, b = rng.normal(size=100) + labels, rng.normal(size=100) + 0.3 * labels
    draws = M.paired_bootstrap(labels, {"a": a, "b": b}, bootstrap=50, seed=4)
    # plainly: resample i's AUC of each attack on the same index set, recomputed by scikit-learn
    check, plain = np.random.default_rng(4), []
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    for i in range(50):
        idx = np.r_[check.choice(pos, len(pos)), check.choice(neg, len(neg))]
        plain.append(roc_auc_score(labels[idx], a[idx]))
        assert draws["a"]["auc"][i] == pytest.approx(plain[-1])
        assert draws["b"]["auc"][i] == pytest.approx(roc_auc_score(labels[idx], b[idx]))
    # evaluate's interval: the percentiles of those draws
    assert M.evaluate(labels, a, bootstrap=50, seed=4)["ci"]["auc"] == pytest.approx(np.percentile(plain, [2.5, 97.5]))
    same = M.paired_bootstrap(labels, {"a": a, "a again": a.copy()}, bootstrap=20)
    assert (same["a"]["tpr@0.01fpr"] == same["a again"]["tpr@0.01fpr"]).all()


def test_bad_scores_are_refused():
    with pytest.raises(ValueError, match="not finite"):
        M.auc([1, 0], [np.nan, 0.0])
    with pytest.raises(ValueError, match="both members"):
        M.auc([1, 1], [0.1, 0.2])
