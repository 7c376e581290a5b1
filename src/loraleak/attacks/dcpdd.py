"""DC-PDD (Zhang et al., EMNLP 2024): token probabilities calibrated by corpus token frequencies.

For the first occurrence of each distinct token in x: alpha = p(x_t) * log(1 / f(x_t)), with f the
Laplace-smoothed token frequency in a reference corpus, capped at `a`; score = mean alpha (higher =
member). The reference corpus is the population split's texts plus, optionally, a local text file
(`corpus`, one document per line); the paper uses a large public web corpus, nothing is downloaded here.
"""

import numpy as np

from .registry import scalar_attack


@scalar_attack(
    "dc-pdd",
    a=0.01,
    corpus="",
    score="mean over x's distinct tokens of min(p(x_t) log(1 / f(x_t)), a), f = reference token frequency",
    citation="Zhang et al., Pretraining Data Detection for Large Language Models: "
    "A Divergence-based Calibration Method, EMNLP 2024",
    note="reference token frequencies from the population split (+ a local corpus), not a web corpus",
    min_population=lambda p: 0 if p["corpus"] else 1,  # frequencies need a corpus
)
def dc_pdd(view, a, corpus):
    freq = view.evidence.token_frequencies(corpus)
    st = view.stats()
    out = []
    for ids, lp in zip(st.per_sample(st.token_ids), st.per_sample(st.logprob), strict=True):
        _, first = np.unique(ids, return_index=True)
        alpha = np.exp(lp[first].astype(np.float64)) * -np.log(freq[ids[first]])
        out.append(np.minimum(alpha, a).mean())
    return np.array(out)
