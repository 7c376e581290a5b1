"""Issue 13's attacks against a plain per-sample float64 re-computation of their formulas:
token-level calibration by the pre-trained model (-pt-token), EZ-MIA and WBC (with the pre-trained
model and with the reference adapter as the reference). Same setup as test_attacks: batched fast
path through `Evidence` over samples of mixed lengths, plain path one unpadded sample at a time."""

import numpy as np
import pytest
from test_attacks import lowest_mean, make_evidence, plain_ids, plain_positions

from loraleak.attacks import ATTACKS
from loraleak.attacks.learned import QUANTILES, make_classifier
from loraleak.attacks.shadow import keep_matrix, shadow_name
from loraleak.attacks.wbc import WINDOWS
from loraleak.scoring import Evidence


@pytest.fixture(scope="module")
def setup():
    return make_evidence(randomise_adapter=True)


def plain_rows(model, tok, ex, role):
    """float64 log-softmax rows of `role` ("default", "pretrained", "reference") and the actual tokens."""
    ids, s = plain_ids(tok, ex.prompt, ex.response)
    if role == "pretrained":
        return plain_positions(model, ids, s, pretrained=True)
    model.set_adapter(role)
    try:
        return plain_positions(model, ids, s, pretrained=False)
    finally:
        model.set_adapter("default")


def token_values(rows, targets, kind):
    lp = rows[np.arange(len(targets)), targets]
    if kind == "min-k":
        return lp
    p = np.exp(rows)
    mu = (p * rows).sum(1)
    return (lp - mu) / np.sqrt((p * (rows - mu[:, None]) ** 2).sum(1))


@pytest.mark.parametrize("name", ["min-k", "min-k++"])
def test_token_level_calibration_matches_plain_recomputation(setup, name):
    ev, model, tok, examples = setup
    plain = []
    for ex in examples[:12]:
        (ft, t), (pt, _) = plain_rows(model, tok, ex, "default"), plain_rows(model, tok, ex, "pretrained")
        plain.append(lowest_mean(token_values(ft, t, name) - token_values(pt, t, name), 0.2))
    fast = ATTACKS[f"{name}-pt-token"](ev)
    np.testing.assert_allclose(fast, plain, rtol=1e-4, atol=1e-4)
    # not the score-level calibration: the k lowest of a difference are not the difference of the k lowest
    assert np.abs(fast - ATTACKS[f"{name}-pt"](ev)).max() > 1e-3


def plain_ez(ft_rows, ref_rows, targets, min_tokens=2):
    """The error-zone shifts written out, as JetBrains-Research/ez-mia's error_zone_pos_neg_sum_ratio,
    mapped to (U - D) / (U + D), with the documented departures (a zone under min_tokens: all tokens)."""
    idx = np.arange(len(targets))
    zone = ft_rows.argmax(1) != targets
    if zone.sum() < min_tokens:
        zone = np.ones_like(zone)
    delta = (ft_rows[idx, targets] - ref_rows[idx, targets])[zone]
    up, down = delta[delta > 0].sum(), np.abs(delta[delta < 0]).sum()
    return 0.0 if up + down == 0 else (up - down) / (up + down)


def plain_wbc(ft_rows, ref_rows, targets, windows=WINDOWS):
    idx = np.arange(len(targets))
    ft_loss, ref_loss = -ft_rows[idx, targets], -ref_rows[idx, targets]
    shares = []
    for w in windows:
        w = min(w, len(targets))
        kernel = np.ones(w)
        shares.append(np.mean(np.convolve(ref_loss, kernel, "valid") > np.convolve(ft_loss, kernel, "valid")))
    return np.mean(shares)


@pytest.mark.parametrize("name", ["ez-mia", "ez-mia-ref", "wbc", "wbc-ref"])
def test_ez_mia_and_wbc_match_plain_recomputation(setup, name):
    ev, model, tok, examples = setup
    reference = "reference" if name.endswith("-ref") else "pretrained"
    formula = plain_ez if name.startswith("ez") else plain_wbc
    plain = []
    for ex in examples[:12]:
        (ft, t), (ref, _) = plain_rows(model, tok, ex, "default"), plain_rows(model, tok, ex, reference)
        plain.append(formula(ft, ref, t))
    fast = ATTACKS[name](ev)
    np.testing.assert_allclose(fast, plain, rtol=1e-4, atol=1e-6)
    assert np.ptp(fast) > 0  # the scores separate something: not all the guard's 0


def test_wbc_windows_and_ez_min_tokens_are_parameters(setup):
    ev, model, tok, examples = setup
    ft, t = plain_rows(model, tok, examples[0], "default")
    pt, _ = plain_rows(model, tok, examples[0], "pretrained")
    assert ATTACKS["wbc"](ev, windows=[1, 5])[0] == pytest.approx(plain_wbc(ft, pt, t, (1, 5)), rel=1e-4)
    assert ATTACKS["ez-mia"](ev, min_tokens=10_000)[0] == pytest.approx(
        plain_ez(ft, pt, t, min_tokens=10_000), rel=1e-4
    )


def plain_features(ft, pt, t):
    """learned's features of one sample, written out from float64 rows (the order of FEATURES)."""
    idx = np.arange(len(t))
    lp_ft, lp_pt = ft[idx, t], pt[idx, t]
    z_ft, z_pt = token_values(ft, t, "min-k++"), token_values(pt, t, "min-k++")
    ratio = lp_ft - lp_pt
    return [
        lp_ft.mean(), lp_pt.mean(), lp_ft.mean() - lp_pt.mean(),
        lowest_mean(lp_ft, 0.2), lowest_mean(lp_pt, 0.2), lowest_mean(z_ft, 0.2), lowest_mean(z_pt, 0.2),
        lowest_mean(ratio, 0.2), lowest_mean(z_ft - z_pt, 0.2), *np.quantile(ratio, QUANTILES),
        np.mean(ft.argmax(1) != t), plain_ez(ft, pt, t), plain_wbc(ft, pt, t), np.log(len(t)),
    ]  # fmt: skip


@pytest.mark.parametrize("name", ["learned", "learned-lira"])
def test_learned_attacks_match_plain_recomputation(setup, name):
    """Features written out per sample, the same scikit-learn search fitted on the shadows' population
    rows (each shadow's IN/OUT of the 4 population samples), then the target adapter's scores."""
    from scipy.stats import norm
    from sklearn.model_selection import GridSearchCV, GroupKFold

    ev, model, tok, examples = setup
    targets, population = examples[:12], examples[12:]
    keep = keep_matrix(4, 16, 0)
    rows = {}
    for role in ["default", "pretrained"] + [shadow_name(i, 4, 0) for i in range(4)]:
        rows[role] = [plain_rows(model, tok, ex, role) for ex in population + targets]

    def feats(role, part):
        pairs = list(zip(rows[role], rows["pretrained"], strict=True))[part]
        return np.array([plain_features(r[0], p[0], r[1]) for r, p in pairs])

    x = np.vstack([feats(shadow_name(i, 4, 0), slice(0, 4)) for i in range(4)])
    estimator, grid = make_classifier("logistic", 0)
    search = GridSearchCV(estimator, grid, scoring="roc_auc", cv=GroupKFold(n_splits=4))
    fitted = search.fit(x, keep[:, :4].reshape(-1).astype(int), groups=np.tile(np.arange(4), 4)).best_estimator_
    score = fitted.decision_function(feats("default", slice(4, 16)))
    if name == "learned-lira":
        shadows = np.stack([fitted.decision_function(feats(shadow_name(i, 4, 0), slice(4, 16))) for i in range(4)])
        kin = keep[:, 4:]
        resid_in, resid_out = (np.where(m, shadows - np.where(m, shadows, 0).sum(0) / m.sum(0), 0) for m in (kin, ~kin))
        sd_in = np.sqrt((resid_in**2).sum() / (kin.sum() - 12))
        sd_out = np.sqrt((resid_out**2).sum() / ((~kin).sum() - 12))
        mu_in = np.where(kin, shadows, 0).sum(0) / kin.sum(0)
        mu_out = np.where(~kin, shadows, 0).sum(0) / (~kin).sum(0)
        score = norm.logpdf(score, mu_in, sd_in) - norm.logpdf(score, mu_out, sd_out)
    np.testing.assert_allclose(ATTACKS[name](ev), score, rtol=1e-3, atol=1e-3)


def test_learned_never_reads_target_membership(setup):
    """The targets' order (and so any labelling of them) changes nothing but the order of the scores:
    the classifier is fitted on shadow data alone."""
    ev, model, tok, examples = setup
    order = np.random.default_rng(3).permutation(12)
    shuffled = Evidence(model, tok, [examples[i] for i in order], ev.encode, batch_size=5,
                        population=examples[12:], progress=False)  # fmt: skip
    for name, context in ev.roles.items():
        if name.startswith("shadow-"):
            shuffled.add_role(name, context)
    np.testing.assert_allclose(ATTACKS["learned"](shuffled), ATTACKS["learned"](ev)[order], rtol=1e-6, atol=1e-9)


def test_error_zone_reads_only_the_positions_the_fine_tuned_model_gets_wrong():
    """By hand (the random tiny model above is wrong almost everywhere, so it cannot show this):
    sample 0 has top-1 hits whose shifts must be ignored; sample 1 only upward shifts (documented
    departure: 1, not the public code's 0); sample 2 one error-zone token (< min_tokens: its zone
    widens to every token, where the code gives 0); sample 3 no shift at all (0)."""
    from loraleak.attacks.ezmia import error_zone_ratio
    from loraleak.scoring import TokenStats

    ft_lp = np.array([-0.1, -2.0, -3.0, -0.2, -1.0, -1.0, -0.5, -4.0, -2.0, -2.0], dtype=np.float32)
    top1 = np.array([-0.1, -0.5, -0.5, -0.2, -0.3, -0.3, -0.5, -0.3, -1.0, -1.0], dtype=np.float32)  # hits: 0, 3, 6
    ref_lp = np.array([-5.0, -1.0, -3.5, -9.0, -2.0, -1.5, -0.1, -1.0, -2.0, -2.0], dtype=np.float32)
    offsets = np.array([0, 4, 6, 8, 10])

    def stats(lp):
        zero = np.zeros_like(lp)
        return TokenStats(lp, zero, zero + 1, top1, np.zeros(10, np.int64), offsets)

    code = error_zone_ratio(stats(ft_lp), stats(ref_lp), min_tokens=2, public_code=True)
    np.testing.assert_allclose(code, [0.5 / 1.0, 0.0, 0.0, 0.0])  # U / D; D = 0 and a small zone give 0
    scores = error_zone_ratio(stats(ft_lp), stats(ref_lp), min_tokens=2)
    # sample 0: error zone = positions 1, 2: shifts -1.0 and +0.5 (the hits' +4.9 and +8.8 are ignored)
    assert scores[0] == pytest.approx((0.5 - 1.0) / 1.5)
    assert scores[1] == 1.0  # shifts +1.0, +0.5, none downward
    assert scores[2] == pytest.approx((-0.4 - 3.0) / (0.4 + 3.0))  # positions 6 (-0.4) and 7 (-3.0)
    assert scores[3] == 0.0


def test_learned_with_gradient_boosting_and_an_unknown_classifier(setup):
    from loraleak.attacks.learned import FEATURES, features
    from loraleak.scoring import EvidenceError

    ev, *_ = setup
    assert features(ev.stats("target"), ev.stats("pretrained")).shape == (12, len(FEATURES))
    scores = ATTACKS["learned"](ev, classifier="boosting")
    assert scores.shape == (12,) and np.isfinite(scores).all()
    with pytest.raises(EvidenceError, match="choose logistic or boosting"):
        ATTACKS["learned"](ev, classifier="forest")
