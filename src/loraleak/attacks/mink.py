"""Min-K% (Shi et al., ICLR 2024) and Min-K%++ (Zhang et al., 2024): the mean of a sample's k% least
likely tokens; Min-K%++ first standardises each token's log-prob by the mean and standard deviation
of log p under the model's own next-token distribution at that position.

Both take at least one token (a sample with fewer than 1/k scored tokens uses its minimum). Both
are token-level: besides the score-level `-pt` (Min-K% of the fine-tuned model minus Min-K% of the
pre-trained one) they have `-pt-token`, Min-K% over each token's fine-tuned minus pre-trained value.
"""

import numpy as np

from .registry import token_attack


def mean_lowest(values: list[np.ndarray], k: float) -> np.ndarray:
    return np.array([np.sort(v)[: max(1, int(len(v) * k))].mean() for v in values])


@token_attack(
    "min-k",
    k=0.2,
    aggregate=mean_lowest,
    score="mean of the k lowest token log-probs (a fraction k of x's tokens, at least one)",
    citation="Shi et al., Detecting Pretraining Data from Large Language Models, ICLR 2024",
)
def min_k(st, k):
    return st.logprob


@token_attack(
    "min-k++",
    k=0.2,
    aggregate=mean_lowest,
    score="mean of the k lowest (log p_t - mu_t) / sigma_t, mu and sigma^2 the mean "
    "and variance of log p under the model's next-token distribution",
    note="sigma^2 floored at 1e-12",
    citation="Zhang et al., Min-K%++: Improved Baseline for Detecting Pre-Training "
    "Data from Large Language Models, 2024 (ICLR 2025)",
)
def min_k_plus_plus(st, k):
    return (st.logprob - st.mean) / np.sqrt(np.maximum(st.var, 1e-12))  # guard: a one-hot distribution has var 0
