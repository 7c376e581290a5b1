"""Token-budget batching and chunked statistics (issue 12): the same numbers in fewer or smaller passes."""

import numpy as np
import pytest
import torch
from helpers import toy_examples
from hypothesis import given
from hypothesis import strategies as st
from test_scoring import encoded_toy, plain_stats

from loraleak import scoring
from loraleak.config import DPConfig, LoraConfig, TrainConfig
from loraleak.data import encode_examples, token_batches
from loraleak.finetune import attach_lora, train_lora, train_lora_dp
from loraleak.scoring import scored_starts, token_stats


@given(st.lists(st.integers(1, 60), max_size=40), st.integers(1, 9), st.sampled_from([0, 1, 30, 100, 400]))
def test_token_batches_cover_every_sample_once_within_both_limits(lengths, max_samples, max_tokens):
    batches = token_batches(lengths, max_samples, max_tokens)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(lengths, reverse=True)  # longest first: similar lengths share a pass
    for b in batches:
        assert len(b) <= max_samples
        padded = len(b) * max(lengths[i] for i in b)
        assert not max_tokens or padded <= max_tokens or len(b) == 1  # a sample over budget goes alone
    if not max_tokens:  # without a budget: the sorted order cut every max_samples
        assert [len(b) for b in batches[:-1]] == [max_samples] * (len(batches) - 1)


def test_a_token_budget_changes_the_passes_not_the_statistics(tiny):
    model, tok = tiny
    enc = encoded_toy(tok, 9)
    starts = scored_starts(enc, "full")
    passes: list[int] = []
    model.model.register_forward_pre_hook(lambda m, a, kw: passes.append(kw["input_ids"].numel()), with_kwargs=True)
    whole = token_stats(model, enc, starts, batch_size=9, pad_id=tok.pad_token_id, progress=False)
    assert len(passes) == 1
    passes.clear()
    budget = 2 * max(map(len, enc.input_ids))
    budgeted = token_stats(model, enc, starts, 9, tok.pad_token_id, False, max_tokens=budget)
    assert len(passes) > 1 and max(passes) <= budget
    for field in ("logprob", "mean", "var", "top1"):
        np.testing.assert_allclose(getattr(budgeted, field), getattr(whole, field), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("split_head", [True, False])
def test_statistics_in_chunks_of_positions_equal_the_per_sample_recomputation(tiny, monkeypatch, split_head):
    """The head (or the fp32 read of full logits) sees at most CHUNK_ELEMENTS // vocab positions at once."""
    model, tok = tiny
    vocab = model.config.vocab_size
    monkeypatch.setattr(scoring, "CHUNK_ELEMENTS", 3 * vocab)  # 3 positions per chunk
    if not split_head:
        monkeypatch.setattr(scoring, "HEAD_SPLIT", set())
    seen: list[int] = []
    model.lm_head.register_forward_hook(lambda m, args, out: seen.append(out[..., 0].numel()))
    enc = encoded_toy(tok)
    starts = scored_starts(enc, "response")
    stats = token_stats(model, enc, starts, batch_size=4, pad_id=tok.pad_token_id, progress=False)
    longest = max(map(len, enc.input_ids))
    if split_head:
        assert seen and max(seen) <= 3  # never [batch, length, vocab]
    else:
        assert max(seen) == 4 * longest  # the model's own full logits, read 3 positions at a time
    for i, (seq, s) in enumerate(zip(enc.input_ids, starts, strict=True)):
        lp, mean, var, _ = plain_stats(model, seq, s)
        sl = slice(stats.offsets[i], stats.offsets[i + 1])
        np.testing.assert_allclose(stats.logprob[sl], lp, atol=2e-5)
        np.testing.assert_allclose(stats.mean[sl], mean, atol=2e-5)
        np.testing.assert_allclose(stats.var[sl], var, atol=2e-4, rtol=1e-4)


def test_gemma_soft_capped_head_in_chunks_equals_its_full_logits(tiny, monkeypatch):
    """Gemma's final logit soft-capping is applied by the split head as by the model's own forward."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    _, tok = tiny
    config = Gemma3TextConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=32, final_logit_softcapping=5.0, pad_token_id=0, eos_token_id=0,
        bos_token_id=0, sliding_window=8, layer_types=["sliding_attention", "full_attention"],
    )  # fmt: skip
    torch.manual_seed(0)
    gemma = Gemma3ForCausalLM(config).eval()
    assert scoring._split_head(gemma) is not None
    enc = encoded_toy(tok)
    starts = scored_starts(enc, "full")
    monkeypatch.setattr(scoring, "CHUNK_ELEMENTS", 5 * len(tok))
    split = token_stats(gemma, enc, starts, batch_size=4, pad_id=0, progress=False)
    monkeypatch.setattr(scoring, "HEAD_SPLIT", set())
    full = token_stats(gemma, enc, starts, batch_size=4, pad_id=0, progress=False)
    for field in ("logprob", "mean", "var", "top1"):
        np.testing.assert_allclose(getattr(split, field), getattr(full, field), atol=2e-5, rtol=1e-5)
    lp, *_ = plain_stats(gemma, enc.input_ids[0], starts[0])  # soft-capped logits really are bounded
    assert np.abs(lp).max() < 2 * 5.0 + np.log(len(tok))


def _lora_weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def _trained(tok, train: TrainConfig, dp: DPConfig | None = None):
    from loraleak.models import load_model

    model, _ = load_model("tiny-llama", "float32")
    peft = attach_lora(model, LoraConfig(r=4, alpha=8), seed=0)
    enc = encode_examples(toy_examples(10), tok, 64, 32)
    passes: list[int] = []
    peft.get_base_model().model.register_forward_pre_hook(lambda m, a, kw: passes.append(1), with_kwargs=True)
    if dp is None:
        log = train_lora(peft, enc, train, tok.pad_token_id, progress=False)
    else:
        log, _ = train_lora_dp(peft, enc, train, dp, tok.pad_token_id, progress=False)
    return _lora_weights(peft), log, len(passes), max(map(len, enc.input_ids))


@pytest.mark.parametrize("dp", [None, DPConfig(enabled=True, noise_multiplier=0.5)], ids=["adamw", "dp-sgd"])
def test_gradient_accumulation_under_a_token_budget_gives_the_same_adapter(tiny, dp):
    _, tok = tiny
    train = TrainConfig(epochs=2, batch_size=5, lr=5e-3)
    one, log_one, passes_one, longest = _trained(tok, train, dp)
    budgeted = TrainConfig(**{**vars(train), "max_batch_tokens": 2 * longest})
    split, log_split, passes_split, _ = _trained(tok, budgeted, dp)
    assert passes_one == len(log_one) and passes_split > 2 * len(log_split)  # each step really took several passes
    assert [r["step"] for r in log_one] == [r["step"] for r in log_split]
    np.testing.assert_allclose([r["loss"] for r in log_split], [r["loss"] for r in log_one], rtol=1e-4)
    assert any(w.abs().sum() > 0 for n, w in one.items() if "lora_B" in n)  # the adapter did learn
    for name, weight in one.items():
        torch.testing.assert_close(split[name], weight, atol=1e-5, rtol=1e-4)
