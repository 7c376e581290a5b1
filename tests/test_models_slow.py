"""The two larger bundled models, end to end. Marked slow: `make test` skips them; run them with
`.venv/bin/python -m pytest -m slow` once they are fetched (`loraleak models fetch gemma3-270m`,
`loraleak models fetch qwen2.5-coder-0.5b`). They read and fill the user's real model cache, so
only the first run pays the GGUF conversion (~45 s each)."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from loraleak import models
from loraleak.config import from_dict
from loraleak.experiment import run

pytestmark = pytest.mark.slow

EXPECTED = {  # alias: (transformers class, exact parameter count, tied output head)
    "gemma3-270m": ("Gemma3ForCausalLM", 268_098_176, True),
    "qwen2.5-coder-0.5b": ("Qwen2ForCausalLM", 630_167_424, False),
}


@pytest.fixture
def user_cache(monkeypatch, real_cache):
    monkeypatch.setenv("LORALEAK_CACHE", str(real_cache))


def _available(name):
    alias = models.ALIASES[name]
    if not (alias.cached() or alias.installed()):
        pytest.skip(f"{name} is neither cached nor installed: loraleak models fetch {name}")


@pytest.mark.parametrize("name", list(EXPECTED))
def test_model_loads_with_its_architecture_and_size(name, user_cache):
    _available(name)
    cls, n_params, tied = EXPECTED[name]
    model, tok = models.load_model(name, "bfloat16")
    assert type(model).__name__ == cls and model.config.tie_word_embeddings is tied
    assert models.parameter_count(models.ALIASES[name]) == n_params
    ids = tok("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    text = tok.decode(out[0, ids.input_ids.shape[1] :])
    if name == "qwen2.5-coder-0.5b":
        assert "Paris" in text  # a real, working de-quantized model
    assert text.strip()


@pytest.mark.parametrize("name", list(EXPECTED))
def test_model_runs_the_pipeline_on_a_handful_of_docstrings(name, user_cache, tmp_path):
    _available(name)
    cfg = from_dict(
        {
            "model": {"name": name, "dtype": "bfloat16"},
            "task": {"name": "docstring", "max_prompt_tokens": 32, "max_response_tokens": 8},
            "split": {"members": 10, "nonmembers": 10, "population": 0, "seed": 0},
            "train": {"epochs": 1, "batch_size": 4, "lr": 0.001},
            "eval": {"bootstrap": 10},
            "attacks": ["loss", "loss-pt"],  # no population split: DC-PDD (in the default one-pass) needs one
            "output_dir": str(tmp_path / "run"),
        }
    )
    res = run(cfg, progress=False, echo=lambda *_: None)
    assert np.isfinite(res.training.final_loss)
    frame = pd.read_csv(tmp_path / "run" / "scores.csv")  # the reported AUC is the one the written scores give
    auc = roc_auc_score((frame["split"] == "member").astype(int), frame["loss-pt"])
    assert auc == pytest.approx(res.attacks["loss-pt"]["auc"], rel=0, abs=1e-12)
    assert set(res.utility["target"]) == {"rouge_l", "perplexity"}
    assert torch.isfinite(torch.tensor(res.utility["pretrained"]["perplexity"]))
