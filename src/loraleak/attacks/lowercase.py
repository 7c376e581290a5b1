"""Lowercase (Carlini et al., USENIX Security 2021): NLL(lower(x)) / NLL(x).

A memorised sample loses more of its likelihood when its casing is changed. One extra forward
pass per model over the lowercased samples (prompt and response lowercased alike).
"""

from ..data import Example
from ..scoring import register_variant, scored_starts
from .registry import scalar_attack


@register_variant("lowercase")
def lowercased(ev):
    enc = ev.encode([Example(ex.id, ex.prompt.lower(), ex.response.lower()) for ex in ev.examples])
    return enc, scored_starts(enc, ev.tokens)


@scalar_attack(
    "lowercase",
    variants=("lowercase",),
    score="NLL(lower(x)) / NLL(x)",
    citation="Carlini et al., Extracting Training Data from Large Language Models, USENIX Security 2021",
)
def lowercase(view):
    return view.stats("lowercase").nll() / view.stats().nll()
