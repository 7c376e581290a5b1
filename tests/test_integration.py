"""The real path: SmolLM2-135M-Instruct from its GGUF wheel, converted, fine-tuned, scored, reported."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open
from sklearn.metrics import roc_auc_score

from loraleak import models
from loraleak.config import from_dict
from loraleak.experiment import run

pytestmark = pytest.mark.integration


def test_gguf_conversion_cache_is_exact_and_reused(monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = models.ALIASES["smollm2-135m"].locate()
    direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    ids = tok("def add(a, b):\n    return a + b", return_tensors="pt").input_ids
    model, cached_tok = models.load_model("smollm2-135m", "float32")  # converts into the test cache
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, direct(input_ids=ids).logits)
    assert cached_tok("x = 1").input_ids == tok("x = 1").input_ids and cached_tok.pad_token is not None
    cache = models.ALIASES["smollm2-135m"].cache_dir()
    assert "quantization_config" not in json.loads((cache / "config.json").read_text())
    assert models.parameter_count(models.ALIASES["smollm2-135m"]) == 134_515_008
    monkeypatch.setattr(models, "convert_gguf", lambda *a: pytest.fail("converted twice"))
    models.load_model("smollm2-135m", "bfloat16")  # second load comes from the safetensors cache


def test_smollm2_end_to_end_on_a_handful_of_docstrings(tmp_path):
    cfg = from_dict(
        {
            "model": {"name": "smollm2-135m", "dtype": "bfloat16"},
            "task": {"name": "docstring", "max_prompt_tokens": 48, "max_response_tokens": 16},
            "split": {"members": 10, "nonmembers": 10, "population": 0, "seed": 0},
            "train": {"epochs": 1, "batch_size": 10, "lr": 0.001},
            "eval": {"bootstrap": 10},
            "attacks": ["loss", "loss-pt"],  # no population split: DC-PDD (in the default one-pass) needs one
            "output_dir": str(tmp_path / "run"),
        }
    )
    res = run(cfg, progress=False, echo=lambda *_: None)
    assert res.training.steps == 1 and np.isfinite(res.training.final_loss)
    frame = pd.read_csv(tmp_path / "run" / "scores.csv")
    for name in ("loss", "loss-pt"):  # the reported AUC is the one the written scores give
        auc = roc_auc_score((frame["split"] == "member").astype(int), frame[name])
        assert auc == pytest.approx(res.attacks[name]["auc"], rel=0, abs=1e-12)
    out = tmp_path / "run"
    with safe_open(str(out / "adapter" / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
        assert len(keys) == 30 * 2 * 2  # 30 layers x {q_proj, v_proj} x {lora_A, lora_B}
        assert any(torch.count_nonzero(f.get_tensor(k)) for k in keys if "lora_B" in k)  # B moved from 0
    scores = np.genfromtxt(out / "scores.csv", delimiter=",", skip_header=1, usecols=(2, 3))
    assert scores.shape == (20, 2) and np.isfinite(scores).all()
    assert json.loads((out / "results.json").read_text())["environment"]["torch"] == torch.__version__
