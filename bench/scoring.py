"""Side-by-side ratios for the scoring pass (absolute times mean little on a noisy machine).

  python bench/scoring.py [--model smollm2-135m] [--n 32]

Prints, measured in one run on the same samples:
  - batched (batch 16, right-padded, length-sorted) vs one sample at a time;
  - bfloat16 vs float32;
and checks that the statistics agree across them (max |delta| of per-sample NLL).
"""

import argparse
import time
from functools import partial

import numpy as np

from loraleak.data import dedup, encode_examples, load_task, make_split
from loraleak.models import load_model
from loraleak.scoring import scored_starts, token_stats


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=32)
    args = ap.parse_args()
    examples, _ = dedup(load_task("docstring").examples)
    split = make_split(examples, args.n // 2, args.n // 2, 0, seed=0)
    runs = {}
    for dtype in ("bfloat16", "float32"):
        model, tok = load_model(args.model, dtype)
        enc = encode_examples(split.targets, tok, 96, 32)
        starts = scored_starts(enc, "response")
        token_stats(model, enc, starts, batch_size=16, pad_id=tok.pad_token_id, progress=False)  # warm-up
        for bs in (16, 1):
            runs[dtype, bs] = timed(
                partial(token_stats, model, enc, starts, batch_size=bs, pad_id=tok.pad_token_id, progress=False)
            )
    t = {k: v[1] for k, v in runs.items()}
    nll = {k: v[0].nll() for k, v in runs.items()}
    print(f"{args.model}, {args.n} samples, {sum(len(s) for s in enc.input_ids)} tokens per pass")
    print(
        f"batched / per-sample time, bf16: {t['bfloat16', 16] / t['bfloat16', 1]:.2f}"
        f"   (max |dNLL| {np.abs(nll['bfloat16', 16] - nll['bfloat16', 1]).max():.2e})"
    )
    print(
        f"batched / per-sample time, fp32: {t['float32', 16] / t['float32', 1]:.2f}"
        f"   (max |dNLL| {np.abs(nll['float32', 16] - nll['float32', 1]).max():.2e})"
    )
    print(
        f"bf16 / fp32 time, batched:       {t['bfloat16', 16] / t['float32', 16]:.2f}"
        f"   (max |dNLL| {np.abs(nll['bfloat16', 16] - nll['float32', 16]).max():.2e})"
    )


if __name__ == "__main__":
    main()
