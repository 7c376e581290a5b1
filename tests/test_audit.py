"""`loraleak audit` on an adapter trained elsewhere, `loraleak split export`, and records.csv."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import tiny_config, toy_examples
from safetensors.torch import save_file

from loraleak.adapter import AdapterError, check_fit, find_adapter
from loraleak.cli import main
from loraleak.config import load_config
from loraleak.data import TaskError
from loraleak.experiment import _audit_split, export_split, run
from loraleak.metrics import empirical_pvalues
from loraleak.models import ALIASES

ATTACKS = ["loss", "loss-pt", "zlib", "min-k", "min-k-pt", "min-k++", "recall"]


def test_a_run_exported_and_audited_gives_the_runs_scores(tmp_path, capsys):
    cfg = tiny_config(tmp_path, attacks=ATTACKS, eval={"bootstrap": 20, "utility": False})
    ran = run(cfg, progress=False, echo=lambda _: None)
    split_dir = tmp_path / "split"
    assert main(["split", "export", cfg.output_dir, "--output", str(split_dir)]) == 0
    assert [len((split_dir / f"{n}.jsonl").read_text().splitlines()) for n in ("members", "nonmembers")] == [16, 16]
    audit_dir = tmp_path / "audit"
    args = ["audit", "--model", "tiny-llama", "--adapter", f"{cfg.output_dir}/adapter", "--no-progress"]
    args += ["--members", str(split_dir / "members.jsonl"), "--nonmembers", str(split_dir / "nonmembers.jsonl")]
    args += ["--population", str(split_dir / "population.jsonl"), "--output", str(audit_dir)]
    args += ["--set", "model.dtype=float32", "--set", "eval.bootstrap=20", "--set", "eval.utility=false"]
    args += ["--set", "task.max_prompt_tokens=16", "--set", "task.max_response_tokens=32"]
    assert main([*args, "--attacks", ",".join(ATTACKS)]) == 0, capsys.readouterr().err
    audited = json.loads((audit_dir / "results.json").read_text())
    for name in ATTACKS:
        assert audited["attacks"][name]["auc"] == pytest.approx(ran.attacks[name]["auc"], abs=1e-9), name
    ran_scores, audit_scores = (pd.read_csv(d / "scores.csv") for d in (tmp_path / "run", audit_dir))
    assert list(ran_scores["id"]) == list(audit_scores["id"])
    np.testing.assert_allclose(audit_scores[ATTACKS].to_numpy(), ran_scores[ATTACKS].to_numpy(), rtol=0, atol=1e-6)
    sha = json.loads((audit_dir / "results.json").read_text())["audit"]["adapter_sha256"]
    assert len(sha) == 64 and audited["split"]["duplicates_dropped"] == 0
    assert audited["audit"]["model_identity"] == "built:tiny-llama"  # built in code: no weights file to hash
    assert not audited["blind_baseline"]["shifted"]  # a random split of one pool: the texts alone tell nothing
    out = capsys.readouterr().out
    assert "Verdict: the strongest attack" in out and "WARNING" not in out
    records = pd.read_csv(audit_dir / "records.csv")
    assert len(records) == 32 and {"loss", "loss_p"} <= set(records.columns)


def test_a_shifted_audit_warns_that_it_may_measure_the_split(tmp_path, capsys):
    cfg = tiny_config(tmp_path, attacks=["loss", "loss-pt"], eval={"bootstrap": 50, "utility": False})
    run(cfg, progress=False, echo=lambda _: None)
    pool = toy_examples(60)
    short = _records(tmp_path / "short.jsonl", pool[:30])  # members: one-line records
    long = [ex.__class__(ex.id, ex.prompt, ex.response * 6) for ex in pool[30:]]  # non-members: six times longer
    args = ["audit", "--model", "tiny-llama", "--adapter", f"{cfg.output_dir}/adapter", "--members", short]
    args += ["--nonmembers", _records(tmp_path / "long.jsonl", long), "--output", str(tmp_path / "audit")]
    assert main([*args, "--attacks", "loss,loss-pt", "--set", "eval.utility=false", "--no-progress"]) == 0
    assert "WARNING: a model-free classifier tells members from non-members" in capsys.readouterr().out
    assert json.loads((tmp_path / "audit" / "results.json").read_text())["blind_baseline"]["shifted"]


def _adapter(tmp_path, config=None, tensors=None, name="adapter_model.safetensors"):
    folder = tmp_path / "given"
    folder.mkdir(parents=True, exist_ok=True)
    default = {"peft_type": "LORA", "base_model_name_or_path": "tiny-llama", "r": 4}
    (folder / "adapter_config.json").write_text(json.dumps({**default, **(config or {})}))
    tensors = tensors or {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(4, 96)}
    if name.endswith(".safetensors"):
        save_file(tensors, str(folder / name))
    else:
        (folder / name).write_bytes(b"pickle")
    return folder


def test_an_adapter_is_checked_before_it_is_used(tmp_path, tiny):
    model, _ = tiny
    with pytest.raises(AdapterError, match="has no adapter_config.json"):
        find_adapter(str(tmp_path), "tiny-llama")
    with pytest.raises(AdapterError, match="is a PREFIX_TUNING adapter; loraleak audits the LoRA family"):
        find_adapter(str(_adapter(tmp_path, {"peft_type": "PREFIX_TUNING"})), "tiny-llama")
    pickled = _adapter(tmp_path / "p", name="adapter_model.bin")
    with pytest.raises(AdapterError, match="pickle weights.*--allow-pickle"):
        find_adapter(str(pickled), "tiny-llama")
    assert find_adapter(str(pickled), "tiny-llama", allow_pickle=True).path == pickled
    heard = []
    given = find_adapter(str(_adapter(tmp_path, {"use_dora": True})), "smollm2-135m", echo=heard.append)
    assert given.variant == "DoRA" and "trained on 'tiny-llama', audited on 'smollm2-135m'" in heard[0]
    converted = str(ALIASES["smollm2-135m"].cache_dir())  # what loraleak's own runs record as the base
    find_adapter(
        str(_adapter(tmp_path / "c", {"base_model_name_or_path": converted})), "smollm2-135m", echo=heard.append
    )
    assert len(heard) == 1
    check_fit(model, given)  # q_proj is [96 out, 96 in]: lora_A [4, 96] fits
    wide = {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(4, 128)}
    with pytest.raises(AdapterError, match=r"'model.layers.0.self_attn.q_proj' is \[96, 96\].*lora_A is \[4, 128\]"):
        check_fit(model, find_adapter(str(_adapter(tmp_path / "w", tensors=wide)), "tiny-llama"))
    deep = {"base_model.model.model.layers.9.self_attn.q_proj.lora_B.weight": torch.zeros(96, 4)}
    with pytest.raises(AdapterError, match="adapts 'model.layers.9.self_attn.q_proj', which this base model"):
        check_fit(model, find_adapter(str(_adapter(tmp_path / "d", tensors=deep)), "tiny-llama"))


def _records(path, examples):
    path.write_text(
        "".join(json.dumps({"id": e.id, "prompt": e.prompt, "response": e.response}) + "\n" for e in examples)
    )
    return str(path)


def test_audit_records_overlap_is_dropped_and_small_audits_refused(tmp_path):
    pool = toy_examples(40)
    members = _records(tmp_path / "m.jsonl", pool[:15])
    # a member again, with other spacing and case, under another id: not a non-member
    twin = pool[3].__class__("twin", pool[3].prompt.upper(), "  " + pool[3].response.replace(" ", "   "))
    nonmembers = _records(tmp_path / "n.jsonl", [*pool[15:30], twin])
    cfg = load_config(None, audit={"adapter": "x", "members": members, "nonmembers": nonmembers})
    _, split, _, dropped, _ = _audit_split(cfg)
    assert dropped == 1 and "twin" not in [ex.id for ex in split.nonmembers] and len(split.nonmembers) == 15
    few = load_config(
        None, audit={"adapter": "x", "members": members, "nonmembers": _records(tmp_path / "f", pool[30:35])}
    )
    with pytest.raises(TaskError, match="audit.nonmembers .* has 5 records.*at least 10 members and 10 non-members"):
        _audit_split(few)
    with pytest.raises(AdapterError, match="--members FILE --nonmembers FILE"):
        _audit_split(load_config(None, audit={"adapter": "x", "members": members}))


def test_an_audit_never_writes_into_the_default_runs_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["audit", "--model", "tiny-llama", "--members", "m.jsonl"]) == 2
    assert "--nonmembers FILE" in capsys.readouterr().err
    assert (tmp_path / "runs" / "audit").is_dir() and not (tmp_path / "runs" / "default").exists()


def test_split_export_refuses_data_that_changed(tmp_path):
    data = tmp_path / "d.jsonl"
    _records(data, toy_examples(60))
    cfg = tiny_config(
        tmp_path, task={"name": f"jsonl:{data}"}, attacks=["loss"], eval={"bootstrap": 0, "utility": False}
    )
    run(cfg, progress=False, echo=lambda _: None)
    member = json.loads((tmp_path / "run" / "manifest.jsonl").read_text().splitlines()[0])["id"]
    changed = [ex.__class__(ex.id, ex.prompt, ex.response + " edited" * (ex.id == member)) for ex in toy_examples(60)]
    _records(data, changed)
    with pytest.raises(TaskError, match="changed since it ran"):
        export_split(tmp_path / "run", tmp_path / "out")
    with pytest.raises(TaskError, match="give a finished run's output directory"):
        export_split(tmp_path, tmp_path / "out")


def test_records_pvalues_are_the_share_of_nonmembers_scoring_at_least_as_high():
    rng = np.random.default_rng(0)
    scores, null = rng.normal(size=50).round(1), rng.normal(size=30).round(1)  # ties on purpose
    slow = [np.mean([n >= s for n in null]) for s in scores]
    np.testing.assert_allclose(empirical_pvalues(scores, null), slow, rtol=0, atol=0)


def test_merged_weights_are_audited_against_a_second_resident_pretrained_model(tmp_path, capsys):
    """--finetuned: the adapter merged into full weights gives the adapter's scores, up to the rounding
    of W + BA (float32); attacks that train adapters beside the target are refused by name."""
    from peft import PeftModel

    from loraleak.models import load_model

    cfg = tiny_config(tmp_path, attacks=["loss", "loss-pt", "min-k++-pt"], eval={"bootstrap": 20, "utility": False})
    ran = run(cfg, progress=False, echo=lambda _: None)
    split_dir, merged_dir = tmp_path / "split", tmp_path / "merged"
    export_split(tmp_path / "run", split_dir)
    base, tok = load_model("tiny-llama", "float32")
    PeftModel.from_pretrained(base, f"{cfg.output_dir}/adapter").merge_and_unload().save_pretrained(merged_dir)
    tok.save_pretrained(merged_dir)
    args = ["audit", "--model", "tiny-llama", "--finetuned", str(merged_dir), "--no-progress"]
    args += ["--members", str(split_dir / "members.jsonl"), "--nonmembers", str(split_dir / "nonmembers.jsonl")]
    args += ["--output", str(tmp_path / "audit"), "--set", "model.dtype=float32", "--set", "eval.bootstrap=20"]
    args += ["--set", "task.max_prompt_tokens=16", "--set", "task.max_response_tokens=32"]
    assert main([*args, "--attacks", "loss,loss-pt,min-k++-pt"]) == 0, capsys.readouterr().err
    audited = json.loads((tmp_path / "audit" / "results.json").read_text())
    for name in ("loss", "loss-pt", "min-k++-pt"):
        assert audited["attacks"][name]["auc"] == pytest.approx(ran.attacks[name]["auc"], abs=0.02), name
    ran_scores, audit_scores = (pd.read_csv(d / "scores.csv") for d in (tmp_path / "run", tmp_path / "audit"))
    np.testing.assert_allclose(audit_scores["loss-pt"], ran_scores["loss-pt"], rtol=0, atol=1e-4)
    assert audited["audit"]["adapter_variant"] == "merged" and len(audited["audit"]["finetuned_sha256"]) == 64
    assert audited["utility"]["pretrained"] != audited["utility"]["target"]  # two models, not one twice
    assert main([*args, "--attacks", "loss,reference"]) == 2
    assert "attacks reference train adapters on the base model" in capsys.readouterr().err


def test_an_audit_takes_an_adapter_or_merged_weights_and_names_a_missing_model(tmp_path, capsys):
    pool = toy_examples(20)
    files = [
        "--members",
        _records(tmp_path / "m.jsonl", pool[:10]),
        "--nonmembers",
        _records(tmp_path / "n.jsonl", pool[10:]),
    ]
    args = ["audit", "--model", "tiny-llama", *files, "--output", str(tmp_path / "audit"), "--no-progress"]
    assert main([*args, "--adapter", str(tmp_path), "--finetuned", "tiny-llama"]) == 2
    assert "an audit needs one adapter (--adapter DIR, or --finetuned MODEL" in capsys.readouterr().err
    assert main([*args, "--finetuned", str(tmp_path / "merged")]) == 2
    assert f"unknown model '{tmp_path / 'merged'}'" in capsys.readouterr().err
