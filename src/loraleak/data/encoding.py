"""Tokenize examples once, the same way for fine-tuning and scoring.

Plain text, no chat template: prompt tokens (with the tokenizer's own special prefix, e.g. BOS),
then response tokens, then EOS. Prompt and response are tokenized separately so the boundary
between them is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

PROMPT_TAIL = 8  # a prompt over its cap keeps its head and its last tokens (the cue before the response)


@dataclass
class Encoded:
    input_ids: list[list[int]]
    response_start: list[int]  # index of the first response token in each sequence
    truncated: int  # how many examples were cut to the caps

    def __len__(self) -> int:
        return len(self.input_ids)


def encode_examples(examples, tokenizer, max_prompt_tokens: int, max_response_tokens: int) -> Encoded:
    prompts = tokenizer([ex.prompt for ex in examples], add_special_tokens=True)["input_ids"]
    responses = tokenizer([ex.response for ex in examples], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    ids, starts, truncated = [], [], 0
    # a text-only example has an empty prompt: start it with BOS (or EOS) so its first token is predicted
    start = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos]
    for p, r in zip(prompts, responses, strict=True):
        p = p or start
        cut = len(p) > max_prompt_tokens or len(r) > max_response_tokens
        truncated += cut
        if len(p) > max_prompt_tokens:
            tail = min(PROMPT_TAIL, max_prompt_tokens // 2)
            p = p[: max_prompt_tokens - tail] + p[len(p) - tail :]
        seq = p + r[:max_response_tokens] + [eos]
        ids.append(seq)
        starts.append(len(p))
    return Encoded(ids, starts, truncated)


def right_pad(seqs: list[list[int]], pad_id: int, device: Any = None):
    """(input_ids, attention_mask) for a batch, padded on the right, on `device` (None: the CPU; give
    `models.input_device(model)`). Causal attention never lets a real token see the padding after it,
    so positions and results match the unpadded sequence."""
    import torch  # here, not at import: validating a config must not wait for torch

    T = max(map(len, seqs))
    # built on the CPU (one copy to the device after, not one per row)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long, device="cpu")
    mask = torch.zeros((len(seqs), T), dtype=torch.long, device="cpu")
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(seq, device="cpu")
        mask[row, : len(seq)] = 1
    return ids.to(device), mask.to(device)


def token_batches(lengths: Sequence[int], max_samples: int, max_tokens: int = 0) -> list[list[int]]:
    """Indices grouped into forward passes, longest first (similar lengths share a pass): at most
    `max_samples` each and, with `max_tokens` > 0, at most that many padded tokens (samples x the
    longest). A sample longer than the budget is a pass of its own: a sequence is never cut."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        last = batches[-1] if batches else []
        fits = 0 < len(last) < max_samples and (not max_tokens or (len(last) + 1) * lengths[last[0]] <= max_tokens)
        if fits:
            last.append(i)
        else:
            batches.append([i])
    return batches
