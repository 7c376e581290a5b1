"""The public Python API: `import loraleak` is light, and the README's example runs (on tiny-llama)."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

README = Path(__file__).parent.parent / "README.md"
MODEL_LINE = 'MODEL, TASK = "smollm2-135m", "docstring"'


def test_import_is_light_and_exposes_the_api():
    code = (
        "import sys, loraleak; assert 'torch' not in sys.modules; "
        "print(sorted(n for n in loraleak.__all__ if getattr(loraleak, n, None) is None))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_readme_python_example_runs_on_tiny_llama(tmp_path, monkeypatch, capsys):
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    assert MODEL_LINE in block and block.count('"runs/api') == 2  # the shape this test rewrites
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(block.replace(MODEL_LINE, 'MODEL, TASK = "tiny-llama", "toy"'), namespace)
    result, scores = namespace["result"], namespace["scores"]
    # the adapter reloaded from disk scores its own split exactly as the run did
    run_scores = pd.read_csv(tmp_path / "runs" / "api" / "scores.csv")
    assert list(scores.scores["id"]) == list(run_scores["id"])
    for name in ("loss", "loss-pt"):
        np.testing.assert_allclose(scores.scores[name], run_scores[name], rtol=0, atol=1e-6)
        assert scores.metrics[name]["auc"] == pytest.approx(result.attacks[name]["auc"], abs=1e-12)
    assert set(scores.metrics) == {"loss", "loss-pt", "min-k++"}
    printed = capsys.readouterr().out.split()
    assert float(printed[-1]) == scores.metrics["loss-pt"]["auc"]


def test_score_without_labels_or_a_peft_model(tiny):
    import loraleak
    from loraleak.scoring import EvidenceError

    model, tok = tiny
    texts = ["key abcdef: Alpha beta 1234", "key ghijkl: Gamma OMEGA 5678"]
    out = loraleak.score(model, tok, texts, attacks=["loss", "zlib"], eval={"bootstrap": 0})
    assert out.metrics is None and list(out.scores.columns) == ["id", "loss", "zlib"] and len(out.scores) == 2
    with pytest.raises(EvidenceError, match="no model role 'pretrained'.*score a PeftModel"):
        loraleak.score(model, tok, texts, attacks=["loss-pt"])
    with pytest.raises(EvidenceError, match="trains a further adapter"):
        loraleak.score(model, tok, texts, attacks=["reference"])
