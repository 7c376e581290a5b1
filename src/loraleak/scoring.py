"""Token statistics: one batched, padding-aware forward pass per model over the target samples.

For every scored position t of a sample we keep three numbers, never a vocabulary-sized tensor:
  logprob[t] = log p(x_t | x_<t)                    (LOSS, Zlib, Min-K%, ...)
  mean[t]    = E_{z~p(.|x_<t)} [log p(z | x_<t)]    (Min-K%++'s mu_t; minus the entropy)
  var[t]     = Var_{z~p(.|x_<t)} [log p(z | x_<t)]  (Min-K%++'s sigma_t^2)
All logit attacks derive from these, so each (model, sample) is run once. The pre-trained model's
statistics come from the same resident PeftModel with its adapter disabled.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .data import Encoded, right_pad


@dataclass
class TokenStats:
    """Per-sample statistics stored ragged: sample i owns positions offsets[i]:offsets[i+1]."""
    logprob: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def per_sample(self, values: np.ndarray) -> list[np.ndarray]:
        return np.split(values, self.offsets[1:-1])

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def nll(self) -> np.ndarray:
        """Mean negative log-likelihood of each sample's scored tokens."""
        return -np.add.reduceat(self.logprob, self.offsets[:-1]) / self.counts

    def save(self, path: Path) -> None:
        np.savez(path, logprob=self.logprob, mean=self.mean, var=self.var, offsets=self.offsets)

    @classmethod
    def load(cls, path: Path) -> "TokenStats":
        with np.load(path) as z:
            return cls(z["logprob"], z["mean"], z["var"], z["offsets"])


def scored_starts(encoded: Encoded, tokens: str) -> list[int]:
    """Index of the first scored token of each sample: the response, or everything after token 0."""
    return list(encoded.response_start) if tokens == "response" else [1] * len(encoded)


def position_stats(logits: torch.Tensor, targets: torch.Tensor):
    """(logprob, mean, var) per position from next-token logits [T, V] and the actual tokens [T]."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    mean = (p * logp).sum(-1)
    var = (p * (logp - mean[:, None]) ** 2).sum(-1)  # centred: no cancellation
    return logp.gather(-1, targets[:, None])[:, 0], mean, var


@torch.inference_mode()
def token_stats(model, encoded: Encoded, starts: list[int], batch_size: int = 16, pad_id: int = 0,
                progress: bool = True, desc: str = "score") -> TokenStats:
    """Batched forward passes (longest first, right padding) -> TokenStats in the original sample order."""
    n = len(encoded)
    if any(not 1 <= s < len(seq) for s, seq in zip(starts, encoded.input_ids)):
        raise ValueError("every sample needs at least one scored token after the first position")
    order = sorted(range(n), key=lambda i: -len(encoded.input_ids[i]))  # similar lengths share a batch
    out: list = [None] * n
    for b in tqdm(range(0, n, batch_size), desc=desc, disable=not progress, unit="batch"):
        idx = order[b:b + batch_size]
        seqs = [encoded.input_ids[i] for i in idx]
        ids, mask = right_pad(seqs, pad_id)
        logits = model(input_ids=ids, attention_mask=mask).logits
        for row, i in enumerate(idx):
            L, s = len(seqs[row]), starts[i]
            # logits at position t-1 predict token t; padding (t >= L) is never read
            out[i] = [v.numpy() for v in position_stats(logits[row, s - 1:L - 1], ids[row, s:L])]
        del logits
    offsets = np.r_[0, np.cumsum([len(o[0]) for o in out])]
    cat = [np.concatenate([o[k] for o in out]).astype(np.float32) for k in range(3)]
    return TokenStats(*cat, offsets=offsets)


def adapter_disabled(model):
    """Context in which a PeftModel computes with its pre-trained weights only (no second copy)."""
    return model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
