"""LoRA fine-tuning with PEFT on the member set: a plain, seeded training loop.

No HF Trainer: a loop this short is easier to read, deterministic on CPU under a seed, and
GGUF-derived models (plain tensors after our conversion) train in it like any other.
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from tqdm.auto import tqdm

from .config import ConfigError, DPConfig, LoraConfig, TrainConfig
from .data import Encoded, right_pad, token_batches
from .errors import UserError
from .models import input_device


class TrainingError(UserError, FloatingPointError):
    """Training diverged; the message says which setting to change."""


TARGET_PRESETS: dict[str, list[str] | str] = {
    "attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "attention+mlp": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "all-linear": "all-linear",  # PEFT's own: every linear layer but the output head
}


def adapted_layers(lora: LoraConfig, n_layers: int) -> list[int] | None:
    """The layer indices that get adapters (None: all), after `lora.layers` and the exclusion defense."""
    bad = [i for i in [*lora.layers, *lora.exclude_layers] if not -n_layers <= i < n_layers]
    if bad:
        raise ConfigError(
            f"lora.layers / lora.exclude_layers name layer {bad[0]}, but the model has {n_layers} "
            f"layers (0..{n_layers - 1}, or -1..-{n_layers} from the end)"
        )
    excluded = (
        {i % n_layers for i in lora.exclude_layers}
        | set(range(min(lora.exclude_first, n_layers)))
        | set(range(max(0, n_layers - lora.exclude_last), n_layers))
        | part_of_layers(lora.exclude_part, n_layers)
    )
    kept = [i for i in sorted({i % n_layers for i in lora.layers} or range(n_layers)) if i not in excluded]
    if not kept:
        raise ConfigError(f"lora.layers and the exclusions leave no layer of {n_layers} with an adapter")
    return None if kept == list(range(n_layers)) else kept


def part_of_layers(part: str, n_layers: int) -> set[int]:
    """`lora.exclude_part` as layer indices: e.g. middle-third of 30 layers is 10..19, last-half 15..29."""
    if not part:
        return set()
    where, fraction = part.split("-")
    size = round(n_layers * {"third": 1 / 3, "half": 1 / 2}[fraction])
    start = {"first": 0, "middle": (n_layers - size) // 2, "last": n_layers - size}[where]
    return set(range(start, start + size))


def peft_config(lora: LoraConfig, n_layers: int) -> PeftLoraConfig:
    names = lora.target_modules
    targets = TARGET_PRESETS[names[0]] if len(names) == 1 and names[0] in TARGET_PRESETS else list(names)
    return PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        layers_to_transform=adapted_layers(lora, n_layers),
        task_type="CAUSAL_LM",
    )


def attach_lora(model, lora: LoraConfig, seed: int) -> PeftModel:
    """Wrap `model` in a PeftModel with a fresh adapter; initialisation (A random, B = 0) is seeded."""
    config = peft_config(lora, model.config.num_hidden_layers)
    torch.manual_seed(seed)
    try:
        return get_peft_model(model, config)
    except ValueError as e:
        raise ConfigError(f"lora.target_modules {list(lora.target_modules)} do not fit this model: {e}") from None


def add_lora(peft_model: PeftModel, name: str, lora: LoraConfig, seed: int) -> None:
    """A further fresh adapter `name` on the same resident model (reference, shadow, ...)."""
    base: Any = peft_model.get_base_model()
    config = peft_config(lora, base.config.num_hidden_layers)
    torch.manual_seed(seed)
    peft_model.add_adapter(name, config)


@contextmanager
def active_adapter(peft_model: PeftModel, name: str):
    """Compute (and train) with adapter `name`; the target adapter "default" is active again after."""
    peft_model.set_adapter(name)
    try:
        yield
    finally:
        peft_model.set_adapter("default")


def collate(encoded: Encoded, idx, pad_id: int, loss_on: str = "response", device=None):
    """Right-padded batch on `device`; labels are -100 on padding and, with loss_on='response', on the prompt."""
    seqs = [encoded.input_ids[i] for i in idx]
    ids, mask = right_pad(seqs, pad_id, device)
    labels = torch.full_like(ids, -100)
    for row, (i, seq) in enumerate(zip(idx, seqs, strict=True)):
        start = encoded.response_start[i] if loss_on == "response" else 1
        labels[row, start : len(seq)] = ids[row, start : len(seq)]
    return ids, mask, labels


def _finite(loss: torch.Tensor, step: int, lr: float) -> torch.Tensor:
    if not torch.isfinite(loss):
        raise TrainingError(
            f"training loss became {loss.item()} at step {step}; lower train.lr (now {lr}) or use model.dtype: float32"
        )
    return loss


def micro_batches(encoded: Encoded, batch, max_tokens: int) -> list[list[int]]:
    """A step's examples as forward passes of at most `max_tokens` padded tokens (0: one pass)."""
    if not max_tokens:
        return [list(batch)]
    lengths = [len(encoded.input_ids[i]) for i in batch]
    return [[int(batch[j]) for j in part] for part in token_batches(lengths, len(batch), max_tokens)]


def _accumulate(peft_model, encoded: Encoded, passes: list[list[int]], pad_id: int, train: TrainConfig, step: int):
    """Gradients of the step's token-mean loss, one backward per pass: each pass's summed loss over
    the step's labelled-token count, so the passes add up to the one-pass gradient. Its loss."""
    device = input_device(peft_model)
    if len(passes) == 1:
        ids, mask, labels = collate(encoded, passes[0], pad_id, train.loss_on, device)
        loss = _finite(peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss, step, train.lr)
        loss.backward()
        return loss.item()
    first = encoded.response_start if train.loss_on == "response" else [1] * len(encoded)
    labelled = sum(len(encoded.input_ids[i]) - first[i] for part in passes for i in part)
    total = 0.0
    for part in passes:
        ids, mask, labels = collate(encoded, part, pad_id, train.loss_on, device)
        loss = peft_model(input_ids=ids, attention_mask=mask, labels=labels, num_items_in_batch=labelled).loss
        _finite(loss, step, train.lr).backward()
        total += loss.item()
    return total


def train_lora(
    peft_model: PeftModel,
    encoded: Encoded,
    train: TrainConfig,
    pad_id: int,
    progress: bool = True,
    desc: str = "fine-tune",
) -> list[dict]:
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
            batch = order[b * train.batch_size : (b + 1) * train.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = _accumulate(peft_model, encoded, micro_batches(encoded, batch, train.max_batch_tokens), pad_id,
                               train, step)  # fmt: skip
            opt.step()
            log.append({"step": step, "epoch": epoch, "loss": loss, "lr": sched.get_last_lr()[0]})
            sched.step()
            step += 1
            bar.update()
            bar.set_postfix(loss=f"{loss:.3f}")
    bar.close()
    peft_model.eval()
    return log


def response_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample mean NLL of the labelled tokens ([B, T] logits' next-token predictions; -100 = ignored)."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    target = labels[:, 1:]
    keep = target != -100
    nll = -logp.gather(-1, target.clamp(min=0)[..., None])[..., 0] * keep
    return nll.sum(1) / keep.sum(1).clamp(min=1)


def train_lora_dp(
    peft_model: PeftModel,
    encoded: Encoded,
    train: TrainConfig,
    dp: DPConfig,
    pad_id: int,
    progress: bool = True,
    desc: str = "fine-tune (DP-SGD)",
) -> tuple[list[dict], dict]:
    """DP-SGD (Abadi et al., CCS 2016) on the active adapter with Opacus: Poisson-sampled batches
    (rate q = batch_size / n), each sample's gradient of its own mean NLL clipped to
    dp.max_grad_norm, Gaussian noise of std noise_multiplier x max_grad_norm on the sum, then AdamW
    (the optimizer only post-processes the privatised gradient). Opacus' RDP accountant gives epsilon
    at dp.delta. Returns the per-step log and the privacy record."""
    from opacus.accountants import RDPAccountant

    n = len(encoded)
    q = min(1.0, train.batch_size / n)
    steps = train.epochs * -(-n // train.batch_size)
    sigma = noise_multiplier(dp, q, steps)
    torch.manual_seed(train.seed)
    rng = np.random.default_rng(train.seed)
    gsm, opt, params = _dp_optimizer(peft_model, train, dp, sigma)
    sched = torch.optim.lr_scheduler.LambdaLR(opt.original_optimizer, lambda s: 1.0 - s / steps)
    accountant, log = RDPAccountant(), []
    peft_model.train()
    try:
        for step in tqdm(range(steps), desc=desc, disable=not progress, unit="step"):
            idx = np.flatnonzero(rng.random(n) < q)  # Poisson sampling: what the accountant assumes
            accountant.step(noise_multiplier=sigma, sample_rate=q)
            loss = _dp_step(gsm, opt, encoded, idx, pad_id, train, step, input_device(peft_model))
            epoch = step * train.batch_size // n
            log.append({"step": step, "epoch": epoch, "batch": len(idx), "loss": loss, "lr": sched.get_last_lr()[0]})
            sched.step()
    finally:
        gsm.remove_hooks()
        for p in params:
            p.grad_sample = None  # Opacus' per-sample gradients, freed
    peft_model.eval()
    record = {"epsilon": float(accountant.get_epsilon(delta=dp.delta)), "delta": dp.delta, "noise_multiplier": sigma}
    return log, {
        **record,
        "max_grad_norm": dp.max_grad_norm,
        "sample_rate": q,
        "steps": steps,
        "accountant": "rdp (Opacus)",
    }


def _dp_step(
    gsm, opt, encoded: Encoded, idx: np.ndarray, pad_id: int, train: TrainConfig, step: int, device: Any
) -> float:
    """One DP-SGD step on the samples `idx` (DPOptimizer: clip per sample, add noise, then AdamW); its
    loss. Over train.max_batch_tokens the samples go in several passes: Opacus' skipped steps add up
    their clipped per-sample gradients, and the last pass adds the noise once and steps."""
    if not len(idx):
        return float("nan")  # an empty batch releases nothing; accounting it anyway only overstates epsilon
    passes = micro_batches(encoded, idx, train.max_batch_tokens)
    total = 0.0
    for k, part in enumerate(passes):
        opt.zero_grad(set_to_none=True)  # per-sample gradients of the last pass; their clipped sum stays
        ids, mask, labels = collate(encoded, part, pad_id, train.loss_on, device)
        loss = _finite(response_nll(gsm(input_ids=ids, attention_mask=mask).logits, labels).mean(), step, train.lr)
        with warnings.catch_warnings():
            # Opacus' hook on the first adapted layer, whose input (the frozen embeddings) needs no gradient:
            # torch warns, but per-sample gradients come from the layer's activations and output gradients
            warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed")
            loss.backward()
        opt.signal_skip_step(do_skip=k < len(passes) - 1)
        opt.step()
        total += loss.item() * len(part)
    return total / len(idx)


def noise_multiplier(dp: DPConfig, sample_rate: float, steps: int) -> float:
    """dp.noise_multiplier, or the one that reaches dp.epsilon at dp.delta after `steps` (RDP accountant)."""
    if dp.epsilon <= 0:
        return dp.noise_multiplier
    from opacus.accountants.utils import get_noise_multiplier

    return float(
        get_noise_multiplier(
            target_epsilon=dp.epsilon, target_delta=dp.delta, sample_rate=sample_rate, steps=steps, accountant="rdp"
        )
    )


def _dp_optimizer(peft_model: PeftModel, train: TrainConfig, dp: DPConfig, sigma: float):
    """Opacus' per-sample gradient hooks on the trainable (LoRA) layers (the frozen base, rotary
    buffers included, is left alone) and its DP optimizer around AdamW."""
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    gsm = GradSampleModule(peft_model, loss_reduction="mean", strict=False)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = DPOptimizer(
        torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay),
        noise_multiplier=sigma,
        max_grad_norm=dp.max_grad_norm,
        expected_batch_size=train.batch_size,
        generator=torch.Generator(params[0].device).manual_seed(train.seed),  # noise is drawn where the grads are
    )
    return gsm, opt, params


def save_adapter(peft_model: PeftModel, out: Path, log: list[dict], name: str = "default") -> None:
    """Standard PEFT layout (adapter_config.json, adapter_model.safetensors) plus the training log.
    `out` holds exactly one adapter, whatever its name on the resident model."""
    peft_model.save_pretrained(str(out), safe_serialization=True, selected_adapters=[name])
    if name != "default":  # PEFT writes non-default adapters into a sub-folder of their name
        for file in (out / name).iterdir():
            file.replace(out / file.name)
        (out / name).rmdir()
    (out / "train_log.jsonl").write_text("".join(json.dumps(row) + "\n" for row in log))


def load_adapter(model, adapter_dir: Path) -> PeftModel:
    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)


def load_extra_adapter(peft_model: PeftModel, adapter_dir: Path, name: str) -> None:
    peft_model.load_adapter(str(adapter_dir), adapter_name=name, is_trainable=False)
