"""The one-pass logit suite's scoring, three ways over the same samples, as ratios measured in one run.

    .venv/bin/python bench/throughput.py [--model smollm2-135m] [--n 32] [--device auto] [--budget 1024]

1. loraleak: `loraleak.score` with preset `one-pass` on a PeftModel. That is one batched,
   length-sorted, padding-aware pass per role (fine-tuned, and pre-trained with the adapter off),
   per-sample statistics, and then every attack reads them.
2. per-sample: what common MIA code does. One sample at a time, one forward per role, and a
   full-vocabulary log-softmax at every position in fp32, from which the same statistics come.
3. floor: the same batched forward passes with nothing computed from the logits, the least a
   scorer that calls the model's forward must spend. loraleak can go below it: for Llama-like
   models it runs the head only on the scored positions (the response), a chunk at a time.
4. loraleak with `scoring.max_batch_tokens: --budget`: passes sized by padded tokens, not samples.

Prints the times' ratios and checks that the per-sample statistics equal loraleak's (max |dNLL|).
"""

import argparse
import time

import numpy as np
import torch

import loraleak
from loraleak.config import Config
from loraleak.data import dedup, encode_examples, load_task, make_split, right_pad
from loraleak.finetune import attach_lora
from loraleak.models import input_device
from loraleak.scoring import scored_starts, token_stats


def per_sample(model, enc, starts) -> np.ndarray:
    """Per-sample mean NLL of the scored tokens, one sample and one full log-softmax at a time."""
    out = []
    with torch.inference_mode():
        for seq, s in zip(enc.input_ids, starts, strict=True):
            ids = torch.tensor([seq], device=input_device(model))
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)  # [T, V]
            mean = (logp.exp() * logp).sum(-1)  # what Min-K%++ needs, as the batched path computes it
            _ = ((logp.exp() * (logp - mean[:, None]) ** 2).sum(-1)).cpu()
            out.append(-logp[s - 1 : len(seq) - 1].gather(-1, ids[0, s:, None]).mean().item())
    return np.array(out)


def floor(model, enc, pad_id: int, batch_size: int = 16) -> None:
    """The batched forward passes alone (same order and padding as loraleak's), logits thrown away."""
    order = sorted(range(len(enc)), key=lambda i: -len(enc.input_ids[i]))
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            ids, mask = right_pad([enc.input_ids[i] for i in order[b : b + batch_size]], pad_id, input_device(model))
            model(input_ids=ids, attention_mask=mask)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--budget", type=int, default=1024, help="scoring.max_batch_tokens of the fourth way")
    args = ap.parse_args()
    cfg = Config()
    examples, _ = dedup(load_task("docstring").examples)
    split = make_split(examples, args.n // 2, args.n // 2, args.n // 2, seed=0)  # population: DC-PDD's corpus
    model, tok = loraleak.load_model(args.model, cfg.model.dtype, device=args.device)
    peft = attach_lora(model, cfg.lora, seed=0)
    enc = encode_examples(split.targets, tok, cfg.task.max_prompt_tokens, cfg.task.max_response_tokens)
    starts = scored_starts(enc, "response")
    pad = tok.pad_token_id
    token_stats(peft, enc, starts, 16, pad, False)  # warm-up
    ours, t_ours = timed(
        lambda: loraleak.score(  # no labels: scores only, as the others (metrics are not scoring)
            peft, tok, split.targets, population=split.population, attacks=["one-pass"]
        )
    )
    _, t_budget = timed(
        lambda: loraleak.score(
            peft, tok, split.targets, population=split.population, attacks=["one-pass"],
            scoring={"max_batch_tokens": args.budget},
        )
    )  # fmt: skip
    baseline, t_per_sample = timed(lambda: [per_sample(peft, enc, starts), _pretrained(peft, per_sample, enc, starts)])
    _, t_floor = timed(lambda: [floor(peft, enc, pad), _pretrained(peft, floor, enc, pad)])
    reference = token_stats(peft, enc, starts, 16, pad, False).nll()
    tokens = sum(map(len, enc.input_ids))
    print(f"{args.model} on {input_device(peft)} ({cfg.model.dtype}): {len(enc)} samples, {tokens} tokens, 2 roles")
    print(f"attacks scored by loraleak: {len(ours.scores.columns) - 1}")
    print(f"loraleak / floor time:      {t_ours / t_floor:.2f}x")
    print(f"per-sample / loraleak time: {t_per_sample / t_ours:.2f}x")
    print(f"per-sample / floor time:    {t_per_sample / t_floor:.2f}x")
    print(f"loraleak / loraleak with max_batch_tokens {args.budget} time: {t_ours / t_budget:.2f}x")
    print(f"max |dNLL| per-sample vs batched: {np.abs(baseline[0] - reference).max():.2e}")


def _pretrained(peft, fn, *args):
    with peft.disable_adapter():
        return fn(peft, *args)


if __name__ == "__main__":
    main()
