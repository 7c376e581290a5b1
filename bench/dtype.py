"""bf16 against fp32 on this machine's CPU, as ratios measured side by side in one run.

    .venv/bin/python bench/dtype.py [--model smollm2-135m] [--steps 3] [--batch 8]

A CPU without AVX512-BF16 or AMX has no bf16 arithmetic: torch converts to fp32 and back around
every kernel, so bf16 is slower there, not faster. `model.dtype: auto` picks fp32 on such a CPU
(`loraleak.models.resolve_dtype`). Prints what the CPU supports, the matmul throughput of each dtype
and the time of one fine-tuning step (forward + backward + AdamW on a LoRA adapter, the demo's
recipe) of each, and what `auto` chose.
"""

import argparse
import time

import torch

from loraleak.config import Config, LoraConfig, TrainConfig
from loraleak.data import dedup, encode_examples, load_task, make_split
from loraleak.finetune import attach_lora, train_lora
from loraleak.models import load_model, resolve_dtype


def matmul_gflops(dtype: torch.dtype, n: int = 1024, repeat: int = 20) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeat):
        a @ b
    return repeat * 2 * n**3 / (time.perf_counter() - t0) / 1e9


def step_seconds(name: str, dtype: str, steps: int, batch: int) -> float:
    """Seconds per fine-tuning step on the demo's docstrings, after one warm-up step."""
    cfg = Config()
    model, tok = load_model(name, dtype=dtype)
    examples, _ = dedup(load_task(cfg.task.name).examples)
    members = make_split(examples, batch * (steps + 1), 0, 0, seed=0).members
    caps = cfg.task.max_prompt_tokens, cfg.task.max_response_tokens
    warm, timed = encode_examples(members[:batch], tok, *caps), encode_examples(members[batch:], tok, *caps)
    peft_model = attach_lora(model, LoraConfig(), seed=0)
    train_lora(peft_model, warm, TrainConfig(epochs=1, batch_size=batch), tok.pad_token_id, progress=False)
    t0 = time.perf_counter()
    train_lora(peft_model, timed, TrainConfig(epochs=1, batch_size=batch), tok.pad_token_id, progress=False)
    return (time.perf_counter() - t0) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args()
    caps = {isa: getattr(torch.cpu, f"_is_{isa}_supported", lambda: False)() for isa in ("avx512_bf16", "amx_tile")}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; CPU: {caps}")
    print(f"auto on this CPU: {resolve_dtype('auto', 'cpu')}")
    fp32, bf16 = matmul_gflops(torch.float32), matmul_gflops(torch.bfloat16)
    print(f"matmul 1024^2: fp32 {fp32:.1f} GFLOPS, bf16 {bf16:.1f} GFLOPS: bf16 / fp32 = {bf16 / fp32:.2f}x")
    s32 = step_seconds(args.model, "float32", args.steps, args.batch)
    s16 = step_seconds(args.model, "bfloat16", args.steps, args.batch)
    print(f"fine-tuning step ({args.model}, batch {args.batch}): fp32 {s32:.1f} s, bf16 {s16:.1f} s: "
          f"bf16 takes {s16 / s32:.2f}x fp32's time")  # fmt: skip


if __name__ == "__main__":
    main()
