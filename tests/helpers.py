"""Shared test helpers: a toy task and a tiny-model config."""

import random
import string

from loraleak.data import Example


def toy_examples(n: int = 80, seed: int = 0) -> list[Example]:
    """Short random 'key -> value' records: members and non-members from one distribution."""
    rng = random.Random(seed)
    words = ["Alpha", "beta", "Gamma", "delta", "OMEGA", "sigma", "Kappa", "theta"]  # mixed case: Lowercase has work
    out = []
    for i in range(n):
        key = "".join(rng.choice(string.ascii_lowercase) for _ in range(6))
        value = (
            " ".join(rng.choice(words) for _ in range(3)) + " " + "".join(rng.choice("0123456789") for _ in range(4))
        )
        out.append(Example(id=f"toy-{i:03d}", prompt=f"key {key}:", response=f" {value}"))
    return out


def tiny_config(tmp_path, **sections):
    from loraleak.config import from_dict

    data = {
        "model": {"name": "tiny-llama", "dtype": "float32"},
        "task": {"name": "toy", "max_prompt_tokens": 16, "max_response_tokens": 32},
        "split": {"members": 16, "nonmembers": 16, "population": 8, "seed": 0},
        "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        "train": {"epochs": 1, "lr": 0.01, "batch_size": 8},
        "eval": {"bootstrap": 20},
        "output_dir": str(tmp_path / "run"),
    }
    for k, v in sections.items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) else v
    return from_dict(data)
