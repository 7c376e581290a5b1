"""SaMIA (Kaneko et al., 2024): label-only, for targets that only expose generated text.

Split x's scored tokens in half; sample n continuations of (prompt + first half) from the target;
score = mean ROUGE-1 F1 (the `rouge-score` package) between each continuation and x's true
second half. A member's suffix is what the model tends to write.
Departure: the prefix always includes the task prompt (the attacker knows the task's format).
"""

from functools import cache

import numpy as np

from ..generation import sample_continuations
from .registry import Attack, register


@cache
def _rouge1():
    from rouge_score import rouge_scorer  # here, not at import: validating a config must not wait for it

    return rouge_scorer.RougeScorer(["rouge1"], use_stemmer=False)


def rouge1_f1(candidate: str, reference: str) -> float:
    """ROUGE-1 F1 from the `rouge-score` package (its tokenizer: lowercase alphanumeric words, no stemming)."""
    return _rouge1().score(reference, candidate)["rouge1"].fmeasure


def prefix_and_suffix(ev):
    """(prompt + first half of the scored tokens as ids, second half as text) per target sample."""
    enc, starts = ev.encoded()
    out = []
    for seq, s in zip(enc.input_ids, starts, strict=True):
        cut = s + (len(seq) - s) // 2
        out.append((seq[:cut], ev.tokenizer.decode(seq[cut:], skip_special_tokens=True)))
    return out


def samia_scores(ev, n, seed, max_new_tokens):
    pairs = prefix_and_suffix(ev)
    prompts = [p for p, _ in pairs for _ in range(n)]  # each prefix n times, sampled independently

    def generate(model, enc, starts):
        texts = sample_continuations(model, ev.tokenizer, prompts, max_new_tokens, seed, max(1, ev.batch_size // 2))
        return np.array(
            [np.mean([rouge1_f1(texts[i * n + j], suffix) for j in range(n)]) for i, (_, suffix) in enumerate(pairs)]
        )

    return ev.measure(f"samia-n={n}-seed={seed}-new={max_new_tokens}", generate, role="target")


register(
    Attack(
        name="samia",
        family="label-only",
        access=("generation",),
        scalar=False,
        score="mean ROUGE-1 F1 of n sampled continuations of (prompt + first half of x) with x's second half",
        fn=lambda ev, n, seed, max_new_tokens: samia_scores(ev, n, seed, max_new_tokens),
        defaults={"n": 5, "seed": 0, "max_new_tokens": 16},
        citation="Kaneko et al., Sampling-based Pseudo-Likelihood for Membership Inference Attacks, 2024",
        note="prefix = prompt + first half of x; ROUGE-1 F1 on words",
    )
)
