"""EZ-MIA, the error-zone attack (arXiv 2601.12104; public code JetBrains-Research/ez-mia): at the
positions where the fine-tuned model's most likely next token is not the actual one (its error
zone), how far fine-tuning raised the actual token's log-probability against a reference model:

    delta_t = log p_ft(x_t) - log p_ref(x_t)  for t in the error zone
    U, D    = sum of the positive delta_t, |sum of the negative delta_t|
    paper:  U / D;   here: (U - D) / (U + D) = (r - 1) / (r + 1), r = U / D

Two training-free passes (the top-1 flag is one more statistic of the same forward pass). `ez-mia`
takes the pre-trained model as the reference, `ez-mia-ref` the reference adapter trained on the
population (the paper's SFT reference; its distillation reference is not built here).

Departures from the public code (`error_zone_pos_neg_sum_ratio`), in the note too:
- the score is (U - D) / (U + D), a monotone map of the paper's ratio (the same ranking, so the same
  ROC), bounded in [-1, 1] and 0 when nothing shifted (U + D = 0, e.g. at LoRA initialisation);
- all-upward shifts (D = 0) score 1, the most member-like; the code returns 0, the least;
- with fewer than `min_tokens` (2) error-zone tokens the code returns 0 too. That is what a memorised
  sample looks like (the fine-tuned model predicts nearly every token, measured: an over-fitted
  tiny-llama's members have 1 error token on average, its non-members 8.6, and the code's rule gives
  AUC 0.03). Here such a sample is scored the same way over all its scored tokens instead;
- the scored tokens are loraleak's (the response by default): no token after BOS is dropped.
`attack_params: {ez-mia: {public_code: true}}` computes U / D with the code's two zeros instead.
"""

from functools import partial

import numpy as np

from .reference import one_example, reference_adapter
from .registry import Attack, register


def error_zone_ratio(target, reference, min_tokens: int, public_code: bool = False) -> np.ndarray:
    """Per sample (U - D) / (U + D) of the log-prob shifts where the target's top-1 is wrong (over all
    scored tokens when fewer than `min_tokens` are); 0 where nothing shifted. public_code: U / D, and 0
    for a zone under min_tokens or D = 0, exactly as JetBrains-Research/ez-mia computes it."""
    wrong = ~target.top1_hit()
    starts = target.offsets[:-1]
    small = np.add.reduceat(wrong.astype(np.int64), starts) < min_tokens
    zone = wrong if public_code else wrong | np.repeat(small, target.counts)  # too small a zone: every token
    delta = np.where(zone, target.logprob.astype(np.float64) - reference.logprob, 0.0)
    up = np.add.reduceat(np.maximum(delta, 0), starts)
    down = np.add.reduceat(np.maximum(-delta, 0), starts)
    if public_code:
        return np.where(small | (down == 0), 0.0, up / (down + 1e-12))
    total = up + down
    return np.divide(up - down, total, out=np.zeros_like(total), where=total > 0)


def _ez(evidence, min_tokens, public_code, reference_role):
    return error_zone_ratio(evidence.stats("target"), evidence.stats(reference_role), min_tokens, public_code)


CITE = "Error-zone membership inference (EZ-MIA), arXiv 2601.12104, 2026; code: JetBrains-Research/ez-mia"
SCORE = (
    "(U - D) / (U + D), U and D the upward and downward sums of log p_ft(x_t) - log p_ref(x_t) where the "
    "fine-tuned top-1 != x_t"
)
NOTE = (
    "(U - D)/(U + D) for the paper's U/D (same ranking); all-upward scores 1 and a zone under min_tokens is "
    "widened to every token (the public code gives both 0: public_code=true); no token after BOS dropped"
)
DEFAULTS = {"min_tokens": 2, "public_code": False}

register(
    Attack(name="ez-mia", family="pretrained-reference", access=("logits",), citation=CITE, score=SCORE,
           fn=partial(_ez, reference_role="pretrained"), scalar=False, defaults=DEFAULTS,
           roles=("target", "pretrained"), note=NOTE + "; reference: the pre-trained model")
)  # fmt: skip
register(
    Attack(name="ez-mia-ref", family="reference-model", access=("logits",), citation=CITE, score=SCORE,
           fn=partial(_ez, reference_role="reference"), scalar=False, defaults=DEFAULTS,
           roles=("target", "reference"), adapters=reference_adapter, min_population=one_example,
           note=NOTE + "; reference: the reference adapter")
)  # fmt: skip
