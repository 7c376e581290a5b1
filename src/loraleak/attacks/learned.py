"""A learned attack, trained where membership is known by construction: on the shadow adapters.

The attacker knows the base model, the training recipe (from the adapter's `adapter_config.json`
and the run's train section) and data from the task's distribution (the population split). The k
shadow adapters of LiRA / RMIA are trained with that recipe on pools in which each sample is IN for
exactly k/2 shadows, so for a shadow and a population sample the label "IN" is the attacker's own.

`learned`: per sample a feature vector from the fine-tuned model's and the pre-trained model's
statistics (the one-pass scores on both, and token-level summaries of their log-ratio: quantiles,
the error zone, window votes); a scikit-learn classifier (standardised logistic regression, or
gradient boosting) fitted on the shadows' features of the **population samples only** with their
IN/OUT labels, its hyperparameter chosen by cross-validation over shadow data grouped by sample;
then applied to the target adapter's features of the targets. Target membership is never read.

`learned-lira`: the learned score calibrated per example as LiRA (online) does: each target sample's
learned score under the shadows that kept it (IN) and those that did not (OUT) give two Gaussians
(one variance over all samples, LiRA's advice for few shadows); the score is the log-likelihood
ratio of the target adapter's learned score. It reads the shadows' IN/OUT assignment of the target
samples, which is the attacker's own construction, never the targets' true membership.
"""

import numpy as np

from .ezmia import error_zone_ratio
from .mink import mean_lowest
from .registry import Attack, register
from .shadow import _fit, _shadows, keep_matrix, shadow_name
from .wbc import WINDOWS, wbc_scores

QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
FEATURES = (
    "loss", "loss_pretrained", "loss_calibrated", "min_k", "min_k_pretrained", "min_kpp", "min_kpp_pretrained",
    "min_k_per_token", "min_kpp_per_token", *(f"log_ratio_q{q:g}" for q in QUANTILES), "error_share", "ez",
    "wbc", "log_tokens",
)  # fmt: skip


def _z(st) -> np.ndarray:
    return (st.logprob - st.mean) / np.sqrt(np.maximum(st.var, 1e-12))


def features(ft, pt) -> np.ndarray:
    """[n, len(FEATURES)]: one row per sample of `ft` (a fine-tuned model's statistics) against `pt`
    (the pre-trained model's, over the same tokens)."""
    ratio = ft.logprob.astype(np.float64) - pt.logprob
    z_ft, z_pt = _z(ft), _z(pt)
    cols = [
        -ft.nll(), -pt.nll(), -ft.nll() + pt.nll(),
        mean_lowest(ft.per_sample(ft.logprob), 0.2), mean_lowest(pt.per_sample(pt.logprob), 0.2),
        mean_lowest(ft.per_sample(z_ft), 0.2), mean_lowest(pt.per_sample(z_pt), 0.2),
        mean_lowest(ft.per_sample(ratio), 0.2), mean_lowest(ft.per_sample(z_ft - z_pt), 0.2),
        *np.array([np.quantile(r, QUANTILES) for r in ft.per_sample(ratio)]).T,
        np.add.reduceat((~ft.top1_hit()).astype(np.float64), ft.offsets[:-1]) / ft.counts,
        error_zone_ratio(ft, pt, min_tokens=2),
        wbc_scores(ft, pt, WINDOWS),
        np.log(ft.counts),
    ]  # fmt: skip
    return np.column_stack(cols)


def make_classifier(kind: str, seed: int):
    """The model and the hyperparameter grid its cross-validation searches."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)), {
            "logisticregression__C": [0.01, 0.1, 1.0, 10.0]
        }
    if kind == "boosting":
        return HistGradientBoostingClassifier(random_state=seed), {"max_depth": [2, 3], "learning_rate": [0.05, 0.1]}
    from ..scoring import EvidenceError

    raise EvidenceError(f"attack_params: learned's classifier is '{kind}'; choose logistic or boosting")


def fit_on_shadows(ev, k: int, seed: int, kind: str):
    """The classifier fitted on the shadows' population samples (features, IN/OUT), C or depth
    chosen by 5-fold cross-validation (AUC) with the folds split by sample, not by shadow."""
    from sklearn.model_selection import GridSearchCV, GroupKFold

    n_pop = len(ev.population)
    keep = keep_matrix(k, n_pop + len(ev.examples), seed)[:, :n_pop]  # the population's columns only
    pt = ev.stats("pretrained", "population")
    x = np.vstack([features(ev.stats(shadow_name(i, k, seed), "population"), pt) for i in range(k)])
    y, groups = keep.reshape(-1).astype(int), np.tile(np.arange(n_pop), k)
    model, grid = make_classifier(kind, seed)
    search = GridSearchCV(model, grid, scoring="roc_auc", cv=GroupKFold(n_splits=min(5, n_pop)))
    return search.fit(x, y, groups=groups).best_estimator_


def _score(model, x) -> np.ndarray:
    return model.decision_function(x) if hasattr(model, "decision_function") else model.predict_proba(x)[:, 1]


def _learned(ev, k, seed, classifier):
    model = fit_on_shadows(ev, k, seed, classifier)
    return _score(model, features(ev.stats("target"), ev.stats("pretrained")))


def _learned_lira(ev, k, seed, classifier):
    from scipy.stats import norm

    model = fit_on_shadows(ev, k, seed, classifier)
    pt = ev.stats("pretrained")
    target = _score(model, features(ev.stats("target"), pt))
    shadows = np.stack([_score(model, features(ev.stats(shadow_name(i, k, seed)), pt)) for i in range(k)])
    keep = keep_matrix(k, len(ev.population) + len(ev.examples), seed)[:, len(ev.population) :]
    mu_in, sd_in = _fit(shadows, keep, True)
    mu_out, sd_out = _fit(shadows, ~keep, True)
    return norm.logpdf(target, mu_in, sd_in) - norm.logpdf(target, mu_out, sd_out)


CITE = (
    "loraleak's own: a classifier on shadow adapters (Shokri et al., S&P 2017, shadow training) over "
    "one-pass, token-level, EZ-MIA and WBC features"
)
for name, fn, score in (
    ("learned", _learned, "classifier(features(fine-tuned, pre-trained, x)), fitted on shadows' population IN/OUT"),
    ("learned-lira", _learned_lira, "log N(s; mu_in, sigma) - log N(s; mu_out, sigma), s the learned score"),
):
    register(
        Attack(name=name, family="shadow", access=("logits",), citation=CITE, score=score, fn=fn,
               scalar=False, defaults={"k": 4, "seed": 0, "classifier": "logistic"},
               roles=("target", "pretrained", "shadows"), adapters=_shadows,
               min_population=lambda p: 2,  # the classifier is fitted on population samples, 2+ folds
               note="fitted on the shadows' population samples only; features: " + ", ".join(FEATURES))
    )  # fmt: skip
