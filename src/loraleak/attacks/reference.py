"""Reference model (Carlini et al., USENIX Security 2021; Mireshghallah et al., EMNLP 2022):
score = NLL(M_ref, x) - NLL(M_ft, x).

M_ref is a LoRA adapter trained with the target's recipe on the population split: the classic
assumption that the attacker holds data from the same distribution. It sits beside the target
adapter on the one resident base model.
"""

from .registry import Attack, ExtraAdapter, register


def _population(split):
    return split.population


def one_example(_params: dict) -> int:
    """The fewest population examples an adapter trained on them (reference, SPV-MIA's) needs."""
    return 1


def reference_adapter(**_):
    """The one reference adapter (shared by every attack that reads role 'reference')."""
    return [ExtraAdapter("reference", data=_population, seed_offset=1)]


def _reference(evidence):
    return evidence.stats("reference").nll() - evidence.stats("target").nll()


register(
    Attack(
        name="reference",
        family="reference-model",
        access=("logits",),
        fn=_reference,
        scalar=False,
        score="NLL(M_ref, x) - NLL(M_ft, x)",
        roles=("target", "reference"),
        adapters=reference_adapter,
        min_population=one_example,
        citation="Carlini et al., USENIX Security 2021; Mireshghallah et al., Quantifying Privacy Risks of "
        "Masked Language Models Using Membership Inference Attacks, EMNLP 2022",
        note="reference adapter trained on the population split with the target's recipe",
    )
)
