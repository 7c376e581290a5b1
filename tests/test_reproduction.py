"""Issue 14: seeds as a grid axis, the large-batch DP recipe, the mitigation criterion and the claims of
reproduction.md."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import tiny_config, toy_examples
from scipy.stats import t

from loraleak import metrics as M
from loraleak import reproduction as R
from loraleak.config import ConfigError, expand_grid
from loraleak.finetune import adapted_layers, part_of_layers

# --- seeds: the grid axis -----------------------------------------------------------------------------


def test_seeds_repeat_every_cell_with_its_split_and_training_seed():
    cells = expand_grid(
        {"seeds": [3, 7], "variants": [{"name": "plain"}, {"name": "drop", "lora.dropout": 0.3, "seeds": [3]}]}
    )
    assert [(c.name, c.group, c.seed) for c in cells] == [
        ("plain_seed=3", "plain", 3), ("plain_seed=7", "plain", 7), ("drop_seed=3", "drop", 3),
    ]  # fmt: skip
    for c in cells:
        assert c.config.split.seed == c.config.train.seed == c.seed
        assert c.config.output_dir.endswith(f"cells/{c.name}")
    assert [c.seed for c in expand_grid({"repeat": 3})] == [0, 1, 2]
    assert [c.name for c in expand_grid({"variants": [{"name": "a"}]})] == ["a"]  # no seeds: as before


@pytest.mark.parametrize(
    "data, words",
    [
        ({"seeds": [0, 0]}, "distinct whole numbers"),
        ({"seeds": "0"}, "distinct whole numbers"),
        ({"repeat": 0}, "repeat"),
        ({"seeds": [0], "repeat": 2}, "not both"),
        ({"seeds": [0, 1], "variants": [{"name": "x", "train.seed": 4}]}, "cell x sets train.seed"),
    ],
)
def test_bad_seeds_are_named(data, words):
    with pytest.raises(ConfigError, match=words):
        expand_grid(data)


def test_over_seeds_is_the_mean_sample_sd_and_t_interval():
    x = np.array([0.61, 0.70, 0.66, 0.58])
    s = M.over_seeds(x)
    half = t.ppf(0.975, 3) * np.std(x, ddof=1) / 2
    assert s == pytest.approx({"mean": x.mean(), "sd": np.std(x, ddof=1), "ci_low": x.mean() - half,
                               "ci_high": x.mean() + half, "n": 4})  # fmt: skip
    assert np.isnan(M.over_seeds([0.7])["sd"])
    # seeds_needed: the first n whose half-width falls below the mean, were mean and sd the truth
    n = M.seeds_needed(0.02, 0.03)
    assert t.ppf(0.975, n - 1) * 0.03 / np.sqrt(n) < 0.02 <= t.ppf(0.975, n - 2) * 0.03 / np.sqrt(n - 1)
    assert M.seeds_needed(0.0, 0.03) == np.inf


def test_a_two_seed_grid_aggregates_its_cells_and_reproduce_writes_the_claims(tmp_path, capsys):
    from loraleak.cli import main

    data = tiny_config(tmp_path).to_dict()
    data |= {"output_dir": str(tmp_path / "grid"), "seeds": [0, 1]}
    data["variants"] = [{"name": "plain"}, {"name": "drop", "lora.dropout": 0.5}]
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(data))
    assert main(["reproduce", "--config", str(tmp_path / "grid.yaml"), "--no-progress"]) == 0
    out = tmp_path / "grid"
    runs, seeds = pd.read_csv(out / "grid.csv"), pd.read_csv(out / "grid_seeds.csv")
    assert list(runs["cell"]) == ["plain_seed=0", "plain_seed=1", "drop_seed=0", "drop_seed=1"]
    members = [pd.read_csv(out / "cells" / f"plain_seed={s}" / "scores.csv").query("split == 'member'") for s in (0, 1)]
    assert set(members[0]["id"]) != set(members[1]["id"])  # each seed drew its own split
    # the pre-trained model's passes and generations: once per seed, shared by the cells in OUT/pretrained
    assert [len(list((out / "pretrained" / d).glob("pretrained-*"))) for d in ("stats", "utility")] == [2, 2]
    assert not list((out / "cells").glob("*/*/pretrained-*"))
    for s in (0, 1):
        plain, drop = (
            json.loads((out / "cells" / f"{c}_seed={s}" / "results.json").read_text()) for c in ("plain", "drop")
        )
        assert "pretrained-original" in {p["pass"] for p in plain["forward_passes"]}
        assert "pretrained-original" not in {p["pass"] for p in drop["forward_passes"]}
        assert drop["utility"]["pretrained"] == plain["utility"]["pretrained"]
    for group, mine in runs.groupby("group"):
        row = seeds.set_index("cell").loc[group]
        for col in ["best_auc", "best_tpr@1%fpr", "utility", *(c for c in runs if c.startswith("auc:"))]:
            x = mine[col].to_numpy()
            half = t.ppf(0.975, 1) * np.std(x, ddof=1) / np.sqrt(2)
            assert row[col] == pytest.approx(x.mean())
            assert row[f"{col}:sd"] == pytest.approx(np.std(x, ddof=1))
            assert [row[f"{col}:ci_low"], row[f"{col}:ci_high"]] == pytest.approx([x.mean() - half, x.mean() + half])
        for _, r in mine.iterrows():  # each per-seed row is that cell's own result
            res = json.loads((out / "cells" / r["cell"] / "results.json").read_text())
            assert r["auc:loss"] == pytest.approx(res["attacks"]["loss"]["auc"])
    assert "±" in (out / "grid.md").read_text() and 'id="seeds"' in (out / "report.html").read_text()
    text = (out / "reproduction.md").read_text()
    assert "| LoRA dropout mitigates while keeping utility | tiny-llama, toy |" in text
    assert "seeds [0, 1], 4 runs" in text and "- **Time:** " in text and "wrote" in capsys.readouterr().out


# --- the large-batch DP recipe ------------------------------------------------------------------------


def test_a_large_batch_dp_cell_takes_the_poisson_steps_and_epsilon_it_should(tmp_path, monkeypatch):
    from opacus.accountants import RDPAccountant

    from loraleak import finetune
    from loraleak.data import register_task
    from loraleak.experiment import run

    register_task("toy-large")(lambda: toy_examples(200))
    passes = []
    real = finetune.micro_batches
    monkeypatch.setattr(finetune, "micro_batches", lambda *a: passes.append(real(*a)) or passes[-1])
    cfg = tiny_config(
        tmp_path,
        task={"name": "toy-large"},
        split={"members": 128, "nonmembers": 16, "population": 8},
        train={"epochs": 3, "batch_size": 64, "max_batch_tokens": 256, "lr": 0.005},
        dp={"enabled": True, "epsilon": 8.0},
        attacks=["loss"],
    )
    run(cfg, progress=False)
    privacy = json.loads((tmp_path / "run" / "adapter" / "privacy.json").read_text())
    log = [json.loads(line) for line in (tmp_path / "run" / "adapter" / "train_log.jsonl").read_text().splitlines()]
    assert privacy["steps"] == len(log) == 3 * 2 and privacy["sample_rate"] == 0.5  # epochs x n / batch
    sizes = np.array([r["batch"] for r in log])
    assert sizes.std() > 0 and abs(sizes.mean() - 64) < 3 * np.sqrt(128 * 0.25 / len(sizes))  # Poisson, mean q n
    assert max(len(p) for p in passes) > 1  # virtual steps: a step's 64 samples go in several passes
    accountant = RDPAccountant()
    for _ in range(privacy["steps"]):
        accountant.step(noise_multiplier=privacy["noise_multiplier"], sample_rate=0.5)
    assert privacy["epsilon"] == pytest.approx(accountant.get_epsilon(delta=1e-5))
    assert 7.9 < privacy["epsilon"] <= 8.0


# --- exclusion by part of the layers ------------------------------------------------------------------


def test_exclude_part_names_the_same_layers_whatever_the_depth():
    from loraleak.config import LoraConfig

    assert part_of_layers("middle-third", 30) == set(range(10, 20))
    assert part_of_layers("last-half", 18) == set(range(9, 18))
    assert part_of_layers("first-third", 24) == set(range(8))
    assert adapted_layers(LoraConfig(exclude_part="middle-half"), 30) == [*range(7), *range(22, 30)]


# --- the criterion and the claims, on hand-made numbers ---------------------------------------------


def _side(auc, tpr, utility, pretrained=0.2):
    return {"best_auc": auc, "best_tpr": tpr, "utility": utility, "utility_pretrained": [pretrained] * len(auc)}


@pytest.mark.parametrize(
    "defended, verdict",
    [
        (_side([0.60, 0.63, 0.61], [0.02, 0.03, 0.02], [0.50, 0.49, 0.51]), "mitigates"),
        (_side([0.55, 0.56, 0.54], [0.01, 0.01, 0.01], [0.30, 0.29, 0.31]), "costs utility"),
        (_side([0.55, 0.56, 0.54], [0.01, 0.01, 0.01], [0.19, 0.19, 0.19]), "costs utility"),  # below pre-trained
        (_side([0.699, 0.719, 0.690], [0.05, 0.06, 0.05], [0.50, 0.50, 0.51]), "no privacy gain"),
        (_side([0.60, 0.75, 0.68], [0.05, 0.06, 0.05], [0.50, 0.50, 0.51]), "not resolved"),
        (_side([0.60, 0.63, 0.61], [0.30, 0.32, 0.31], [0.50, 0.49, 0.51]), "not resolved"),  # TPR rises
    ],
)
def test_the_mitigation_criterion_as_documented(defended, verdict):
    base = _side([0.70, 0.72, 0.69], [0.06, 0.07, 0.05], [0.51, 0.50, 0.52])
    m = R.mitigation(base, defended)
    assert m["verdict"] == verdict
    drop = np.subtract(base["best_auc"], defended["best_auc"])
    half = t.ppf(0.975, 2) * np.std(drop, ddof=1) / np.sqrt(3)
    assert [m["auc_drop"]["ci_low"], m["auc_drop"]["ci_high"]] == pytest.approx(
        [drop.mean() - half, drop.mean() + half]
    )
    loss = (np.array(base["utility"]) - defended["utility"]) / base["utility"]
    assert m["utility_loss"]["mean"] == pytest.approx(loss.mean())
    one = R.mitigation({k: v[:1] for k, v in base.items()}, {k: v[:1] for k, v in defended.items()})
    assert one["verdict"] == "not resolved"  # one seed: no interval, no verdict
    blind = R.mitigation(base, {**defended, "utility": [np.nan] * 3})
    assert (blind["verdict"], blind["why"]) == ("not resolved", "utility not measured (eval.utility)")


def test_claims_from_hand_made_runs():
    cells = expand_grid(
        {
            "model": {"name": "tiny-llama"}, "task": {"name": "toy"}, "train": {"epochs": 3}, "seeds": [0, 1, 2],
            "variants": [
                {"name": "e3"}, {"name": "e1", "train.epochs": 1}, {"name": "drop", "lora.dropout": 0.5},
                {"name": "dp", "dp.enabled": True, "dp.epsilon": 8.0},
                {"name": "dp-base", "dp.enabled": True, "dp.noise_multiplier": 0.0, "dp.max_grad_norm": 1.0e6},
            ],
        }
    )  # fmt: skip
    auc = {"e3": [0.70, 0.72, 0.69], "e1": [0.55, 0.56, 0.54], "drop": [0.60, 0.63, 0.61], "dp": [0.5, 0.51, 0.5],
           "dp-base": [0.66, 0.69, 0.68]}  # fmt: skip
    utility = {"e3": 0.5, "e1": 0.4, "drop": 0.5, "dp": 0.21, "dp-base": 0.45}
    rows = [
        {"cell": c.name, "group": c.group, "seed": c.seed, "epsilon": np.inf, "nonmembers": 200,
         "best_attack": "loss", "best_auc": auc[c.group][c.seed], "best_tpr@1%fpr": 0.05, "utility": utility[c.group],
         "utility_pretrained": 0.2, "auc:loss": auc[c.group][c.seed], "auc:loss-pt": auc[c.group][c.seed] + 0.05,
         "tpr@1%fpr:loss": 0.05, "tpr@1%fpr:loss-pt": 0.05}
        for c in cells
    ]  # fmt: skip
    runs = R.runs_frame(cells, pd.DataFrame(rows))
    claims, defended = R.claims(runs)
    verdict = {r["claim"]: r["verdict"] for r in claims}
    assert verdict[R.CLAIMS["vulnerable"]] == "confirmed"
    assert verdict[R.CLAIMS["calibration"].format(attack="loss")] == "confirmed"
    assert verdict[R.CLAIMS["calibration"].format(attack="mope")] == "not measured"
    assert verdict[R.CLAIMS["epochs"]] == "confirmed"
    assert verdict[R.CLAIMS["dropout"]] == "confirmed"
    assert verdict[R.CLAIMS["DP-SGD"]] == "confirmed"  # it costs utility against its own recipe
    assert verdict[R.CLAIMS["rank"]] == verdict[R.CLAIMS["weight decay"]] == "not measured"
    assert {d["cell"]: d["baseline"] for d in defended} == {"drop": "e3", "dp": "dp-base"}
    text = R.markdown(cells, pd.DataFrame(rows), "loraleak reproduce", "x.yaml", "2026-11-29", "here")
    assert "| a higher rank leaks more" in text and "15 runs" in text


def test_the_privacy_utility_figure_draws_the_seeds_intervals_as_error_bars():
    from matplotlib.container import ErrorbarContainer

    from loraleak.report import privacy_utility_figure, seed_frame

    rows = [
        {"cell": f"{g}_seed={s}", "group": g, "seed": s, "epsilon": np.inf, "nonmembers": 200, "best_attack": "loss",
         "best_auc": 0.6 + 0.05 * s + 0.1 * (g == "b"), "best_tpr@1%fpr": 0.02 * s, "utility_metric": "rouge_l",
         "utility": 0.3 + 0.01 * s, "utility_pretrained": 0.1, "auc:loss": 0.6 + 0.05 * s, "tpr@1%fpr:loss": 0.02 * s}
        for g in ("a", "b") for s in (0, 1, 2)
    ]  # fmt: skip
    frame = pd.DataFrame(rows)
    fig = privacy_utility_figure(frame)
    bars = [c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 1 and len(fig.axes[0].collections[0].get_offsets()) == 2  # one point per cell
    low, high = seed_frame(frame).loc[0, ["best_auc:ci_low", "best_auc:ci_high"]]
    segment = bars[0].lines[2][1].get_segments()[0]  # the first cell's vertical bar
    assert segment[:, 1] == pytest.approx([low, high])
