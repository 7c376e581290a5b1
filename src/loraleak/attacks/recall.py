"""ReCaLL (Xie et al., EMNLP 2024): NLL(x | P) / NLL(x), P a prefix of known non-members.

Conditioning on non-member context lowers a member's likelihood more than a non-member's, so a
higher ratio means member. P is the first `shots` population examples (the attacker's
same-distribution non-members), each encoded as a sample is and joined by their EOS tokens.
"""

from ..scoring import EvidenceError, register_variant
from .registry import scalar_attack


@register_variant("recall-prefix")
def with_nonmember_prefix(ev, shots):
    if len(ev.population) < shots:
        raise EvidenceError(
            f"ReCaLL needs {shots} population examples for its prefix; "
            f"the split has {len(ev.population)}: raise split.population"
        )
    prefix = [t for seq in ev.encode(ev.population[:shots]).input_ids for t in seq]
    enc, starts = ev.encoded()
    out = type(enc)(
        [prefix + seq for seq in enc.input_ids], [len(prefix) + s for s in enc.response_start], enc.truncated
    )
    return out, [len(prefix) + s for s in starts]


@scalar_attack(
    "recall",
    shots=3,
    variants=("recall-prefix",),
    score="NLL(x | P) / NLL(x), P = the first `shots` population examples",
    note="the non-member prefix P comes from the population split",
    min_population=lambda p: p["shots"],
    citation="Xie et al., ReCaLL: Membership Inference via Relative Conditional Log-Likelihoods, EMNLP 2024",
)
def recall(view, shots):
    return view.stats("recall-prefix", shots=shots).nll() / view.stats().nll()
