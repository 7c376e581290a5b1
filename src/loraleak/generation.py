"""Continuations from the resident model: sampled (SPV-MIA, SaMIA) or greedy (task utility)."""


def left_pad(seqs: list[list[int]], pad_id: int, device=None):
    """Generation continues every row at the same position, so prompts are padded on the left (the
    batch on `device`)."""
    import torch  # here, not at import: validating a config must not wait for torch

    T = max(map(len, seqs))
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long, device="cpu")
    mask = torch.zeros((len(seqs), T), dtype=torch.long, device="cpu")
    for row, seq in enumerate(seqs):
        ids[row, T - len(seq) :] = torch.tensor(seq, device="cpu")
        mask[row, T - len(seq) :] = 1
    return ids.to(device), mask.to(device)


def continuations(
    model,
    tokenizer,
    prompts: list[list[int]],
    max_new_tokens: int,
    batch_size: int = 8,
    sample: bool = False,
    seed: int = 0,
    top_k: int = 50,
    temperature: float = 1.0,
) -> list[str]:
    """Decoded continuations of token-id prompts, greedy or sampled (batch b sampled under seed + b).
    Prompts are batched longest first, so a batch wastes little on padding; output keeps prompt order."""
    import torch

    from .models import input_device

    pad, device = tokenizer.pad_token_id, input_device(model)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i])) if not sample else range(len(prompts))
    order, out = list(order), [""] * len(prompts)
    with torch.inference_mode():
        for b in range(0, len(prompts), batch_size):
            idx = order[b : b + batch_size]
            ids, mask = left_pad([prompts[i] for i in idx], pad, device)
            kw = (
                dict(do_sample=True, top_k=top_k, top_p=1.0, temperature=temperature)
                if sample
                else dict(do_sample=False, top_k=None, top_p=None, temperature=None)
            )
            if sample:
                torch.manual_seed(seed + b)
            gen = model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, pad_token_id=pad, **kw
            )
            for i, text in zip(
                idx, tokenizer.batch_decode(gen[:, ids.shape[1] :], skip_special_tokens=True), strict=True
            ):
                out[i] = text
    return out


def sample_continuations(
    model,
    tokenizer,
    prompts,
    max_new_tokens: int,
    seed: int,
    batch_size: int = 8,
    top_k: int = 50,
    temperature: float = 1.0,
) -> list[str]:
    return continuations(model, tokenizer, prompts, max_new_tokens, batch_size, True, seed, top_k, temperature)
