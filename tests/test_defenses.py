"""The four defenses change what they should, and a grid of cells runs end to end."""

import json

import numpy as np
import pytest
import torch
from helpers import tiny_config, toy_examples
from safetensors import safe_open

from loraleak.config import DPConfig, LoraConfig, TrainConfig
from loraleak.data import encode_examples
from loraleak.finetune import (
    adapted_layers,
    attach_lora,
    collate,
    response_nll,
    save_adapter,
    train_lora,
    train_lora_dp,
)


def _encoded(tok, n=8):
    return encode_examples(toy_examples(n), tok, 16, 16)


def test_dropout_is_in_the_saved_adapter_config(tiny, tmp_path):
    model, tok = tiny
    peft_model = attach_lora(model, LoraConfig(r=4, alpha=8, dropout=0.25), seed=0)
    save_adapter(peft_model, tmp_path, [])
    assert json.loads((tmp_path / "adapter_config.json").read_text())["lora_dropout"] == 0.25


@pytest.mark.parametrize(
    "lora, kept",
    [
        (dict(exclude_first=1), [1, 2, 3]),
        (dict(exclude_last=2), [0, 1]),
        (dict(exclude_layers=[0, -1]), [1, 2]),
        (dict(layers=[1, 2, 3], exclude_layers=[2]), [1, 3]),
    ],
)
def test_excluded_layers_have_no_adapter_weights(tiny, tmp_path, lora, kept):
    model, tok = tiny  # 4 layers
    assert adapted_layers(LoraConfig(**lora), 4) == kept
    peft_model = attach_lora(model, LoraConfig(r=4, alpha=8, **lora), seed=0)
    save_adapter(peft_model, tmp_path, [])
    with safe_open(str(tmp_path / "adapter_model.safetensors"), "pt") as f:
        names = f.keys()  # a safetensors file, not a dict
        layers = {int(k.split("layers.")[1].split(".")[0]) for k in names}
    assert layers == set(kept)


def test_impossible_layer_choices_are_named():
    with pytest.raises(ValueError, match="name layer 7, but the model has 4 layers"):
        adapted_layers(LoraConfig(exclude_layers=[7]), 4)
    with pytest.raises(ValueError, match="leave no layer"):
        adapted_layers(LoraConfig(exclude_first=2, exclude_last=2), 4)


def _lora_params(peft_model):
    return {n: p for n, p in peft_model.named_parameters() if p.requires_grad}


def test_dp_sgd_clips_every_per_sample_gradient_to_the_bound(tiny):
    model, tok = tiny
    enc = _encoded(tok)
    C = 1e-3  # far below the per-sample gradient norms: every one is clipped
    peft_model = attach_lora(model, LoraConfig(r=4, alpha=8), seed=0)
    with torch.no_grad():  # B != 0, so A gets gradients too
        for n, p in _lora_params(peft_model).items():
            if "lora_B" in n:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    start = {n: p.detach().clone() for n, p in _lora_params(peft_model).items()}
    # plain per-sample gradients of each sample's own mean NLL, clipped to C, averaged
    expected = {n: torch.zeros_like(p) for n, p in start.items()}
    peft_model.train()
    for i in range(len(enc)):
        ids, mask, labels = collate(enc, [i], tok.pad_token_id)
        peft_model.zero_grad()
        response_nll(peft_model(input_ids=ids, attention_mask=mask).logits, labels)[0].backward()
        grads = {n: p.grad.detach().clone() for n, p in _lora_params(peft_model).items()}
        norm = torch.sqrt(sum((g**2).sum() for g in grads.values()))
        assert norm > 10 * C
        for n, g in grads.items():
            expected[n] += g * min(1.0, C / (float(norm) + 1e-6)) / len(enc)
    peft_model.zero_grad()
    # one DP step over the whole set (batch = n, so Poisson sampling takes every sample), no noise
    train = TrainConfig(epochs=1, batch_size=len(enc), lr=1e-9, seed=0)
    log, privacy = train_lora_dp(
        peft_model,
        enc,
        train,
        DPConfig(enabled=True, noise_multiplier=0.0, max_grad_norm=C),
        tok.pad_token_id,
        progress=False,
    )
    assert len(log) == 1 and log[0]["batch"] == len(enc) and privacy["steps"] == 1
    got = {n: p.grad for n, p in _lora_params(peft_model).items()}
    for n in expected:
        torch.testing.assert_close(got[n], expected[n], rtol=1e-4, atol=1e-9)
    total = torch.sqrt(sum((g**2).sum() for g in got.values()))
    assert total <= C * (1 + 1e-4)  # the mean of clipped gradients is within the bound


def test_dp_epsilon_falls_as_the_noise_rises(tiny):
    model, tok = tiny
    enc = _encoded(tok, 16)
    train = TrainConfig(epochs=1, batch_size=4, lr=1e-3, seed=0)
    eps = []
    for sigma in (0.7, 1.0, 2.0):
        peft_model = attach_lora(model, LoraConfig(r=4, alpha=8), seed=0)
        _, privacy = train_lora_dp(
            peft_model, enc, train, DPConfig(enabled=True, noise_multiplier=sigma), tok.pad_token_id, progress=False
        )
        eps.append(privacy["epsilon"])
        model = peft_model.unload()
    assert eps[0] > eps[1] > eps[2] > 0
    peft_model = attach_lora(model, LoraConfig(r=4, alpha=8), seed=0)  # a target epsilon sets the noise
    _, privacy = train_lora_dp(
        peft_model, enc, train, DPConfig(enabled=True, epsilon=eps[1]), tok.pad_token_id, progress=False
    )
    assert privacy["noise_multiplier"] == pytest.approx(1.0, abs=0.05)
    assert privacy["epsilon"] == pytest.approx(eps[1], rel=0.02)


def test_weight_decay_shrinks_the_adapter(tiny):
    model, tok = tiny
    enc = _encoded(tok, 16)
    norms = []
    for wd in (0.0, 1.0):
        peft_model = attach_lora(model, LoraConfig(r=4, alpha=8), seed=0)
        train_lora(
            peft_model,
            enc,
            TrainConfig(epochs=4, batch_size=4, lr=0.01, weight_decay=wd, seed=0),
            tok.pad_token_id,
            progress=False,
        )
        norms.append(_update_norm(peft_model))
        model = peft_model.unload()
    assert norms[1] < 0.95 * norms[0]  # measured: 0.91


def _update_norm(peft_model) -> float:
    """Frobenius norm of the adapter's weight update B @ A over all adapted modules (what it adds to the model)."""
    params = _lora_params(peft_model)
    return float(
        torch.sqrt(
            sum(
                ((params[n.replace("lora_A", "lora_B")] @ p).detach() ** 2).sum()
                for n, p in params.items()
                if "lora_A" in n
            )
        )
    )


def test_a_two_cell_grid_runs_end_to_end_and_writes_the_table_and_the_plot(tmp_path, capsys):
    import pandas as pd
    import yaml

    from loraleak.cli import main

    base = tiny_config(tmp_path).to_dict()
    base.pop("dp")
    base["output_dir"] = str(tmp_path / "grid")
    base["variants"] = [{"name": "plain"}, {"name": "dp", "dp.enabled": True, "dp.noise_multiplier": 1.0}]
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(base))
    assert main(["run", "--config", str(tmp_path / "grid.yaml"), "--no-progress"]) == 0
    out = tmp_path / "grid"
    printed = capsys.readouterr().out
    assert "2 cells" in printed and "| plain |" in printed and "| dp |" in printed
    frame = pd.read_csv(out / "grid.csv")
    assert list(frame["cell"]) == ["plain", "dp"]
    assert np.isinf(frame.loc[0, "epsilon"]) and 0 < frame.loc[1, "epsilon"] < np.inf
    assert frame["best_auc"].between(0, 1).all() and frame["utility"].notna().all()
    assert (out / "privacy_utility.png").stat().st_size > 10_000 and (out / "grid.md").is_file()
    for name in ("plain", "dp"):
        assert (out / "cells" / name / "results.json").is_file()
    privacy = json.loads((out / "cells" / "dp" / "adapter" / "privacy.json").read_text())
    assert privacy["epsilon"] == frame.loc[1, "epsilon"]


def test_a_cell_leaves_the_resident_base_model_as_it_came(tiny, tmp_path):
    from loraleak.experiment import run

    model, tok = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run(tiny_config(tmp_path, attacks=["loss", "mope"]), progress=False, echo=lambda *_: None, base=(model, tok))
    after = model.state_dict()
    assert set(after) == set(before)  # no LoRA modules left
    assert all(torch.equal(before[k], after[k]) for k in before)
