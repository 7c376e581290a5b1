"""LOSS (Yeom et al., CSF 2018): members have lower loss. Score = -mean token NLL."""

from .registry import scalar_attack


@scalar_attack(
    "loss", score="-(mean token NLL of x)", citation="Yeom et al., Privacy Risk in Machine Learning, CSF 2018"
)
def loss(view):
    return -view.stats().nll()
