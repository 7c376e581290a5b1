"""Token statistics: one batched, padding-aware forward pass per model over the target samples.

For every scored position t of a sample we keep four numbers, never a vocabulary-sized tensor:
  logprob[t] = log p(x_t | x_<t)                    (LOSS, Zlib, Min-K%, ...)
  mean[t]    = E_{z~p(.|x_<t)} [log p(z | x_<t)]    (Min-K%++'s mu_t; minus the entropy)
  var[t]     = Var_{z~p(.|x_<t)} [log p(z | x_<t)]  (Min-K%++'s sigma_t^2)
  top1[t]    = max_z log p(z | x_<t)                (EZ-MIA's error zone: logprob < top1)
All logit attacks derive from these, so each (model, sample) is run once. The pre-trained model's
statistics come from the same resident PeftModel with its adapter disabled.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from .cache import StaleCache, atomic, fingerprint, read_cached
from .data import Encoded, right_pad, token_batches
from .errors import UserError
from .models import input_device
from .registry import Registry

if TYPE_CHECKING:
    import torch


@dataclass
class TokenStats:
    """Per-sample statistics stored ragged: sample i owns positions offsets[i]:offsets[i+1]."""

    logprob: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    top1: np.ndarray
    token_ids: np.ndarray  # the scored (actual) tokens
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

    FIELDS = ("logprob", "mean", "var", "top1", "token_ids", "offsets")

    def top1_hit(self) -> np.ndarray:
        """Per position: the model's most likely next token is the actual one (ties count as hits)."""
        return self.logprob >= self.top1

    def save(self, path: Path) -> None:
        with atomic(path) as tmp:  # an interrupted run or a full disk never leaves a half-written file
            np.savez(tmp, **{k: getattr(self, k) for k in self.FIELDS})

    @classmethod
    def load(cls, path: Path) -> TokenStats:
        with np.load(path) as z:
            if set(cls.FIELDS) - set(z.files):  # written by an older loraleak: computed again
                raise StaleCache(path)
            return cls(*(z[k] for k in cls.FIELDS))


def scored_starts(encoded: Encoded, tokens: str) -> list[int]:
    """Index of the first scored token of each sample: the response, or everything after token 0."""
    return list(encoded.response_start) if tokens == "response" else [1] * len(encoded)


def position_stats(logits: torch.Tensor, targets: torch.Tensor):
    """(logprob, mean, var, top1) per position from next-token logits [T, V] and the actual tokens [T]."""
    import torch  # here, not at import: validating a config must not wait for torch

    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    mean = (p * logp).sum(-1)
    var = (p * (logp - mean[:, None]) ** 2).sum(-1)  # centred: no cancellation
    return logp.gather(-1, targets[:, None])[:, 0], mean, var, logp.max(-1).values


# fp32 logits held at once (positions x vocabulary; 64 MiB): a [batch, length, vocab] tensor in
# fp32 would be gigabytes for Gemma's 262k-token vocabulary
CHUNK_ELEMENTS = 1 << 24

# Causal LMs whose forward is exactly lm_head(decoder(...).last_hidden_state), then Gemma's final
# soft-capping where its config sets one: for these the head runs on chunks of positions, so not
# even the model's own dtype holds [batch, length, vocab]. Any other model gives its full logits,
# which are then read in chunks.
HEAD_SPLIT = {
    "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
    "GemmaForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM",
}  # fmt: skip


@dataclass(frozen=True)
class _Head:
    decoder: Any
    head: Any
    softcap: float | None
    vocab: int

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        import torch

        logits = self.head(hidden)
        return logits if self.softcap is None else torch.tanh(logits / self.softcap) * self.softcap


def _split_head(model) -> _Head | None:
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    if type(lm).__name__ not in HEAD_SPLIT:
        return None
    config = lm.config
    return _Head(getattr(lm, lm.base_model_prefix), lm.get_output_embeddings(),
                 getattr(config, "final_logit_softcapping", None), config.vocab_size)  # fmt: skip


def _next_logits(model, head: _Head | None, ids: torch.Tensor, mask: torch.Tensor):
    """One forward pass over a batch: its logits as a function of (row, positions), from the head
    over the decoder's hidden states or from the model's full logits; and the vocabulary size."""
    if head is not None:
        hidden = head.decoder(input_ids=ids, attention_mask=mask).last_hidden_state
        return (lambda row, at: head(hidden[row, at])), head.vocab
    logits = model(input_ids=ids, attention_mask=mask).logits
    return (lambda row, at: logits[row, at]), logits.shape[-1]


def _chunked_stats(logits_of: Callable[[slice], torch.Tensor], lo: int, hi: int, targets: torch.Tensor, vocab: int):
    """position_stats of the logits at positions lo..hi-1 (`logits_of(positions)`), a chunk of
    positions at a time; the four statistics as numpy arrays."""
    import torch

    chunk = max(1, CHUNK_ELEMENTS // vocab)
    parts = [
        position_stats(logits_of(slice(a, min(a + chunk, hi))), targets[a - lo : a - lo + chunk])
        for a in range(lo, hi, chunk)
    ]
    return [torch.cat([p[k] for p in parts]).cpu().numpy() for k in range(4)]


def token_stats(
    model,
    encoded: Encoded,
    starts: list[int],
    batch_size: int = 16,
    pad_id: int = 0,
    progress: bool = True,
    desc: str = "score",
    max_tokens: int = 0,
) -> TokenStats:
    """Batched forward passes (longest first, right padding; at most `batch_size` samples and, if
    `max_tokens`, that many padded tokens each) -> TokenStats in the original sample order."""
    import torch

    if any(not 1 <= s < len(seq) for s, seq in zip(starts, encoded.input_ids, strict=True)):
        raise ValueError("every sample needs at least one scored token after the first position")
    out: list = [None] * len(encoded)
    device, head = input_device(model), _split_head(model)
    batches = token_batches([len(seq) for seq in encoded.input_ids], batch_size, max_tokens)
    with torch.inference_mode():
        for idx in tqdm(batches, desc=desc, disable=not progress, unit="batch"):
            seqs = [encoded.input_ids[i] for i in idx]
            ids, mask = right_pad(seqs, pad_id, device)
            logits_of, vocab = _next_logits(model, head, ids, mask)
            for row, i in enumerate(idx):
                L, s = len(seqs[row]), starts[i]
                # position t-1 predicts token t; padding (t >= L) is never read
                out[i] = _chunked_stats(functools.partial(logits_of, row), s - 1, L - 1, ids[row, s:L], vocab)
    offsets = np.r_[0, np.cumsum([len(o[0]) for o in out])]
    cat = [np.concatenate([o[k] for o in out]).astype(np.float32) for k in range(4)]
    token_ids = np.concatenate([seq[s:] for seq, s in zip(encoded.input_ids, starts, strict=True)]).astype(np.int64)
    return TokenStats(cat[0], cat[1], cat[2], cat[3], token_ids=token_ids, offsets=offsets)


class EvidenceError(UserError, ValueError):
    """An attack asked for evidence this run cannot provide (e.g. too small a population split)."""


# --- statistics on demand -------------------------------------------------------------------------

# A variant is a re-encoding of the target samples that some attack scores besides the original
# (lowercased text, a non-member prefix, ...): fn(evidence, **params) -> (Encoded, scored starts).
VARIANTS: Registry[Callable[..., tuple[Encoded, list[int]]]] = Registry("text variant")


def register_variant(name: str):
    def deco(fn):
        return VARIANTS.register(name, fn)

    return deco


@register_variant("original")
def _original(ev: Evidence):
    enc = ev.encode(ev.examples)
    return enc, scored_starts(enc, ev.tokens)


class Evidence:
    """What the attacks read about the target samples, each piece computed once.

    A piece is measured on one *role* of the one resident PeftModel ("target": adapter on;
    "pretrained": adapter disabled, or a model of its own given as `pretrained` when the target is
    merged weights; more roles, e.g. a reference adapter, can be added), over one
    text *variant* of the samples, optionally in a model *state* (e.g. perturbed weights). Token
    statistics are the main piece; `measure` takes any other per-sample quantity (e.g. gradient
    norms). Everything is kept in memory and, with `cache_dir`, on disk, so attacks that read the
    same piece share one pass and a re-run recomputes nothing.

    Cache files are named here and nowhere else: CACHE_DIR/ROLE-KEY/PIECE, KEY a fingerprint of
    `key` (what the samples and scoring depend on) and the role's own key (what its weights depend
    on). A role whose key changes reads none of its old files, and they are removed. With
    `pretrained_dir`, the pre-trained role's files are there instead, shared by runs (a grid's cells)
    whose samples may differ: each is kept, none is stale.
    """

    def __init__(
        self,
        model,
        tokenizer,
        examples,
        encode: Callable,
        *,
        tokens: str = "response",
        batch_size: int = 16,
        max_batch_tokens: int = 0,
        population=(),
        cache_dir: Path | None = None,
        pretrained_dir: Path | None = None,
        key: str = "",
        role_keys: dict[str, str] | None = None,
        progress: bool = True,
        pretrained=None,
    ):
        self.model, self.tokenizer, self.examples = model, tokenizer, list(examples)
        self.encode, self.tokens, self.batch_size = encode, tokens, batch_size
        self.max_batch_tokens = max_batch_tokens  # padded tokens per pass (0: batch_size alone)
        self.population, self.cache_dir, self.key, self.progress = list(population), cache_dir, key, progress
        self.roles: dict[str, Callable] = {}
        self._dirs: dict[str, Path] = {}
        self._memo: dict[str, Any] = {}
        self._encoded: dict[str, tuple] = {}
        self.passes: list[dict] = []  # what was computed (not loaded), for the report
        keys = role_keys or {}
        self.add_role("target", contextlib.nullcontext, keys.get("target", ""))
        pt_key = keys.get("pretrained", "")
        if pretrained is not None:  # a model of its own (an audit of merged weights): a second resident model
            self.add_role("pretrained", lambda: contextlib.nullcontext(pretrained), pt_key, pretrained_dir)
        elif hasattr(model, "disable_adapter"):  # a PeftModel: the pre-trained model is it, adapter off
            self.add_role("pretrained", lambda: model.disable_adapter(), pt_key, pretrained_dir)

    def add_role(self, name: str, context: Callable, key: str = "", shared: Path | None = None) -> None:
        """A further view of the model, e.g. another adapter: `context()` enters it; `key` names
        what its weights depend on (its cached pieces are reused only under the same key). `shared`:
        a folder other runs read too, instead of cache_dir (nothing there is removed as stale)."""
        self.roles[name] = context
        if self.cache_dir is None:
            return
        where = (shared or self.cache_dir) / f"{name}-{fingerprint(self.key, key)}"
        for stale in self.cache_dir.glob(f"{name}-*"):
            if stale != where and stale.name.rsplit("-", 1)[0] == name:
                if stale.name == where.name and not where.exists():  # its own copy, now shared: moved
                    where.parent.mkdir(parents=True, exist_ok=True)
                    shutil.move(stale, where)
                else:
                    shutil.rmtree(stale)
        self._dirs[name] = where

    @contextlib.contextmanager
    def entered(self, role: str):
        """The model as `role` sees it: the resident model inside the role's context (adapter on, off,
        another adapter), or the model the role's context gives (a separately loaded pre-trained one)."""
        with self.roles[role]() as own:
            yield self.model if own is None else own

    def file(self, role: str, name: str) -> Path | None:
        """Where a piece of `role` called `name` is cached (None: no disk cache)."""
        return self._dirs[role] / name if role in self._dirs else None

    def encoded(self, variant: str = "original", **params):
        key = _key(variant, params)
        if key not in self._encoded:
            self._encoded[key] = VARIANTS[variant](self, **params)
        return self._encoded[key]

    def stats(self, role: str = "target", variant: str = "original", state=None, **params) -> TokenStats:
        """Token statistics of `role` over the samples' `variant` (params go to the variant)."""

        def compute(model, enc, starts):
            return token_stats(
                model,
                enc,
                starts,
                self.batch_size,
                self.tokenizer.pad_token_id,
                self.progress,
                desc=f"score {role} {_key(variant, params)}",
                max_tokens=self.max_batch_tokens,
            )

        return self._get("stats", role, variant, params, state, compute, TokenStats.load, TokenStats.save)

    def measure(
        self, name: str, fn: Callable, role: str = "target", variant: str = "original", state=None, **params
    ) -> np.ndarray:
        """A per-sample array fn(model, encoded, starts) -> [n], computed in `role`, cached as `name`."""
        return self._get(name, role, variant, params, state, fn, lambda p: np.load(p), _save_array)

    def _get(self, what, role, variant, params, state, compute, load, save):
        if role not in self.roles:
            hint = (
                " (the pre-trained model is the PeftModel with its adapter disabled: score a PeftModel)"
                if role == "pretrained"
                else ""
            )
            raise EvidenceError(f"no model role '{role}' here (have: {', '.join(self.roles)}){hint}")
        piece = _key(variant, params) + (f"@{state.key}" if state is not None else "")
        piece = piece if what == "stats" else f"{piece}-{what}"
        memo = f"{role}-{piece}"
        if memo in self._memo:
            return self._memo[memo]
        path = self.file(role, f"{piece}.{'npz' if what == 'stats' else 'npy'}")
        if path is not None and path.is_file():
            with contextlib.suppress(StaleCache):  # an older version's file: computed again below
                self._memo[memo] = read_cached(path, load)
                return self._memo[memo]
        enc, starts = self.encoded(variant, **params)
        t0 = time.perf_counter()
        with self.entered(role) as model, state.apply(model) if state is not None else contextlib.nullcontext():
            value = compute(model, enc, starts)
        self.passes.append(
            {
                "pass": memo,
                "samples": len(enc),
                "tokens": int(sum(map(len, enc.input_ids))),
                "seconds": round(time.perf_counter() - t0, 3),
            }
        )
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            save(value, path)
        self._memo[memo] = value
        return value

    def view(self, role: str) -> ModelView:
        return ModelView(self, role)

    @functools.cached_property
    def scored_texts(self) -> list[str]:
        """The text of each sample's scored tokens (what "x" is for text-level statistics like zlib)."""
        enc, starts = self.encoded()
        return [
            self.tokenizer.decode(seq[s:], skip_special_tokens=True)
            for seq, s in zip(enc.input_ids, starts, strict=True)
        ]

    def token_frequencies(self, corpus: str = "") -> np.ndarray:
        """Laplace-smoothed unigram frequencies over the vocabulary of the population texts plus, if
        given, a local text file (one document per line): the attacker's reference corpus (DC-PDD).
        Nothing is downloaded."""
        key = f"token-frequencies:{corpus}"
        if key not in self._memo:
            docs = [ex.text for ex in self.population]
            if corpus:
                path = Path(corpus).expanduser()
                if not path.is_file():
                    raise EvidenceError(f"reference corpus '{corpus}' does not exist (dc-pdd's corpus parameter)")
                docs += [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line]
            if not docs:
                raise EvidenceError(
                    "token frequencies (DC-PDD) need a reference corpus: set split.population > 0 "
                    "or give attack_params: {dc-pdd: {corpus: FILE}}"
                )
            ids = np.concatenate([np.asarray(seq, dtype=np.int64) for seq in self.tokenizer(docs)["input_ids"]])
            vocab = max(len(self.tokenizer), int(ids.max()) + 1)
            counts = np.bincount(ids, minlength=vocab).astype(np.float64)
            self._memo[key] = (counts + 1) / (counts.sum() + vocab)
        return self._memo[key]


@dataclass(frozen=True)
class ModelView:
    """One model's side of the evidence: what a scalar attack reads."""

    evidence: Evidence
    role: str

    def stats(self, variant: str = "original", state=None, **params) -> TokenStats:
        return self.evidence.stats(self.role, variant, state, **params)

    def measure(self, name: str, fn: Callable, variant: str = "original", state=None, **params) -> np.ndarray:
        return self.evidence.measure(name, fn, self.role, variant, state, **params)


def _save_array(value: np.ndarray, path: Path) -> None:
    with atomic(path) as tmp:
        np.save(tmp, value)


def _key(variant: str, params: dict) -> str:
    return variant + "".join(f"-{k}={v}" for k, v in sorted(params.items())) if params else variant
