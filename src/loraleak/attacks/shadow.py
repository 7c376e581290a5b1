"""Shadow-model attacks: LiRA (Carlini et al., S&P 2022), offline and online, and RMIA (Zarifzadeh
et al., ICML 2024), from k shadow LoRA adapters on the one resident base model.

Shadows: the pool is population + targets (members, non-members). As in Carlini et al.'s code, each
pool sample is IN for exactly k/2 shadows (keep = argsort of uniform draws < k/2, generator
`seed`), and shadow i is trained with the target's recipe on the samples it keeps. One set of
shadows serves all: online attacks read every shadow, offline ones only the shadows that did not
train on the sample being scored.

Statistic: phi(x) = mean token log-likelihood of x (for sequences it is close to Gaussian; the
paper's logit-scaled confidence is for a single label). LiRA fits per-sample Gaussians to the
shadows' phi (means per sample; one variance over all samples by default, as the paper advises
for few shadows). RMIA's Pr(x | theta) is exp(phi(x)), the geometric-mean token likelihood, and its
reference samples z are the population split.
"""

from functools import partial

import numpy as np

from ..scoring import EvidenceError, register_variant, scored_starts
from .reference import one_example
from .registry import Attack, ExtraAdapter, register


def check_shadow_count(k: int) -> None:
    if k < 2 or k % 2:  # each sample is IN for exactly k/2 shadows
        raise EvidenceError(f"shadow attacks need an even number of shadows k >= 2, got k={k} (attack_params)")


def keep_matrix(k: int, n: int, seed: int) -> np.ndarray:
    """[k, n] bool: shadow i trains on pool sample j; every column has exactly k/2 True."""
    check_shadow_count(k)
    return np.random.default_rng(seed).uniform(size=(k, n)).argsort(0) < k // 2


def shadow_name(i: int, k: int, seed: int) -> str:
    return f"shadow-{i}-of-{k}-seed{seed}"  # the name carries what decides its data


def _pool(split):
    return split.population + split.targets


def _shadow_data(split, k, seed, index):
    pool = _pool(split)
    return [ex for ex, kept in zip(pool, keep_matrix(k, len(pool), seed)[index], strict=True) if kept]


def _shadows(k, seed, **_):
    check_shadow_count(k)  # here, so that naming the adapters up front (adapter_specs) finds a bad k
    return [
        ExtraAdapter(
            shadow_name(i, k, seed), data=_shadow_data, inputs={"k": k, "seed": seed, "index": i}, seed_offset=10 + i
        )
        for i in range(k)
    ]


@register_variant("population")
def population_samples(ev):
    enc = ev.encode(ev.population)
    return enc, scored_starts(enc, ev.tokens)


def _phis(ev, k, seed, variant="original"):
    """phi under the target [n] and under each shadow [k, n], and which shadows kept each sample."""
    target = -ev.stats("target", variant).nll()
    shadows = np.stack([-ev.stats(shadow_name(i, k, seed), variant).nll() for i in range(k)])
    keep = keep_matrix(k, len(ev.population) + len(ev.examples), seed)
    return target, shadows, (keep[:, len(ev.population) :] if variant == "original" else keep[:, : len(ev.population)])


def _fit(shadows, mask, global_variance):
    """Per-sample mean of the shadows' phi where `mask`, and a per-sample or global std."""
    mu = np.where(mask, shadows, 0).sum(0) / mask.sum(0)
    resid = np.where(mask, shadows - mu, 0)
    if global_variance:
        sd = np.full(mu.shape, np.sqrt((resid**2).sum() / max(1, mask.sum() - mask.shape[1])))
    else:
        sd = np.sqrt((resid**2).sum(0) / np.maximum(1, mask.sum(0) - 1))
    return mu, np.maximum(sd, 1e-6)


def _lira_offline(ev, k, seed, global_variance):
    phi, shadows, keep = _phis(ev, k, seed)
    mu, sd = _fit(shadows, ~keep, global_variance)
    return (phi - mu) / sd  # one-sided: monotone in the paper's p-value under the OUT Gaussian


def _lira_online(ev, k, seed, global_variance):
    phi, shadows, keep = _phis(ev, k, seed)
    mu_in, sd_in = _fit(shadows, keep, global_variance)
    mu_out, sd_out = _fit(shadows, ~keep, global_variance)
    from scipy.stats import norm  # here, not at import: validating a config must not wait for scipy

    return norm.logpdf(phi, mu_in, sd_in) - norm.logpdf(phi, mu_out, sd_out)


def _rmia_ratio(phi, shadows, keep, online, a):
    """Pr(x | theta) / Pr(x), Pr(x) averaged over reference models (offline: OUT ones, linearly
    corrected by a for the missing IN models, as in the paper)."""
    p_target, p_ref = np.exp(phi), np.exp(shadows)
    if online:
        p_x = p_ref.mean(0)
    else:
        p_out = np.where(~keep, p_ref, 0).sum(0) / (~keep).sum(0)
        p_x = 0.5 * ((1 + a) * p_out + (1 - a))
    return p_target / p_x


def _rmia(ev, k, seed, gamma, a, online):
    phi_x, shadows_x, keep_x = _phis(ev, k, seed)
    phi_z, shadows_z, keep_z = _phis(ev, k, seed, "population")
    ratio_x = _rmia_ratio(phi_x, shadows_x, keep_x, online, a)
    ratio_z = _rmia_ratio(phi_z, shadows_z, keep_z, online, a)
    # share of reference samples z that x dominates by a factor gamma
    return (ratio_x[:, None] / ratio_z[None, :] >= gamma).mean(1)


CITE_LIRA = "Carlini et al., Membership Inference Attacks From First Principles, IEEE S&P 2022"
CITE_RMIA = "Zarifzadeh et al., Low-Cost High-Power Membership Inference Attacks, ICML 2024"
SHADOWS = {"k": 4, "seed": 0}
LIRA_SCORES = (
    "(phi - mu_out) / sigma_out, from the shadows that did not train on x",
    "log N(phi; mu_in, sigma_in) - log N(phi; mu_out, sigma_out)",
)
RMIA_SCORE = (
    "share of population samples z with [p(x | theta) / p(x)] / [p(z | theta) / p(z)] >= gamma, "
    "p(x) averaged over the {} shadows"
)


def _register(name, fn, defaults, citation, score, min_population=None):
    register(
        Attack(
            name=name,
            family="shadow",
            access=("logits",),
            fn=fn,
            scalar=False,
            defaults=defaults,
            roles=("target", "shadows"),
            adapters=_shadows,
            citation=citation,
            score=score,
            min_population=min_population,
            note="one shadow pool (population + targets, each sample IN for k/2 shadows); "
            "phi = mean token log-likelihood",
        )
    )


_register("lira-offline", _lira_offline, {**SHADOWS, "global_variance": True}, CITE_LIRA, LIRA_SCORES[0])
_register("lira-online", _lira_online, {**SHADOWS, "global_variance": True}, CITE_LIRA, LIRA_SCORES[1])
_register(
    "rmia-offline",
    partial(_rmia, online=False),
    {**SHADOWS, "gamma": 1.0, "a": 0.3},
    CITE_RMIA,
    RMIA_SCORE.format("OUT") + " and linearly corrected by a",
    one_example,  # the reference samples z are the population
)
_register(
    "rmia-online",
    partial(_rmia, online=True),
    {**SHADOWS, "gamma": 1.0, "a": 0.3},
    CITE_RMIA,
    RMIA_SCORE.format("k"),
    one_example,
)
