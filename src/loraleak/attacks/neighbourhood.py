"""Neighbourhood comparison (Mattern et al., ACL Findings 2023): a member is more likely than texts
close to it. Score = mean over n neighbours of NLL(x~) - NLL(x).

Departure: the paper proposes neighbours with a masked LM (BERT); none ships offline, so the
pre-trained model proposes them. One pass of the pre-trained model over x gives, at every scored
position, its top-k next tokens given the true left context. Neighbour j replaces a fraction
`rate` (at least one) of x's scored tokens, at positions drawn from a generator seeded by
(seed, sample, j), each by one of those top-k tokens other than the original, drawn the same way.
Substitution is per token, not per word, and neighbours are not re-ranked. Prompt tokens are
never touched. The same neighbours serve the fine-tuned and the pre-trained model (for -pt).
"""

import numpy as np

from ..data import right_pad, token_batches
from ..models import input_device
from ..scoring import register_variant
from .registry import scalar_attack


def top_k_candidates(
    model, enc, starts, k: int, batch_size: int = 16, pad_id: int = 0, max_tokens: int = 0
) -> np.ndarray:
    """[scored positions of all samples, k] token ids: the model's k likeliest next tokens."""
    import torch

    out: list[np.ndarray] = [np.empty((0, k), np.int64)] * len(enc)
    with torch.inference_mode():
        for idx in token_batches([len(seq) for seq in enc.input_ids], batch_size, max_tokens):
            seqs = [enc.input_ids[i] for i in idx]
            ids, mask = right_pad(seqs, pad_id, input_device(model))
            logits = model(input_ids=ids, attention_mask=mask).logits
            for r, i in enumerate(idx):
                out[i] = logits[r, starts[i] - 1 : len(seqs[r]) - 1].float().topk(k, dim=-1).indices.cpu().numpy()
    return np.concatenate(out)


@register_variant("neighbour")
def neighbour(ev, index, rate, k, seed):
    enc, starts = ev.encoded()
    cands = ev.measure(
        f"top{k}",
        lambda m, e, s: top_k_candidates(m, e, s, k, ev.batch_size, ev.tokenizer.pad_token_id, ev.max_batch_tokens),
        role="pretrained",
    )
    ids, offset = [], 0
    for i, (seq, s) in enumerate(zip(enc.input_ids, starts, strict=True)):
        n_scored = len(seq) - s
        rng = np.random.default_rng([seed, i, index])
        seq = list(seq)
        for pos in rng.choice(n_scored, size=max(1, int(round(rate * n_scored))), replace=False):
            options = [t for t in cands[offset + pos] if t != seq[s + pos]]
            seq[s + pos] = int(options[rng.integers(len(options))])
        ids.append(seq)
        offset += n_scored
    return type(enc)(ids, list(enc.response_start), enc.truncated), list(starts)


@scalar_attack(
    "neighbourhood",
    n=5,
    rate=0.1,
    k=10,
    seed=0,
    score="mean NLL of n neighbours of x - NLL(x); a neighbour replaces a fraction rate of x's tokens",
    citation="Mattern et al., Membership Inference Attacks against Language Models via Neighbourhood "
    "Comparison, Findings of ACL 2023",
    variants=("neighbour",),
    note="neighbours from the pre-trained model's top-k tokens, not a masked LM; token-level",
)
def neighbourhood(view, n, rate, k, seed):
    nll = [view.stats("neighbour", index=j, rate=rate, k=k, seed=seed).nll() for j in range(n)]
    return np.mean(nll, axis=0) - view.stats().nll()
