"""Sampling continuations from the resident model, for attacks that generate (SPV-MIA, SaMIA)."""

import torch

from ..data import Example


def left_pad(seqs: list[list[int]], pad_id: int):
    """Generation continues every row at the same position, so prompts are padded on the left."""
    T = max(map(len, seqs))
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, T - len(seq):] = torch.tensor(seq)
        mask[row, T - len(seq):] = 1
    return ids, mask


@torch.inference_mode()
def sample_continuations(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, seed: int,
                         batch_size: int = 8, top_k: int = 50, temperature: float = 1.0) -> list[str]:
    """Decoded sampled continuations of token-id prompts; batch b is sampled under seed + b."""
    out = []
    pad = tokenizer.pad_token_id
    for b in range(0, len(prompts), batch_size):
        ids, mask = left_pad(prompts[b:b + batch_size], pad)
        torch.manual_seed(seed + b)
        gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=True,
                             top_k=top_k, top_p=1.0, temperature=temperature, pad_token_id=pad)
        out += tokenizer.batch_decode(gen[:, ids.shape[1]:], skip_special_tokens=True)
    return out


def self_prompted_examples(ev, examples, max_new_tokens: int, seed: int) -> list[Example]:
    """The examples' prompts with responses sampled from the model as it is now (the target)."""
    enc = ev.encode(examples)
    prompts = [seq[:s] for seq, s in zip(enc.input_ids, enc.response_start)]
    texts = sample_continuations(ev.model, ev.tokenizer, prompts, max_new_tokens, seed, max(1, ev.batch_size // 2))
    return [Example(f"self-prompted:{ex.id}", ex.prompt, text) for ex, text in zip(examples, texts)]
