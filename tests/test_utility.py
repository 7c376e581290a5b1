"""Task utility: the metrics against hand computations, and the batched, padded, cached measurement
against a plain per-sample recomputation on tiny-llama."""

import json

import numpy as np
import pytest
import torch
from helpers import tiny_config, toy_examples

from loraleak import metrics as M
from loraleak import utility
from loraleak.config import LoraConfig
from loraleak.data import Example, Task, encode_examples
from loraleak.experiment import run
from loraleak.finetune import attach_lora


def test_rouge_l_perplexity_and_classification_match_hand_computations():
    # LCS("the cat sat on the mat", "the cat lay on a mat") = the cat on mat: P = R = 4/6
    assert M.rouge_l(["the cat sat on the mat", "nothing alike"], ["the cat lay on a mat", "zzz"]) == pytest.approx(
        (4 / 6 + 0.0) / 2
    )
    assert M.rouge_l(["Returns the values"], ["return the value"]) == pytest.approx(1.0)  # Porter stemming
    assert M.perplexity(np.array([-1.0, -2.0, -3.0])) == pytest.approx(np.exp(2.0))
    # class a: P 1, R 1/2 -> F 2/3; class b: P 2/3, R 1 -> F 4/5
    got = M.classification(["a", "a", "b", "b"], ["a", "b", "b", "b"])
    assert got == pytest.approx({"accuracy": 0.75, "macro_f1": (2 / 3 + 4 / 5) / 2})
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        M.rouge_l(["a", "b"], ["a"])


@pytest.fixture
def lora_tiny(tiny):
    model, tok = tiny
    peft_model = attach_lora(model, LoraConfig(r=4, alpha=8), seed=0)
    with torch.no_grad():  # a non-zero adapter, so fine-tuned and pre-trained differ
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p, generator=torch.Generator().manual_seed(1)) * 0.5)
    return peft_model, tok


def _total_logprob(model, tok, prompt, response, caps):
    enc = encode_examples([Example("x", prompt, response)], tok, *caps)
    ids, s = enc.input_ids[0], enc.response_start[0]
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
    return float(sum(logp[t - 1, ids[t]] for t in range(s, len(ids))))


def test_classification_utility_is_the_likelier_choice_per_sample(lora_tiny, tmp_path):
    model, tok = lora_tiny
    caps = (16, 8)
    examples = [Example(f"e{i}", f"item {i} is", " odd" if i % 2 else " even") for i in range(10)]
    task = Task("parity", lambda: examples, kind="classification", choices=(" even", " odd"))
    ev = utility.HeldOut(
        model,
        tok,
        examples,
        lambda exs: encode_examples(exs, tok, *caps),
        batch_size=4,
        cache_dir=tmp_path / "u",
        progress=False,
        choices=task.choices,
    )
    got = utility.measure(ev, task, max_new_tokens=4)
    for role, ctx in (("target", torch.no_grad), ("pretrained", model.disable_adapter)):
        with ctx():
            predicted = [
                max(task.choices, key=lambda c: _total_logprob(model, tok, ex.prompt, c, caps)) for ex in examples
            ]
        assert got[role] == M.classification([ex.response for ex in examples], predicted)
    assert got["held_out"] == 10 and got["kind"] == "classification"


def test_generation_utility_matches_unpadded_greedy_decoding_and_perplexity(lora_tiny, tmp_path):
    model, tok = lora_tiny
    caps = (16, 6)
    examples = toy_examples(7)  # prompts of different token lengths share batches: left padding is exercised
    task = Task("toy", lambda: examples)
    ev = utility.HeldOut(
        model,
        tok,
        examples,
        lambda exs: encode_examples(exs, tok, *caps),
        batch_size=3,
        cache_dir=tmp_path / "u",
        progress=False,
    )
    got = utility.measure(ev, task, max_new_tokens=6)
    enc = encode_examples(examples, tok, *caps)
    for role, ctx in (("target", torch.no_grad), ("pretrained", model.disable_adapter)):
        texts, logprobs = [], []
        with ctx(), torch.no_grad():
            for seq, s in zip(enc.input_ids, enc.response_start, strict=True):
                ids = torch.tensor([seq[:s]])
                for _ in range(6):  # plain greedy decoding, one sample, no padding, no cache
                    nxt = model(input_ids=ids).logits[0, -1].argmax()
                    if nxt.item() == tok.eos_token_id:
                        break
                    ids = torch.cat([ids, nxt.view(1, 1)], 1)
                texts.append(tok.decode(ids[0, s:]))
                logp = torch.log_softmax(model(input_ids=torch.tensor([seq])).logits[0].double(), -1)
                logprobs += [float(logp[t - 1, seq[t]]) for t in range(s, len(seq))]
        refs = [
            tok.decode(seq[s:], skip_special_tokens=True)
            for seq, s in zip(enc.input_ids, enc.response_start, strict=True)
        ]
        assert got[role]["rouge_l"] == pytest.approx(M.rouge_l([t.strip() for t in texts], [r.strip() for r in refs]))
        assert got[role]["perplexity"] == pytest.approx(float(np.exp(-np.mean(logprobs))), rel=1e-4)
        cached = ev.file(role, "generations-new=6.jsonl").read_text().splitlines()
        assert [json.loads(line)["generation"] for line in cached] == texts
    assert got["target"] != got["pretrained"]


def test_utility_in_results_for_a_classification_task_and_no_response_dedup(tmp_path, monkeypatch):
    from loraleak.data import TASKS, register_task

    examples = [Example(f"c{i:02d}", f"number {i} parity:", " odd" if i % 2 else " even") for i in range(48)]
    with TASKS.restored():
        register_task("toy-parity", kind="classification", choices=(" even", " odd"))(lambda: examples)
        cfg = tiny_config(tmp_path, task={"name": "toy-parity"}, attacks=["loss", "loss-pt"])
        res = run(cfg, progress=False, echo=lambda *_: None)
        assert res.split.pool_after_dedup == 48  # two responses, 48 distinct texts: nothing dropped
        u = res.utility
        assert u["kind"] == "classification" and u["held_out"] == 16
        assert set(u["target"]) == set(u["pretrained"]) == {"accuracy", "macro_f1"}
        shift = res.split.shift_check
        assert all(isinstance(v, float) for v in shift.values())
        from loraleak import scoring

        monkeypatch.setattr(scoring, "token_stats", lambda *a, **k: pytest.fail("recomputed a cached pass"))
        res2 = run(cfg, progress=False, echo=lambda *_: None)  # resumed: utility from its cache, no new pass
        assert res2.utility == u
