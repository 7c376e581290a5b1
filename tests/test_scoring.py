import numpy as np
import pytest
import torch
from helpers import toy_examples

from loraleak.config import LoraConfig
from loraleak.data import encode_examples
from loraleak.finetune import attach_lora
from loraleak.models import load_model
from loraleak.scoring import Evidence, scored_starts, token_stats


def encoded_toy(tok, n=7):
    ex = toy_examples(n)
    ex = [type(e)(e.id, e.prompt * (1 + i % 3), e.response) for i, e in enumerate(ex)]  # ragged lengths
    return encode_examples(ex, tok, 64, 32)


def plain_stats(model, seq, start):
    """Per-sample re-computation: one unpadded sequence, full softmax in float64."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([seq])).logits[0].double()
    logp = torch.log_softmax(logits, -1).numpy()
    rows = logp[start - 1 : len(seq) - 1]
    lp = rows[np.arange(len(rows)), seq[start:]]
    p = np.exp(rows)
    mean = (p * rows).sum(-1)
    var = (p * (rows - mean[:, None]) ** 2).sum(-1)
    return lp, mean, var, rows.max(-1)


def logits_rows(model, seq, start):
    with torch.no_grad():
        return model(input_ids=torch.tensor([seq])).logits[0, start - 1 : len(seq) - 1].double().numpy()


@pytest.mark.parametrize("tokens", ["response", "full"])
def test_batched_statistics_equal_per_sample_recomputation(tiny, tokens):
    model, tok = tiny
    enc = encoded_toy(tok)
    starts = scored_starts(enc, tokens)
    stats = token_stats(model, enc, starts, batch_size=3, pad_id=tok.pad_token_id, progress=False)
    assert len(stats) == len(enc)
    for i, (seq, s) in enumerate(zip(enc.input_ids, starts, strict=True)):
        lp, mean, var, top1 = plain_stats(model, seq, s)
        sl = slice(stats.offsets[i], stats.offsets[i + 1])
        np.testing.assert_allclose(stats.logprob[sl], lp, atol=2e-5)
        np.testing.assert_allclose(stats.top1[sl], top1, atol=2e-5)
        np.testing.assert_array_equal(stats.top1_hit()[sl], np.argmax(logits_rows(model, seq, s), -1) == seq[s:])
        np.testing.assert_allclose(stats.mean[sl], mean, atol=2e-5)
        np.testing.assert_allclose(stats.var[sl], var, atol=2e-4, rtol=1e-4)
        assert stats.nll()[i] == pytest.approx(-lp.mean(), abs=2e-5)


def test_pretrained_role_logits_equal_a_freshly_loaded_base_model(tiny):
    model, tok = tiny
    peft_model = attach_lora(model, LoraConfig(r=4, alpha=8), seed=0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a trained-looking adapter, so it changes the logits
    ids = torch.tensor([encoded_toy(tok, 1).input_ids[0]])
    fresh, _ = load_model("tiny-llama", "float32")
    with torch.no_grad():
        base_logits = fresh(input_ids=ids).logits
        assert not torch.allclose(peft_model(input_ids=ids).logits, base_logits, atol=1e-3)
        pretrained = Evidence(peft_model, tok, [], lambda exs: encode_examples(exs, tok, 64, 32)).roles["pretrained"]
        with pretrained():  # the same resident model, adapter disabled: no second copy
            assert torch.equal(peft_model(input_ids=ids).logits, base_logits)


def test_stats_round_trip(tmp_path, tiny):
    model, tok = tiny
    enc = encoded_toy(tok, 4)
    stats = token_stats(model, enc, scored_starts(enc, "full"), progress=False)
    stats.save(tmp_path / "s.npz")
    back = type(stats).load(tmp_path / "s.npz")
    for k in type(stats).FIELDS:
        np.testing.assert_array_equal(getattr(stats, k), getattr(back, k))


def test_statistics_cached_by_an_older_version_are_computed_again(tmp_path, tiny):
    """A stats file without a field this version stores (top1 came with EZ-MIA) is no error: it is
    recomputed, and the rest of the cache stays."""
    model, tok = tiny
    examples = toy_examples(4)

    def evidence():
        encode = lambda exs: encode_examples(exs, tok, 64, 32)  # noqa: E731
        return Evidence(model, tok, examples, encode, cache_dir=tmp_path, key="k", progress=False)

    first = evidence().stats()
    (path,) = tmp_path.glob("target-*/original.npz")
    with np.load(path) as z:
        np.savez(path, **{k: z[k] for k in z.files if k != "top1"})  # what loraleak 0.x wrote
    again = evidence()
    stats = again.stats()
    assert [p["pass"] for p in again.passes] == ["target-original"]  # computed, not read
    np.testing.assert_array_equal(stats.top1, first.top1)
    assert evidence().stats() is not None and "top1" in np.load(path).files  # and cached anew
