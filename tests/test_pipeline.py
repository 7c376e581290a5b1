import json

import pandas as pd
import pytest
import yaml
from helpers import tiny_config

from loraleak.attacks.registry import AttackParamsError, PopulationError
from loraleak.cli import main
from loraleak.config import ConfigError
from loraleak.data import TaskError, read_manifest
from loraleak.experiment import run
from loraleak.registry import UnknownName

OVERFIT = dict(
    lora={
        "r": 16,
        "alpha": 32,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    },
    train={"epochs": 60, "lr": 0.01, "batch_size": 8},
)  # memorises the 16 members (loss ~0.3)


def test_overfit_tiny_llama_is_detected_and_everything_is_written(tmp_path):
    # MoPe's noise must be comparable to the weights to move them: tiny-llama's are ~0.1, SmolLM2's ~0.03
    cfg = tiny_config(tmp_path, attacks=["all"], attack_params={"mope": {"sigma": 0.05}}, **OVERFIT)
    res = run(cfg, progress=False, echo=lambda *_: None)
    assert res.training.final_loss < 0.5 * res.training.first_loss
    assert res.attacks["loss"]["auc"] > 0.9  # the pipeline can detect membership
    for name, m in res.attacks.items():
        # SPV-MIA by design calibrates against a reference fine-tuned on the target's own generations;
        # an over-fitted tiny byte-level model's generations are stitched from its members' fragments,
        # so the reference learns part of the membership signal too (measured: 0.74). Bound: 0.65.
        assert m["auc"] >= (0.65 if name == "spv-mia" else 0.8), name
    # one pass per model and text variant (and per MoPe perturbation, gradient kind): nothing twice
    passes = [p["pass"] for p in res.forward_passes]
    assert len(passes) == len(set(passes))
    assert {
        f"{role}-{v}" for role in ("target", "pretrained") for v in ("original", "lowercase", "recall-prefix-shots=3")
    } <= set(passes)
    assert sum("@mope" in p for p in passes) == 2 * 5
    assert sum("neighbour-" in p for p in passes) == 2 * 5
    assert set(res.family_time_s) == {
        "reference-free",
        "pretrained-reference",
        "reference-model",
        "shadow",
        "label-only",
    }
    out = tmp_path / "run"
    saved = json.loads((out / "results.json").read_text())
    assert saved["split"]["members"] == 16 and saved["config"]["model"]["dtype"] == "float32"
    assert len(saved["attacks"]) == 36 and "ci" in saved["attacks"]["loss"]
    assert len(list((out / "adapters").glob("shadow-*-of-4-seed0/adapter_model.safetensors"))) == 4
    assert (out / "adapters" / "reference" / "adapter_model.safetensors").is_file()
    scores = pd.read_csv(out / "scores.csv")
    assert list(scores.columns[:4]) == ["id", "split", "loss", "loss-pt"] and len(scores) == 32
    manifest = read_manifest(out / "manifest.jsonl")
    member_ids = {r["id"] for r in manifest if r["split"] == "member"}
    assert set(scores.loc[scores.split == "member", "id"]) == member_ids
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert len((out / "adapter" / "train_log.jsonl").read_text().splitlines()) == 120
    assert (out / "roc.png").stat().st_size > 0 and (out / "roc.csv").is_file()


def test_logit_only_attacks_add_no_forward_pass(tmp_path):
    names = ["loss", "zlib", "min-k", "min-k++", "dc-pdd"]
    res = run(tiny_config(tmp_path, attacks=names + [f"{n}-pt" for n in names]), progress=False, echo=lambda *_: None)
    assert [(p["pass"], p["samples"]) for p in res.forward_passes] == [
        ("target-original", 32),
        ("pretrained-original", 32),
    ]


def test_same_config_and_seed_give_the_same_adapter_and_scores(tmp_path):
    a = tiny_config(tmp_path / "a")
    b = tiny_config(tmp_path / "b")
    run(a, progress=False, echo=lambda *_: None)
    run(b, progress=False, echo=lambda *_: None)

    def ad(c):
        return (tmp_path / c / "run" / "adapter" / "adapter_model.safetensors").read_bytes()

    assert ad("a") == ad("b")
    sa, sb = (pd.read_csv(tmp_path / c / "run" / "scores.csv") for c in "ab")
    pd.testing.assert_frame_equal(sa, sb)
    c = tiny_config(tmp_path / "c", train={"seed": 1})
    run(c, progress=False, echo=lambda *_: None)
    assert ad("c") != ad("a")


def test_stochastic_attacks_repeat_under_the_same_seed(tmp_path):
    stochastic = ["neighbourhood", "mope", "spv-mia", "lira-online", "rmia-offline", "samia"]
    for d in ("a", "b"):
        run(
            tiny_config(tmp_path / d, attacks=stochastic, eval={"bootstrap": 0}, **OVERFIT),
            progress=False,
            echo=lambda *_: None,
        )
    a, b = (pd.read_csv(tmp_path / d / "run" / "scores.csv") for d in "ab")
    pd.testing.assert_frame_equal(a, b)
    assert a[stochastic].std().min() > 0  # real, varying scores


def _no_recomputation(monkeypatch):
    """Training, scoring passes and generation all fail from here on: only cached products may be read."""
    from loraleak import finetune, scoring, utility

    for module, name in ((finetune, "train_lora"), (scoring, "token_stats"), (utility, "continuations")):
        monkeypatch.setattr(module, name, lambda *a, name=name, **k: pytest.fail(f"recomputed: {name}"))


def test_rerun_reuses_finished_stages_and_eval_changes_recompute_only_metrics(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path)
    first = run(cfg, progress=False, echo=lambda *_: None)
    assert first.forward_passes and first.utility
    said = []
    with monkeypatch.context() as m:
        _no_recomputation(m)
        cfg.eval.bootstrap = 0  # eval is an input of the metrics alone
        second = run(cfg, progress=False, echo=said.append)
    assert any("reusing the adapter" in s for s in said) and second.forward_passes == []
    assert second.attacks["loss"]["auc"] == first.attacks["loss"]["auc"] and "ci" not in second.attacks["loss"]
    assert second.utility == first.utility
    said.clear()
    cfg.train.lr = 0.02  # a training input changed: retrain and rescore it; the pre-trained model's pass stays
    third = run(cfg, progress=False, echo=said.append)
    assert not said and [p["pass"] for p in third.forward_passes] == ["target-original"]
    assert len(list((tmp_path / "run" / "stats").glob("target-*"))) == 1  # the stale statistics are gone


def test_extra_adapter_is_keyed_by_the_inputs_of_its_data(tmp_path, monkeypatch):
    spv = {"m": 1, "max_new_tokens": 4, "seed": 0}
    said: list[str] = []
    run(tiny_config(tmp_path, attacks=["spv-mia"], attack_params={"spv-mia": spv}), progress=False, echo=said.append)
    key = json.loads((tmp_path / "run" / "adapters" / "spv-reference" / "loraleak-key.json").read_text())["key"]
    # spv-mia's m does not shape the reference's data: reused, nothing retrained or rescored but PV's one pair
    with monkeypatch.context() as m:
        from loraleak import finetune

        m.setattr(finetune, "train_lora", lambda *a, **k: pytest.fail("retrained"))
        run(
            tiny_config(tmp_path, attacks=["spv-mia"], attack_params={"spv-mia": {**spv, "m": 2}}),
            progress=False,
            echo=said.append,
        )
    assert any("reusing the spv-reference adapter" in s for s in said)
    said.clear()
    # max_new_tokens shapes its self-prompted data: the spv-reference adapter is retrained and rescored
    third = run(
        tiny_config(tmp_path, attacks=["spv-mia"], attack_params={"spv-mia": {**spv, "max_new_tokens": 6}}),
        progress=False,
        echo=said.append,
    )
    assert any("reusing the adapter" in s for s in said) and not any("spv-reference adapter" in s for s in said)
    new_key = json.loads((tmp_path / "run" / "adapters" / "spv-reference" / "loraleak-key.json").read_text())["key"]
    assert new_key != key
    assert "spv-reference-original" in {p["pass"] for p in third.forward_passes}
    assert "target-original" not in {p["pass"] for p in third.forward_passes}


def test_too_few_examples_and_unknown_attack_fail_before_training(tmp_path):
    with pytest.raises(AttackParamsError, match="attack_params.mope: unknown hyperparameter 'sigmaa'"):
        run(tiny_config(tmp_path, attack_params={"mope": {"sigmaa": 1}}), progress=False)
    with pytest.raises(AttackParamsError, match="attack_params: unknown attack 'mop'; did you mean 'mope'"):
        run(tiny_config(tmp_path, attack_params={"mop": {}}), progress=False)
    with pytest.raises(TaskError, match="yields 80 examples after deduplication"):
        run(tiny_config(tmp_path, split={"members": 50, "nonmembers": 50}), progress=False)
    with pytest.raises(UnknownName, match="unknown attack 'nope'"):
        run(tiny_config(tmp_path, attacks=["nope"]), progress=False)
    assert not (tmp_path / "run" / "adapter").exists()


def test_too_small_a_population_fails_before_training(tmp_path, capsys):
    for attacks, population, params, need in (
        (["loss", "recall"], 2, {}, "'recall' needs at least 3 population examples, and split.population gives 2"),
        (["recall-pt"], 4, {"recall": {"shots": 5}}, "attack 'recall-pt' needs at least 5"),
        (["loss", "dc-pdd"], 0, {}, "attack 'dc-pdd' needs at least 1"),
        (["wbc-ref"], 0, {}, "attack 'wbc-ref' needs at least 1"),
    ):
        cfg = tiny_config(tmp_path, split={"population": population}, attacks=attacks, attack_params=params)
        with pytest.raises(PopulationError, match=need):
            run(cfg, progress=False)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path, split={"population": 0}, attacks=["reference"]).to_dict()))
    assert main(["run", "--config", str(path), "--no-progress"]) == 2
    assert "attack 'reference' needs at least 1 population example, and" in capsys.readouterr().err
    assert not (tmp_path / "run" / "adapter").exists()


def test_an_odd_shadow_count_fails_before_training(tmp_path, capsys):
    cfg = tiny_config(tmp_path, attacks=["loss", "lira-online"], attack_params={"lira-online": {"k": 3}})
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert main(["run", "--config", str(path), "--no-progress"]) == 2
    assert "shadow attacks need an even number of shadows k >= 2, got k=3" in capsys.readouterr().err
    assert not (tmp_path / "run" / "adapter").exists()


def test_attack_missing_evidence_keeps_finished_work(tmp_path, capsys):
    # a missing DC-PDD corpus file is found when the attack reads it, after the target is trained and scored
    cfg = tiny_config(tmp_path, attacks=["loss", "dc-pdd"], attack_params={"dc-pdd": {"corpus": "no-such-file.txt"}})
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert main(["run", "--config", str(path), "--no-progress"]) == 2
    assert "reference corpus 'no-such-file.txt' does not exist" in capsys.readouterr().err
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    assert len(list((tmp_path / "run" / "stats").glob("target-*/original.npz"))) == 1


def test_cli_run_prints_the_table_and_reports_bad_input(tmp_path, capsys):
    cfg = tiny_config(tmp_path).to_dict()
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", "--config", str(path), "--no-progress", "--set", "eval.bootstrap=0"]) == 0
    out = capsys.readouterr().out
    assert "TPR@1%FPR" in out and "loss-pt" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "model: {name: no-such-model}\ntask: {name: toy}\nsplit: {members: 20, nonmembers: 20, population: 0}\n"
    )
    assert main(["run", "--config", str(bad), "--no-progress"]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err
    bad.write_text("task: {name: toy}\ntrain: {epochs: 0}\n")
    assert main(["run", "--config", str(bad)]) == 2
    assert capsys.readouterr().err == f"loraleak: error: {bad}: 'train.epochs' must be > 0, got 0\n"
    with pytest.raises(ConfigError):  # --debug: the user error with its traceback
        main(["--debug", "run", "--config", str(bad)])


def test_a_bug_keeps_its_traceback(monkeypatch):
    from loraleak import experiment

    def broken(*a, **k):
        raise KeyError("internal")  # a bug, not a user error: must not become one clear line

    monkeypatch.setattr(experiment, "run", broken)
    with pytest.raises(KeyError, match="internal"):
        main(["run", "--no-progress"])


def test_a_finished_run_is_read_back_without_loading_a_model(tmp_path, monkeypatch):
    from loraleak import experiment

    cfg = tiny_config(tmp_path, eval={"bootstrap": 20, "utility": False}, attacks=["loss", "loss-pt"])
    first = run(cfg, progress=False, echo=lambda _: None)
    monkeypatch.setattr(experiment, "load_base", lambda *a, **k: pytest.fail("loaded a model"))
    said: list[str] = []
    again = run(cfg, progress=False, echo=said.append)
    assert said == [f"[loraleak] {tmp_path / 'run'} is finished under this config: nothing recomputed"]
    assert {a: m["auc"] for a, m in again.attacks.items()} == {a: m["auc"] for a, m in first.attacks.items()}
    pd.testing.assert_frame_equal(again.scores, first.scores, check_dtype=False)
    (tmp_path / "run" / "roc.csv").unlink()  # a report file missing: not finished, so it runs (and loads)
    with pytest.raises(pytest.fail.Exception, match="loaded a model"):
        run(cfg, progress=False, echo=lambda _: None)
