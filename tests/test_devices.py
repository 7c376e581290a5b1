"""Where the model runs: `model.device` / `dtype: auto` resolve as documented, a device this machine lacks
is one clear line, and every tensor loraleak builds goes to the device of the model that reads it.

The last is tested on a CPU-only machine by making "meta" torch's default device: a tensor created
without an explicit device then lands on meta, and feeding it to the CPU model fails. So each stage
below passes only if it places every batch, noise and generator itself, as it must for CUDA."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_config, toy_examples

from loraleak.attacks.gradnorm import input_gradient_norms, lora_gradient_norms
from loraleak.attacks.mope import Perturbation
from loraleak.attacks.neighbourhood import top_k_candidates
from loraleak.attacks.spv import EmbeddingNoise
from loraleak.cache import Keys
from loraleak.cli import main
from loraleak.config import DPConfig, TrainConfig
from loraleak.data import encode_examples
from loraleak.experiment import numerics
from loraleak.finetune import attach_lora, train_lora, train_lora_dp
from loraleak.generation import continuations
from loraleak.models import ModelError, load_model, resolve_device, resolve_dtype
from loraleak.scoring import scored_starts, token_stats

no_gpu = pytest.mark.skipif(
    torch.cuda.is_available() or torch.backends.mps.is_available(),
    reason="checks what auto resolves to on a CPU-only machine; here a GPU is visible, so auto picks it",
)


@no_gpu
def test_devices_resolve_as_documented_on_a_cpu_machine(capsys):
    assert resolve_device("auto") == resolve_device("cpu") == "cpu"
    with pytest.raises(ModelError, match=r"model.device is 'cuda:1' but this torch .* sees 0 CUDA devices: install"):
        resolve_device("cuda:1")
    with pytest.raises(ModelError, match="MPS is not available"):
        resolve_device("mps")
    assert resolve_dtype("auto", "mps") == torch.float32
    assert resolve_dtype("float16", "cpu") == torch.float16
    assert main(["run", "--set", "model.device=gpu0"]) == 2  # refused before torch work, by name
    assert "model.device 'gpu0' is not one of auto, cpu, cuda, cuda:N, mps" in capsys.readouterr().err


@pytest.mark.parametrize("avx512_bf16, amx, dtype", [(False, False, "float32"), (True, False, "bfloat16"),
                                                   (False, True, "bfloat16")])  # fmt: skip
def test_auto_dtype_on_a_cpu_is_bf16_only_where_the_cpu_computes_in_it(monkeypatch, avx512_bf16, amx, dtype):
    from loraleak.config import ModelConfig
    from loraleak.experiment import numerics

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert resolve_dtype("auto", "cpu") == getattr(torch, dtype)
    assert numerics(ModelConfig(dtype="auto", device="cpu"))["dtype"] == dtype  # in the cache keys
    assert "dtype" not in numerics(ModelConfig(device="cpu"))  # a named dtype is in the config already


@no_gpu
def test_auto_and_cpu_share_one_cache_and_the_device_is_in_the_keys(tmp_path):
    auto, cpu = tiny_config(tmp_path), tiny_config(tmp_path, model={"device": "cpu"})
    assert numerics(auto.model) == numerics(cpu.model) == numerics()  # where it ran, resolved
    assert Keys(auto, "d", numerics(auto.model)).target() == Keys(cpu, "d", numerics(cpu.model)).target()
    mapped = dataclasses.replace(cpu.model, device_map="auto")
    assert numerics(mapped)["device_map"] == "auto"  # a device map changes where each layer runs: not shared


@pytest.fixture
def placed():
    """tiny-llama with a LoRA adapter, on the CPU, and a few encoded examples."""
    model, tok = load_model("tiny-llama", "float32", device="cpu")
    peft = attach_lora(model, tiny_config(Path(".")).lora, seed=0)
    enc = encode_examples(toy_examples(6), tok, 16, 32)
    return peft, tok, enc, scored_starts(enc, "response")


def test_every_stage_places_its_own_tensors_on_the_models_device(placed):
    peft, tok, enc, starts = placed
    pad = tok.pad_token_id
    prompts = [seq[:s] for seq, s in zip(enc.input_ids, enc.response_start, strict=True)]
    train = TrainConfig(epochs=1, batch_size=3, lr=1e-3)
    with torch.device("meta"):  # any tensor made without a device now lands here, not on the model's
        reference = token_stats(peft, enc, starts, 4, pad, False)
        train_lora(peft, enc, train, pad, progress=False)
        train_lora_dp(peft, enc, train, DPConfig(noise_multiplier=1.0), pad, progress=False)
        assert continuations(peft, tok, prompts, 4, batch_size=3)
        assert continuations(peft, tok, prompts, 4, batch_size=3, sample=True, seed=1)
        assert np.isfinite(input_gradient_norms(peft, enc, starts, 3, pad)).all()
        assert np.isfinite(lora_gradient_norms(peft, enc, starts)).all()
        assert top_k_candidates(peft, enc, starts, 2, 3, pad).shape[1] == 2
        for state in (Perturbation(sigma=0.01, index=0, seed=0), EmbeddingNoise(0.01, 0, 1, 0)):
            with state.apply(peft):
                perturbed = token_stats(peft, enc, starts, 4, pad, False)
            assert not np.allclose(perturbed.logprob, reference.logprob)
    assert np.isfinite(reference.logprob).all()


class Forwarded(Exception):
    """Raised by the device check at the model's first forward: what it was called with is recorded."""


def test_every_batch_goes_to_the_device_the_model_is_on(placed):
    """The model on the "meta" device (a device other than the CPU, as CUDA would be), its forward
    checked: every tensor given to it must be on meta. A batch left on the CPU fails here."""
    peft, tok, enc, starts = placed
    peft.to("meta")
    seen: list[str] = []

    def check(module, args, kwargs):
        seen.extend(t.device.type for t in [*args, *kwargs.values()] if isinstance(t, torch.Tensor))
        raise Forwarded

    # on the decoder: every pass goes through it (statistics call it directly, then the head in chunks)
    peft.get_base_model().model.register_forward_pre_hook(check, with_kwargs=True)
    peft.generate = lambda **kwargs: check(peft, (), kwargs)  # generate() itself cannot run on meta
    pad, train = tok.pad_token_id, TrainConfig(epochs=1, batch_size=3)
    prompts = [seq[:s] for seq, s in zip(enc.input_ids, enc.response_start, strict=True)]
    stages = {
        "token statistics": lambda: token_stats(peft, enc, starts, 4, pad, False),
        "fine-tuning": lambda: train_lora(peft, enc, train, pad, progress=False),
        # DP-SGD is left out: its noise generator lives on the gradients' device, and meta cannot hold one
        "generation": lambda: continuations(peft, tok, prompts, 4, batch_size=3),
        "input gradients": lambda: input_gradient_norms(peft, enc, starts, 3, pad),
        "LoRA gradients": lambda: lora_gradient_norms(peft, enc, starts),
        "neighbour candidates": lambda: top_k_candidates(peft, enc, starts, 2, 3, pad),
    }
    for name, stage in stages.items():
        seen.clear()
        with pytest.raises(Forwarded):
            stage()
        assert seen and set(seen) == {"meta"}, f"{name} gave the model tensors on {set(seen)}"
    with Perturbation(sigma=0.01, index=0, seed=0).apply(peft):  # noise added where each weight is
        pass
    with EmbeddingNoise(0.01, 0, 1, 0).apply(peft):
        embedded = peft.get_input_embeddings()(torch.zeros(1, 3, dtype=torch.long, device="meta"))
    assert embedded.device.type == "meta"
