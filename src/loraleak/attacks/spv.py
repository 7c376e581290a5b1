"""SPV-MIA (Fu et al., NeurIPS 2024): self-prompt calibration + probabilistic variation.

(a) Self-prompt reference: the target model completes the population prompts (sampled, seeded);
    a reference adapter is fine-tuned on those completions with the target's recipe.
(b) Probabilistic variation PV(M, x) = log p(x) - mean over m symmetric pairs of
    (log p(x+) + log p(x-)) / 2, log p the mean token log-likelihood.
score = PV(M_ft, x) - PV(M_ref, x).

Departures, for an offline CPU tool: the paper prompts with short text chunks and perturbs with
T5 mask-filling paraphrases; here the prompts are the task's own population prompts, and the
symmetric pair is x's input embeddings plus and minus the same Gaussian noise (per vocabulary
row, sigma = `scale` x the embedding matrix's std, seeded by (seed, i)); only the input embeddings
are perturbed, never a tied output head.
"""

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from .generation import self_prompted_examples
from .reference import one_example
from .registry import Attack, ExtraAdapter, register


@dataclass(frozen=True)
class EmbeddingNoise:
    scale: float
    index: int
    sign: int  # +1 or -1: the two halves of a symmetric pair
    seed: int

    @property
    def key(self) -> str:
        return f"embnoise-scale={self.scale}-i={self.index}-sign={self.sign:+d}-seed={self.seed}"

    @contextmanager
    def apply(self, model):
        import torch

        embed = model.get_input_embeddings()
        gen = torch.Generator("cpu").manual_seed(self.seed * 1_000_003 + self.index)
        # drawn on the CPU from one seeded generator (the same noise on every device), then moved
        noise = torch.randn(embed.weight.shape, generator=gen, device="cpu").to(embed.weight.device)
        noise = noise * (self.scale * embed.weight.float().std())
        handle = embed.register_forward_hook(
            lambda module, inputs, output: output + (self.sign * noise[inputs[0]]).to(output.dtype)
        )
        try:
            yield
        finally:
            handle.remove()


def probabilistic_variation(evidence, role, m, scale, seed):
    loglik = -evidence.stats(role).nll()
    pairs = [
        (
            -evidence.stats(role, state=EmbeddingNoise(scale, i, +1, seed)).nll()
            - evidence.stats(role, state=EmbeddingNoise(scale, i, -1, seed)).nll()
        )
        / 2
        for i in range(m)
    ]
    return loglik - np.mean(pairs, axis=0)


def _spv(evidence, m, scale, seed, max_new_tokens):
    return probabilistic_variation(evidence, "target", m, scale, seed) - probabilistic_variation(
        evidence, "spv-reference", m, scale, seed
    )


def _self_prompted_population(split, evidence, max_new_tokens, seed):
    return self_prompted_examples(evidence, split.population, max_new_tokens, seed)


def _spv_adapter(max_new_tokens, seed, **_):
    return [
        ExtraAdapter(
            "spv-reference",
            data=_self_prompted_population,
            reads_target=True,
            seed_offset=2,
            inputs={"max_new_tokens": max_new_tokens, "seed": seed},
        )
    ]


register(
    Attack(
        name="spv-mia",
        family="reference-model",
        access=("logits", "generation"),
        fn=_spv,
        scalar=False,
        score="PV(M_ft, x) - PV(M_ref, x), PV = log p(x) - mean over m pairs of (log p(x+) + log p(x-)) / 2",
        roles=("target", "spv-reference"),
        adapters=_spv_adapter,
        min_population=one_example,  # its reference trains on the target's completions of population prompts
        defaults={"m": 3, "scale": 0.5, "seed": 0, "max_new_tokens": 32},
        citation="Fu et al., Membership Inference Attacks against Fine-tuned Large Language Models via "
        "Self-prompt Calibration, NeurIPS 2024",
        note="population prompts; embedding-noise symmetric pairs instead of T5 paraphrases",
    )
)
