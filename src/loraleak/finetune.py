"""LoRA fine-tuning with PEFT on the member set: a plain, seeded training loop.

No HF Trainer: a loop this short is easier to read, deterministic on CPU under a seed, and
GGUF-derived models (plain tensors after our conversion) train in it like any other.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from tqdm.auto import tqdm

from .config import LoraConfig, TrainConfig
from .data import Encoded, right_pad


def peft_config(lora: LoraConfig) -> PeftLoraConfig:
    return PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                          target_modules=list(lora.target_modules), task_type="CAUSAL_LM")


def attach_lora(model, lora: LoraConfig, seed: int) -> PeftModel:
    """Wrap `model` in a PeftModel with a fresh adapter; initialisation (A random, B = 0) is seeded."""
    torch.manual_seed(seed)
    try:
        return get_peft_model(model, peft_config(lora))
    except ValueError as e:
        raise ValueError(f"lora.target_modules {list(lora.target_modules)} do not fit this model: {e}") from None


def add_lora(peft_model: PeftModel, name: str, lora: LoraConfig, seed: int) -> None:
    """A further fresh adapter `name` on the same resident model (reference, shadow, ...)."""
    torch.manual_seed(seed)
    peft_model.add_adapter(name, peft_config(lora))


@contextmanager
def active_adapter(peft_model: PeftModel, name: str):
    """Compute (and train) with adapter `name`; the target adapter "default" is active again after."""
    peft_model.set_adapter(name)
    try:
        yield
    finally:
        peft_model.set_adapter("default")


def collate(encoded: Encoded, idx, pad_id: int, loss_on: str = "response"):
    """Right-padded batch; labels are -100 on padding and, with loss_on='response', on the prompt."""
    seqs = [encoded.input_ids[i] for i in idx]
    ids, mask = right_pad(seqs, pad_id)
    labels = torch.full_like(ids, -100)
    for row, (i, seq) in enumerate(zip(idx, seqs)):
        start = encoded.response_start[i] if loss_on == "response" else 1
        labels[row, start:len(seq)] = ids[row, start:len(seq)]
    return ids, mask, labels


def train_lora(peft_model: PeftModel, encoded: Encoded, train: TrainConfig, pad_id: int,
               progress: bool = True, desc: str = "fine-tune") -> list[dict]:
    """Train the active adapter of `peft_model` in place on `encoded`; return the per-step log."""
    torch.manual_seed(train.seed)  # dropout masks
    order_rng = np.random.default_rng(train.seed)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    steps_per_epoch = -(-len(encoded) // train.batch_size)
    total = steps_per_epoch * train.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / total)  # linear decay to 0
    log, step = [], 0
    peft_model.train()
    bar = tqdm(total=total, desc=desc, disable=not progress, unit="step")
    for epoch in range(train.epochs):
        order = order_rng.permutation(len(encoded))
        for b in range(steps_per_epoch):
            ids, mask, labels = collate(encoded, order[b * train.batch_size:(b + 1) * train.batch_size],
                                        pad_id, train.loss_on)
            loss = peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()} at step {step}; "
                                         f"lower train.lr (now {train.lr}) or use model.dtype: float32")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            log.append({"step": step, "epoch": epoch, "loss": loss.item(), "lr": sched.get_last_lr()[0]})
            sched.step()
            step += 1
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    peft_model.eval()
    return log


def save_adapter(peft_model: PeftModel, out: Path, log: list[dict], name: str = "default") -> None:
    """Standard PEFT layout (adapter_config.json, adapter_model.safetensors) plus the training log.
    `out` holds exactly one adapter, whatever its name on the resident model."""
    peft_model.save_pretrained(str(out), safe_serialization=True, selected_adapters=[name])
    if name != "default":  # PEFT writes non-default adapters into a sub-folder of their name
        for f in (out / name).iterdir():
            f.replace(out / f.name)
        (out / name).rmdir()
    with open(out / "train_log.jsonl", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in log)


def load_adapter(model, adapter_dir: Path) -> PeftModel:
    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)


def load_extra_adapter(peft_model: PeftModel, adapter_dir: Path, name: str) -> None:
    peft_model.load_adapter(str(adapter_dir), adapter_name=name, is_trainable=False)
