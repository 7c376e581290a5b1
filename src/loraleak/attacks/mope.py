"""MoPe (Li et al., 2023): members sit in sharper minima, so perturbing the weights costs them more.

score = mean over n perturbations of NLL(theta + eps_i, x) - NLL(theta, x), eps_i ~ N(0, sigma^2 I).

Which weights: every 2-D weight of the base model except the embeddings and the output head, i.e.
all linear layers of the transformer blocks (for a LoRA-wrapped layer, its frozen base weight). For
the fine-tuned model that is the same as perturbing its merged weights W + BA; the adapter itself is
not perturbed. The pre-trained model (adapter disabled) gets the very same eps_i, so MoPe-pt compares
the two models under identical noise. Noise is drawn from a generator seeded by (seed, i), in fp32,
then cast to the weights' dtype; the weights are restored exactly (from a copy) after each pass.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .registry import scalar_attack

if TYPE_CHECKING:
    import torch


def perturbed_parameters(model) -> list[torch.nn.Parameter]:
    skip = {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}
    return [p for name, p in model.named_parameters() if p.dim() == 2 and "lora_" not in name and id(p) not in skip]


@dataclass(frozen=True)
class Perturbation:
    sigma: float
    index: int
    seed: int

    @property
    def key(self) -> str:
        return f"mope-sigma={self.sigma}-i={self.index}-seed={self.seed}"

    @contextmanager
    def apply(self, model):
        import torch

        params = perturbed_parameters(model)
        saved = [p.detach().clone() for p in params]
        gen = torch.Generator("cpu").manual_seed(self.seed * 1_000_003 + self.index)
        try:
            with torch.no_grad():
                for p in params:
                    # noise drawn on the CPU from one seeded generator: the same on every device
                    p.add_((torch.randn(p.shape, generator=gen, device="cpu") * self.sigma).to(p.device, p.dtype))
            yield
        finally:
            with torch.no_grad():
                for p, original in zip(params, saved, strict=True):
                    p.copy_(original)


@scalar_attack(
    "mope",
    n=5,
    sigma=0.01,
    seed=0,
    access=("logits", "weights"),
    score="mean over n of NLL(theta + eps_i, x) - NLL(theta, x), eps_i ~ N(0, sigma^2 I) (seeded)",
    citation="Li et al., MoPe: Model Perturbation-based Privacy Attacks on Language Models, EMNLP 2023",
    note="Gaussian noise on the transformer blocks' linear weights (not embeddings, head or adapter)",
)
def mope(view, n, sigma, seed):
    perturbed = [view.stats(state=Perturbation(sigma, i, seed)).nll() for i in range(n)]
    return np.mean(perturbed, axis=0) - view.stats().nll()
