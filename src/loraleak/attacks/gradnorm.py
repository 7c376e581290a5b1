"""GradNorm (as in MIMIR; Wang et al., 2024): members sit where the loss is flat, so their gradient
norm is small. Score = -||grad NLL(x)||_2.

- `gradnorm-x`: gradient with respect to the input embeddings. Samples are batched: the sum of the
  per-sample losses has, for each sample's own embeddings, exactly that sample's gradient (samples
  never attend to each other; right padding is never attended to and carries no loss).
- `gradnorm-theta`: gradient with respect to the trainable LoRA parameters, one sample at a time.
  It has no `-pt` variant: with the adapter disabled those parameters do not act at all.
"""

from contextlib import contextmanager

import numpy as np

from ..data import right_pad
from ..models import input_device
from .registry import Attack, register, scalar_attack


def _sample_nll(logits_row, ids_row, start, length):
    import torch

    lp = torch.log_softmax(logits_row[start - 1 : length - 1].float(), -1)
    return -lp.gather(-1, ids_row[start:length, None]).mean()


@contextmanager
def _grads_only_for(model, params):
    """Gradients for `params` only (no stray .grad buffers on frozen or LoRA weights)."""
    import torch

    before = {p: p.requires_grad for p in model.parameters()}
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        with torch.enable_grad():
            yield
    finally:
        for p, flag in before.items():
            p.requires_grad_(flag)
            p.grad = None


def input_gradient_norms(model, enc, starts, batch_size: int = 8, pad_id: int = 0) -> np.ndarray:
    embed = model.get_input_embeddings()
    order = sorted(range(len(enc)), key=lambda i: -len(enc.input_ids[i]))
    out = np.zeros(len(enc))
    with _grads_only_for(model, []):
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            seqs = [enc.input_ids[i] for i in idx]
            ids, mask = right_pad(seqs, pad_id, input_device(model))
            x = embed(ids).detach().requires_grad_(True)
            logits = model(inputs_embeds=x, attention_mask=mask).logits
            total = sum(_sample_nll(logits[r], ids[r], starts[i], len(seqs[r])) for r, i in enumerate(idx))
            total.backward()
            norms = x.grad.float().flatten(1).norm(dim=1)
            for r, i in enumerate(idx):
                out[i] = norms[r].item()
    return out


def lora_gradient_norms(model, enc, starts) -> np.ndarray:
    import torch

    active = model.active_adapter
    params = [p for name, p in model.named_parameters() if "lora_" in name and f".{active}." in name]
    out = np.zeros(len(enc))
    with _grads_only_for(model, params):
        for i, seq in enumerate(enc.input_ids):
            ids = torch.tensor([seq], device=input_device(model))
            for p in params:
                p.grad = None
            _sample_nll(model(input_ids=ids).logits[0], ids[0], starts[i], len(seq)).backward()
            out[i] = torch.sqrt(sum((p.grad.float() ** 2).sum() for p in params if p.grad is not None)).item()
    return out


@scalar_attack(
    "gradnorm-x",
    access=("gradients",),
    score="-||d NLL(x) / d input embeddings||_2",
    note="batched: exact per-sample gradients (samples never interact)",
    citation="Wang et al., 2024, as implemented in MIMIR (Duan et al., COLM 2024)",
)
def gradnorm_x(view):
    ev = view.evidence

    def norms(model, enc, starts):
        return input_gradient_norms(model, enc, starts, max(1, ev.batch_size // 2), ev.tokenizer.pad_token_id)

    return -view.measure("gradnorm-x", norms)


def _gradnorm_theta(evidence):
    return -evidence.view("target").measure("gradnorm-theta", lora_gradient_norms)


register(
    Attack(
        name="gradnorm-theta",
        family="reference-free",
        access=("gradients",),
        fn=_gradnorm_theta,
        score="-||d NLL(x) / d LoRA parameters||_2",
        scalar=False,
        citation="Wang et al., 2024, as implemented in MIMIR (Duan et al., COLM 2024)",
        note="over the LoRA parameters only; no -pt variant",
    )
)
