import re

import numpy as np
import pandas as pd

from loraleak import metrics as M
from loraleak.cli import main


def _scores(tmp_path, n=150):
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(n), np.zeros(n)]
    frame = pd.DataFrame({"id": [f"x{i}" for i in range(2 * n)], "split": np.where(y == 1, "member", "nonmember")})
    frame["strong"], frame["weak"] = rng.normal(size=2 * n) + 2 * y, rng.normal(size=2 * n) + 0.2 * y
    frame.to_csv(tmp_path / "scores.csv", index=False)
    return y, frame


def _contrast(out, label):
    line = next(x for x in out.splitlines() if x.strip().startswith(label))
    value, lo, hi = (float(v) for v in re.findall(r"[+-]\d\.\d{3}", line.split(":", 1)[1]))
    return value, lo, hi


def test_compare_gives_paired_intervals_of_the_differences(tmp_path, capsys):
    y, frame = _scores(tmp_path)
    args = ["--tpr-factor", "2", "--auc-margin", "0.05", "--bootstrap", "200"]
    assert main(["compare", str(tmp_path), "strong", "weak", *args]) == 0
    out = capsys.readouterr().out
    auc = M.auc(y, frame["strong"]) - M.auc(y, frame["weak"]) - 0.05
    value, lo, hi = _contrast(out, "AUC strong - AUC weak - 0.05")
    assert value == round(auc, 3) and 0 < lo < value < hi
    tpr = M.tpr_at_fpr(y, frame["strong"], 0.01) - 2 * M.tpr_at_fpr(y, frame["weak"], 0.01)
    assert _contrast(out, "TPR@1%FPR strong - 2 x weak")[0] == round(tpr, 3)
    d = M.paired_bootstrap(y, {"strong": frame["strong"], "weak": frame["weak"]}, bootstrap=200, seed=0)
    share = (d["strong"]["auc"] - d["weak"]["auc"] >= 0.05) & (
        d["strong"]["tpr@0.01fpr"] >= 2 * d["weak"]["tpr@0.01fpr"]
    )
    assert f"resamples where strong meets both: {share.mean():.3f}" in out and share.mean() > 0.9
    main(["compare", str(tmp_path), "weak", "strong", "--bootstrap", "50"])
    assert "resamples where weak meets both: 0.000" in capsys.readouterr().out
    assert "100 resolve it" not in out  # 150 non-members resolve 1% FPR


def test_compare_names_what_is_missing(tmp_path, capsys):
    assert main(["compare", str(tmp_path), "a", "b"]) == 2
    assert f"{tmp_path}/scores.csv does not exist" in capsys.readouterr().err
    _scores(tmp_path, n=40)
    assert main(["compare", str(tmp_path), "strong", "los"]) == 2
    assert "has no attack 'los' (it has: strong, weak)" in capsys.readouterr().err
    assert main(["compare", str(tmp_path), "strong", "weak", "--bootstrap", "0"]) == 2
    assert "--bootstrap must be at least 1, got 0" in capsys.readouterr().err
    assert main(["compare", str(tmp_path), "strong", "weak", "--bootstrap", "50"]) == 0
    assert "40 non-members: TPR@1%FPR is the TPR at no false positive; 100 resolve it" in capsys.readouterr().out
