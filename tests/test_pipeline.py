import json

import pandas as pd
import pytest
import yaml
from helpers import tiny_config

from loraleak.cli import main
from loraleak.data import TaskError, read_manifest
from loraleak.experiment import run

OVERFIT = dict(lora={"r": 16, "alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj",
                                                               "gate_proj", "up_proj", "down_proj"]},
               train={"epochs": 60, "lr": 0.01, "batch_size": 8})  # memorises the 16 members (loss ~0.3)


def test_overfit_tiny_llama_is_detected_and_everything_is_written(tmp_path):
    # MoPe's noise must be comparable to the weights to move them: tiny-llama's are ~0.1, SmolLM2's ~0.03
    cfg = tiny_config(tmp_path, attacks=["all"], attack_params={"mope": {"sigma": 0.05}}, **OVERFIT)
    res = run(cfg, progress=False, echo=lambda *_: None)
    assert res["training"]["final_loss"] < 0.5 * res["training"]["first_loss"]
    assert res["attacks"]["loss"]["auc"] > 0.9  # the pipeline can detect membership
    for name, m in res["attacks"].items():
        # SPV-MIA by design calibrates against a reference fine-tuned on the target's own generations;
        # an over-fitted tiny byte-level model's generations are stitched from its members' fragments,
        # so the reference learns part of the membership signal too (measured: 0.74). Bound: 0.65.
        assert m["auc"] >= (0.65 if name == "spv-mia" else 0.8), name
    # one pass per model and text variant (and per MoPe perturbation, gradient kind): nothing twice
    passes = [p["pass"] for p in res["forward_passes"]]
    assert len(passes) == len(set(passes))
    assert {f"{role}-{v}" for role in ("target", "pretrained")
            for v in ("original", "lowercase", "recall-prefix-shots=3")} <= set(passes)
    assert sum("@mope" in p for p in passes) == 2 * 5
    assert sum("neighbour-" in p for p in passes) == 2 * 5
    assert set(res["family_time_s"]) == {"reference-free", "pretrained-reference", "reference-model", "shadow",
                                         "label-only"}
    out = tmp_path / "run"
    saved = json.loads((out / "results.json").read_text())
    assert saved["split"]["members"] == 16 and saved["config"]["model"]["dtype"] == "float32"
    assert len(saved["attacks"]) == 28 and "ci" in saved["attacks"]["loss"]
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
    res = run(tiny_config(tmp_path, attacks=names + [f"{n}-pt" for n in names]), progress=False,
              echo=lambda *_: None)
    assert [(p["pass"], p["samples"]) for p in res["forward_passes"]] == [("target-original", 32),
                                                                          ("pretrained-original", 32)]


def test_same_config_and_seed_give_the_same_adapter_and_scores(tmp_path):
    a = tiny_config(tmp_path / "a")
    b = tiny_config(tmp_path / "b")
    run(a, progress=False, echo=lambda *_: None)
    run(b, progress=False, echo=lambda *_: None)
    ad = lambda c: (tmp_path / c / "run" / "adapter" / "adapter_model.safetensors").read_bytes()
    assert ad("a") == ad("b")
    sa, sb = (pd.read_csv(tmp_path / c / "run" / "scores.csv") for c in "ab")
    pd.testing.assert_frame_equal(sa, sb)
    c = tiny_config(tmp_path / "c", train={"seed": 1})
    run(c, progress=False, echo=lambda *_: None)
    assert ad("c") != ad("a")


def test_stochastic_attacks_repeat_under_the_same_seed(tmp_path):
    stochastic = ["neighbourhood", "mope", "spv-mia", "lira-online", "rmia-offline", "samia"]
    for d in ("a", "b"):
        run(tiny_config(tmp_path / d, attacks=stochastic, eval={"bootstrap": 0}, **OVERFIT), progress=False,
            echo=lambda *_: None)
    a, b = (pd.read_csv(tmp_path / d / "run" / "scores.csv") for d in "ab")
    pd.testing.assert_frame_equal(a, b)
    assert a[stochastic].std().min() > 0  # real, varying scores


def test_rerun_reuses_finished_stages(tmp_path):
    cfg = tiny_config(tmp_path)
    first = run(cfg, progress=False, echo=lambda *_: None)
    said = []
    cfg.eval.bootstrap = 0  # eval is not an input of the cached stages
    second = run(cfg, progress=False, echo=said.append)
    assert any("reusing the adapter" in s for s in said) and any("reusing token statistics" in s for s in said)
    assert second["attacks"]["loss"]["auc"] == first["attacks"]["loss"]["auc"]
    said.clear()
    cfg.train.lr = 0.02  # a training input changed: retrain and rescore
    run(cfg, progress=False, echo=said.append)
    assert not said


def test_too_few_examples_and_unknown_attack_fail_before_training(tmp_path):
    with pytest.raises(KeyError, match="attack_params.mope: unknown hyperparameter 'sigmaa'"):
        run(tiny_config(tmp_path, attack_params={"mope": {"sigmaa": 1}}), progress=False)
    with pytest.raises(KeyError, match="attack_params: unknown attack 'mop'; did you mean 'mope'"):
        run(tiny_config(tmp_path, attack_params={"mop": {}}), progress=False)
    with pytest.raises(TaskError, match="yields 80 examples after deduplication"):
        run(tiny_config(tmp_path, split={"members": 50, "nonmembers": 50}), progress=False)
    with pytest.raises(KeyError, match="unknown attack 'nope'"):
        run(tiny_config(tmp_path, attacks=["nope"]), progress=False)
    assert not (tmp_path / "run" / "adapter").exists()


def test_attack_missing_evidence_keeps_finished_work(tmp_path, capsys):
    cfg = tiny_config(tmp_path, split={"population": 2}, attacks=["loss", "recall"])
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert main(["run", "--config", str(path), "--no-progress"]) == 2
    assert "ReCaLL needs 3 population examples" in capsys.readouterr().err
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "run" / "stats" / "target-original.npz").is_file()


def test_cli_run_prints_the_table_and_reports_bad_input(tmp_path, capsys):
    cfg = tiny_config(tmp_path).to_dict()
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", "--config", str(path), "--no-progress", "--set", "eval.bootstrap=0"]) == 0
    out = capsys.readouterr().out
    assert "TPR@1%FPR" in out and "loss-pt" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {name: no-such-model}\ntask: {name: toy}\n")
    assert main(["run", "--config", str(bad), "--no-progress"]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err
    bad.write_text("task: {name: toy}\n")
    assert main(["run", "--config", str(bad)]) == 2
    assert "missing required key 'model'" in capsys.readouterr().err
