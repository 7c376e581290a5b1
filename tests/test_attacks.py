import numpy as np
import pytest

from loraleak.attacks import ATTACKS, FAMILIES, calibrated_by_pretrained, resolve
from loraleak.scoring import TokenStats


def ragged(rng, counts):
    n = sum(counts)
    lp = -rng.exponential(size=n).astype(np.float32)
    return TokenStats(lp, lp - 1, np.ones(n, np.float32), np.r_[0, np.cumsum(counts)])


def test_loss_follows_its_formula_per_sample():
    rng = np.random.default_rng(0)
    stats = ragged(rng, [3, 7, 1, 5])
    expected = [-(-seg).mean() for seg in stats.per_sample(stats.logprob)]  # -(mean NLL)
    np.testing.assert_allclose(ATTACKS["loss"]({"target": stats}), expected, rtol=1e-6)


def test_calibration_is_score_on_target_minus_score_on_pretrained():
    rng = np.random.default_rng(1)
    ft, pt = ragged(rng, [4, 4, 4]), ragged(rng, [4, 4, 4])
    ev = {"target": ft, "pretrained": pt}
    np.testing.assert_allclose(ATTACKS["loss-pt"](ev), pt.nll() - ft.nll(), rtol=1e-6)  # NLL_pt - NLL_ft
    assert ATTACKS["loss-pt"].family == "pretrained-reference"
    with pytest.raises(ValueError, match="cannot be calibrated"):
        calibrated_by_pretrained(ATTACKS["loss-pt"])


def test_registry_entries_are_complete():
    for a in ATTACKS.values():
        assert a.family in FAMILIES and a.citation and a.access


def test_resolve_presets_and_unknown_names():
    assert [a.name for a in resolve(["loss-pt", "all"])][0] == "loss-pt"
    assert {a.name for a in resolve(["fast"])} >= {"loss", "loss-pt"}
    with pytest.raises(KeyError, match="unknown attack 'los'; did you mean 'loss'"):
        resolve(["los"])
