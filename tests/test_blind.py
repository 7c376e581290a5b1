"""The blind baseline (a model-free member / non-member classifier) and the table's sample-size honesty."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from loraleak import blind, report
from loraleak import metrics as M
from loraleak.data.example import Example

VERBS = ["Return", "Compute", "Parse", "Load", "Build", "Check", "Convert", "Write", "Split", "Merge"]
NOUNS = ["config", "token", "batch", "path", "record", "adapter", "score", "label", "frame", "cache"]
EXTRAS = ["if it exists", "for every row", "in place", "as a list", "from disk", "with defaults", "lazily"]


def docstrings(n: int, seed: int = 0) -> list[Example]:
    """`n` docstring-like examples from one generator, 1-6 sentences each; the id in the name makes
    every text unique, so a model fitted on a text can memorise its label."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        name = f"{rng.choice(VERBS).lower()}_{rng.choice(NOUNS)}_{rng.integers(16**6):06x}"
        sentences = [
            f"{rng.choice(VERBS)} the {rng.choice(NOUNS)} of the {rng.choice(NOUNS)} {rng.choice(EXTRAS)}."
            for _ in range(rng.integers(1, 7))
        ]
        out.append(Example(f"doc-{i}", f"def {name}({rng.choice(NOUNS)}):\n", '    """' + " ".join(sentences) + '"""'))
    return out


def random_split(n: int = 200, seed: int = 0) -> tuple[list[Example], list[Example]]:
    pool = docstrings(n, seed)
    order = np.random.default_rng(seed + 1).permutation(n)
    return [pool[i] for i in order[: n // 2]], [pool[i] for i in order[n // 2 :]]


def test_a_random_split_of_one_pool_is_not_learnable():
    result = blind.blind_baseline(*random_split())
    lo, hi = result["auc_ci"]
    assert lo <= 0.5 <= hi and abs(result["auc"] - 0.5) < 0.1
    assert result["shifted"] is False and result["folds"] == 5


def test_members_shorter_than_non_members_is_a_shift_it_finds():
    pool = sorted(docstrings(200), key=lambda ex: len(ex.text))
    result = blind.blind_baseline(pool[:100], pool[100:])
    assert result["auc"] > 0.9 and result["auc_ci"][0] > 0.5
    assert result["shifted"] is True


def test_same_seed_same_json_able_result():
    members, nonmembers = random_split(120)
    first = blind.blind_baseline(members, nonmembers, seed=3, bootstrap=50)
    assert blind.blind_baseline(members, nonmembers, seed=3, bootstrap=50) == first
    assert json.loads(json.dumps(first)) == first
    assert set(first) == {"auc", "auc_ci", "folds", "features", "shifted", "method"}


def test_scores_are_out_of_fold_so_unique_texts_cannot_be_memorised():
    members, nonmembers = random_split()
    texts = [ex.text for ex in members + nonmembers]
    labels = np.r_[np.ones(len(members), dtype=int), np.zeros(len(nonmembers), dtype=int)]
    everything = np.arange(len(texts))
    # fitted and scored on the same texts, the classifier memorises the random labels ...
    counts, lengths = blind.ngram_counts(texts), blind.text_lengths(texts)
    in_sample = blind.fold_scores(counts, lengths, labels, everything, everything, seed=0)
    assert M.auc(labels, in_sample) > 0.95
    # ... so a baseline that did not hold each text out would be far above chance
    assert blind.blind_baseline(members, nonmembers, bootstrap=0)["auc"] < 0.6


def test_each_fold_is_scored_by_a_model_that_never_saw_it(monkeypatch):
    calls = []

    def spy(counts, lengths, train, test):
        calls.append((set(train), list(test)))
        return real(counts, lengths, train, test)

    real = blind.fold_features
    monkeypatch.setattr(blind, "fold_features", spy)
    blind.blind_baseline(*random_split(60), folds=4, bootstrap=0)
    assert len(calls) == 4 and all(train.isdisjoint(test) for train, test in calls)
    assert sorted(i for _, test in calls for i in test) == list(range(60))  # every example scored once


def test_fold_features_are_learnt_from_the_training_rows_alone():
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = [ex.text for ex in docstrings(40)]
    train, test = np.arange(0, 40, 2), np.arange(1, 40, 2)
    x_train, x_test = blind.fold_features(blind.ngram_counts(texts), blind.text_lengths(texts), train, test)
    # columns: 2 length features, then the char n-gram block, as a vectorizer fitted on the train texts
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), sublinear_tf=True)
    expected_train = char.fit_transform([texts[i] for i in train]).toarray()
    width = expected_train.shape[1]
    np.testing.assert_allclose(x_train[:, 2 : 2 + width].toarray(), expected_train)
    np.testing.assert_allclose(x_test[:, 2 : 2 + width].toarray(), char.transform([texts[i] for i in test]).toarray())
    np.testing.assert_allclose(x_train[:, :2].toarray().mean(axis=0), 0, atol=1e-12)  # scaled on train rows


def test_folds_shrink_to_the_smaller_class_and_need_two_of_each():
    pool = docstrings(13)
    assert blind.blind_baseline(pool[:3], pool[3:], bootstrap=0)["folds"] == 3
    with pytest.raises(ValueError, match="needs >= 2 members and non-members"):
        blind.blind_baseline(pool[:1], pool[1:])
    with pytest.raises(ValueError, match="folds must be >= 2"):
        blind.blind_baseline(pool[:5], pool[5:], folds=1)


def test_importing_it_does_not_import_torch():
    code = "import sys, loraleak.blind; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- the table: a TPR at an FPR the non-members cannot resolve is "n/a" -------------------------------

ATTACKS = {"loss": {"auc": 0.7, "ci": {"auc": [0.6, 0.8]}, "tpr@0.01fpr": 0.123, "tpr@0.001fpr": 0.045}}


def test_resolvable_needs_one_over_fpr_non_members():
    assert report.min_nonmembers_for(0.01) == 100 and report.min_nonmembers_for(0.001) == 1000
    assert report.resolvable(0.01, 100) and not report.resolvable(0.01, 99)
    assert report.resolvable(0.001, 1000) and not report.resolvable(0.001, 999)


def test_table_shows_n_a_for_a_tpr_too_few_non_members_resolve():
    few = report.table(ATTACKS, nonmembers=50)
    assert "n/a (needs 100)" in few and "n/a (needs 1000)" in few and "0.123" not in few and "0.045" not in few
    some = report.table(ATTACKS, nonmembers=200)
    assert "0.123" in some and "n/a (needs 1000)" in some and "n/a (needs 100)" not in some
    assert "n/a" not in report.table(ATTACKS, nonmembers=1000)
    for text in (few, some):  # header, rule and rows stay aligned
        assert len({len(line) for line in text.splitlines()}) == 1


def test_table_without_a_count_shows_every_number_as_before():
    expected = "\n".join(
        [
            f"{'attack':<16} {'AUC':>6} {'95% CI':>15} {'TPR@1%FPR':>10} {'TPR@0.1%FPR':>12}",
            "-" * 63,
            f"{'loss':<16} {0.7:>6.3f} {'[0.600, 0.800]':>15} {0.123:>10.3f} {0.045:>12.3f}",
        ]
    )
    assert report.table(ATTACKS) == expected
