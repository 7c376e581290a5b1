"""WBC, window-based comparison (Chen et al., USENIX Security 2026, arXiv 2601.02751; code
Stry233/WBC): each sliding window of w consecutive scored tokens votes "member" when the reference
model's summed token loss exceeds the fine-tuned model's; the score is the share of member votes,
averaged over the window sizes. A text shorter than w is one window of its length, as in the code.

`wbc` takes the pre-trained model as the reference (the paper's setting), `wbc-ref` the reference
adapter trained on the population. The window sizes default to the public code's recommended
geometric ladder (2 ... 40), not the issue's 1, 5, 10, 20; both are one `attack_params` away.
"""

import numpy as np

from .reference import one_example, reference_adapter
from .registry import Attack, register

WINDOWS = (2, 3, 4, 6, 9, 13, 18, 25, 32, 40)


def window_votes(gain: np.ndarray, windows) -> float:
    """Mean over window sizes of the share of windows whose summed gain (ref loss - ft loss) is > 0."""
    cum = np.r_[0.0, np.cumsum(gain, dtype=np.float64)]
    shares = []
    for w in windows:
        w = min(w, len(gain))
        shares.append(np.mean(cum[w:] - cum[:-w] > 0))
    return float(np.mean(shares))


def wbc_scores(target, reference, windows) -> np.ndarray:
    gain = target.logprob.astype(np.float64) - reference.logprob  # per token: ref loss - ft loss
    return np.array([window_votes(g, windows) for g in target.per_sample(gain)])


CITE = "Chen et al., Window-based Membership Inference Attacks Against Fine-tuned LLMs, USENIX Security 2026"
SCORE = "mean over window sizes w of the share of w-token windows where sum(loss_ref) > sum(loss_ft)"

register(
    Attack(name="wbc", family="pretrained-reference", access=("logits",), citation=CITE, score=SCORE,
           fn=lambda ev, windows: wbc_scores(ev.stats("target"), ev.stats("pretrained"), windows), scalar=False,
           defaults={"windows": list(WINDOWS)}, roles=("target", "pretrained"), note="reference: the pre-trained model")
)  # fmt: skip
register(
    Attack(name="wbc-ref", family="reference-model", access=("logits",), citation=CITE, score=SCORE,
           fn=lambda ev, windows: wbc_scores(ev.stats("target"), ev.stats("reference"), windows), scalar=False,
           defaults={"windows": list(WINDOWS)}, roles=("target", "reference"), adapters=reference_adapter,
           min_population=one_example, note="reference: the reference adapter trained on the population")
)  # fmt: skip
