"""The default demo on a GPU, beside the CPU run: throughput, peak memory, and the attack table.

    .venv/bin/python bench/gpu_check.py [--cpu-run runs/default] [--output runs/gpu-check]

Needs a CUDA build of torch in .venv (README: GPU users) and the demo's CPU run for the comparison
(`make demo`; without it only the GPU figures print). Prints: scoring tokens/s per forward pass,
fine-tuning tokens/s, peak GPU memory, and per attack the GPU and CPU AUCs with whether each lies in
the other's 95% CI (bf16 kernels differ between devices, so equal numbers are not expected; AUCs
within their CIs are). Takes a few minutes on one GPU.
"""

import argparse
import json
import time
from pathlib import Path

import torch

import loraleak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-run", default="runs/default")
    ap.add_argument("--output", default="runs/gpu-check")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit(f"no CUDA device: torch {torch.__version__} is a CPU build or no GPU is visible")
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = loraleak.run(model={"device": "cuda"}, output_dir=args.output, progress=False)
    wall = time.perf_counter() - t0
    print(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}; whole run {wall:.0f} s")
    print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    for p in result.forward_passes:
        print(f"scoring {p['pass']}: {p['tokens'] / p['seconds']:.0f} tokens/s ({p['samples']} samples)")
    trained = _trained_tokens(result)
    print(f"fine-tuning: {trained / result.timings_s['finetune']:.0f} tokens/s ({result.training.steps} steps)")
    cpu = Path(args.cpu_run) / "results.json"
    if not cpu.is_file():
        print(f"no CPU run at {cpu}: run `make demo` on a CPU machine to compare")
        return
    cpu_attacks = json.loads(cpu.read_text())["attacks"]
    print(f"{'attack':<14} {'GPU AUC':>8} {'CPU AUC':>8}  within each other's CI")
    for name, g in result.attacks.items():
        c = cpu_attacks[name]
        (c_low, c_high), (g_low, g_high) = c["ci"]["auc"], g["ci"]["auc"]
        inside = c_low <= g["auc"] <= c_high and g_low <= c["auc"] <= g_high
        print(f"{name:<14} {g['auc']:>8.3f} {c['auc']:>8.3f}  {'yes' if inside else 'NO'}")


def _trained_tokens(result) -> int:
    """Tokens the fine-tuning read: every member's encoded length, once per epoch."""
    from loraleak.data import encode_examples

    _, tok = loraleak.load_model(result.config.model.name, device="cpu")
    split = loraleak.load_split(result.config)
    t = result.config.task
    encoded = encode_examples(split.members, tok, t.max_prompt_tokens, t.max_response_tokens)
    return sum(map(len, encoded.input_ids)) * result.config.train.epochs


if __name__ == "__main__":
    main()
