"""Every attack's fast path against a plain per-sample re-computation of its formula.

The plain side shares no code with loraleak's scoring or attacks: one unpadded sequence at a time,
a full float64 softmax, the paper's formula written out. The fast side runs batched (batch 5 over
samples of mixed lengths, so padding is exercised) through `Evidence`.
"""

import zlib
from collections import Counter

import numpy as np
import pytest
import torch
from helpers import toy_examples
from scipy.stats import norm

from loraleak.attacks import ATTACKS, FAMILIES, calibrated_by_pretrained, resolve
from loraleak.attacks.shadow import shadow_name
from loraleak.config import LoraConfig
from loraleak.data import Example, encode_examples
from loraleak.finetune import active_adapter, add_lora, attach_lora
from loraleak.metrics import auc
from loraleak.models import load_model
from loraleak.registry import UnknownName
from loraleak.scoring import Evidence


def mixed_length_examples():
    ex = toy_examples(16)
    return [Example(e.id, e.prompt * (1 + i % 3), e.response + " Data" * (i % 4)) for i, e in enumerate(ex)]


def make_evidence(randomise_adapter: bool):
    model, tok = load_model("tiny-llama", "float32")
    peft_model = attach_lora(model, LoraConfig(r=4, alpha=8), seed=0)
    add_lora(peft_model, "reference", LoraConfig(r=4, alpha=8), seed=1)
    add_lora(peft_model, "spv-reference", LoraConfig(r=4, alpha=8), seed=2)
    for i in range(4):
        add_lora(peft_model, shadow_name(i, 4, 0), LoraConfig(r=4, alpha=8), seed=10 + i)
    if randomise_adapter:  # "trained" adapters: target, reference and pre-trained models differ
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    examples = mixed_length_examples()
    ev = Evidence(
        peft_model,
        tok,
        examples[:12],
        encode=lambda exs: encode_examples(exs, tok, 64, 64),
        batch_size=5,
        population=examples[12:],
        progress=False,
    )
    for name in ["reference", "spv-reference"] + [shadow_name(i, 4, 0) for i in range(4)]:
        ev.add_role(name, lambda name=name: active_adapter(peft_model, name))  # no cache_dir: no key needed
    return ev, peft_model, tok, examples


@pytest.fixture(scope="module")
def setup():
    return make_evidence(randomise_adapter=True)


# ---- plain re-computation ----------------------------------------------------------------------


def plain_ids(tok, prompt, response):
    p = tok(prompt).input_ids
    return p + tok(response, add_special_tokens=False).input_ids + [tok.eos_token_id], len(p)


def plain_positions(model, ids, start, pretrained):
    """float64 log-softmax rows predicting tokens ids[start:], from one unpadded forward pass."""
    with torch.no_grad():
        if pretrained:
            with model.disable_adapter():
                logits = model(input_ids=torch.tensor([ids])).logits[0]
        else:
            logits = model(input_ids=torch.tensor([ids])).logits[0]
    rows = torch.log_softmax(logits.double(), -1).numpy()[start - 1 : len(ids) - 1]
    return rows, np.array(ids[start:])


def plain_token_lp(model, ids, start, pretrained):
    rows, targets = plain_positions(model, ids, start, pretrained)
    return rows[np.arange(len(targets)), targets]


def lowest_mean(v, k):
    return float(np.mean(sorted(v)[: max(1, int(len(v) * k))]))


def plain_nll_and_grads(model, ids, start, pretrained, wrt):
    """Mean NLL of one unpadded sample and the L2 norm of its gradient w.r.t. the input embeddings
    ("x") or the LoRA parameters ("theta")."""
    lora = [p for n, p in model.named_parameters() if "lora_" in n and ".default." in n]  # the target adapter
    embeds = model.get_input_embeddings()(torch.tensor([ids])).detach().requires_grad_(wrt == "x")
    ctx = model.disable_adapter() if pretrained else torch.enable_grad()
    with ctx, torch.enable_grad():
        logits = model(inputs_embeds=embeds).logits[0]
        lp = torch.log_softmax(logits[start - 1 : len(ids) - 1].double(), -1)
        nll = -lp[torch.arange(len(ids) - start), torch.tensor(ids[start:])].mean()
        target = [embeds] if wrt == "x" else lora
        grads = torch.autograd.grad(nll, target, allow_unused=True)
    return sum(float((g.double() ** 2).sum()) for g in grads if g is not None) ** 0.5


def plain_perturbed_nll(model, ids, start, pretrained, sigma, index, seed):
    """MoPe's recipe written out: N(0, sigma^2) noise on every 2-D non-LoRA weight except the
    (tied) embeddings, from generator seed*1_000_003 + index, then the NLL, then restore."""
    emb = model.get_input_embeddings().weight
    params = [p for n, p in model.named_parameters() if p.dim() == 2 and "lora_" not in n and p is not emb]
    saved = [p.detach().clone() for p in params]
    gen = torch.Generator().manual_seed(seed * 1_000_003 + index)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn(p.shape, generator=gen) * sigma)
    try:
        return -plain_token_lp(model, ids, start, pretrained).mean()
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)


def plain_neighbour(model, tok, ids, start, sample, j, rate=0.1, k=10, seed=0):
    """Mattern et al.'s neighbour, our documented recipe: the pre-trained model's top-k at rate*n
    positions drawn from generator (seed, sample, j), one non-original candidate drawn the same way."""
    with torch.no_grad(), model.disable_adapter():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    n = len(ids) - start
    rng = np.random.default_rng([seed, sample, j])
    out = list(ids)
    for pos in rng.choice(n, size=max(1, int(round(rate * n))), replace=False):
        top = logits[start - 1 + pos].topk(k).indices.tolist()
        options = [t for t in top if t != ids[start + pos]]
        out[start + pos] = options[rng.integers(len(options))]
    return out


def plain_pv(model, ids, start, adapter, m=2, scale=0.5, seed=0):
    """SPV-MIA's probabilistic variation with symmetric embedding noise, one unpadded sample."""
    emb = model.get_input_embeddings()
    model.set_adapter(adapter)
    try:

        def nll(sign, i):
            x = emb(torch.tensor([ids]))
            if sign:
                gen = torch.Generator().manual_seed(seed * 1_000_003 + i)
                noise = torch.randn(emb.weight.shape, generator=gen) * (scale * emb.weight.float().std())
                x = x + sign * noise[torch.tensor([ids])]
            with torch.no_grad():
                logits = model(inputs_embeds=x).logits[0]
            lp = torch.log_softmax(logits[start - 1 : len(ids) - 1].double(), -1)
            return float(-lp[torch.arange(len(ids) - start), torch.tensor(ids[start:])].mean())

        return -nll(0, 0) - np.mean([(-nll(+1, i) - nll(-1, i)) / 2 for i in range(m)])
    finally:
        model.set_adapter("default")


def plain_score(name, model, tok, examples, population, ex, pretrained, index=None):
    ids, s = plain_ids(tok, ex.prompt, ex.response)
    lp = plain_token_lp(model, ids, s, pretrained)
    nll = -lp.mean()
    if name == "neighbourhood":
        nb = [
            -plain_token_lp(model, plain_neighbour(model, tok, ids, s, index, j), s, pretrained).mean()
            for j in range(5)
        ]
        return np.mean(nb) - nll
    if name == "mope":
        return np.mean([plain_perturbed_nll(model, ids, s, pretrained, **MOPE, index=i) for i in range(2)]) - nll
    if name == "gradnorm-x":
        return -plain_nll_and_grads(model, ids, s, pretrained, "x")
    if name == "gradnorm-theta":
        return -plain_nll_and_grads(model, ids, s, pretrained, "theta")
    if name == "loss":
        return -nll
    if name == "zlib":
        text = tok.decode(ids[s:], skip_special_tokens=True)
        return -nll / len(zlib.compress(text.encode()))
    if name == "lowercase":
        lids, ls = plain_ids(tok, ex.prompt.lower(), ex.response.lower())
        return -plain_token_lp(model, lids, ls, pretrained).mean() / nll
    if name == "min-k":
        return lowest_mean(lp, 0.2)
    if name == "min-k++":
        rows, targets = plain_positions(model, ids, s, pretrained)
        p = np.exp(rows)
        mu = (p * rows).sum(1)
        sigma = np.sqrt((p * (rows - mu[:, None]) ** 2).sum(1))
        z = (rows[np.arange(len(targets)), targets] - mu) / sigma
        return lowest_mean(z, 0.2)
    if name == "recall":
        prefix = [t for e in population[:3] for t in plain_ids(tok, e.prompt, e.response)[0]]
        cond = plain_token_lp(model, prefix + ids, len(prefix) + s, pretrained)
        return -cond.mean() / nll
    if name == "dc-pdd":
        counts = Counter(t for e in population for t in tok(e.prompt + e.response).input_ids)
        total, vocab = sum(counts.values()), len(tok)
        seen, alphas = set(), []
        for t, logp in zip(ids[s:], lp, strict=True):
            if t in seen:
                continue
            seen.add(t)
            f = (counts[t] + 1) / (total + vocab)
            alphas.append(min(np.exp(logp) * np.log(1 / f), 0.01))
        return float(np.mean(alphas))
    raise KeyError(name)


MOPE = {"sigma": 0.05, "seed": 0}
PARAMS = {"mope": {"n": 2, **MOPE}}
BASE_ATTACKS = [
    "loss",
    "zlib",
    "lowercase",
    "min-k",
    "min-k++",
    "neighbourhood",
    "mope",
    "gradnorm-x",
    "recall",
    "dc-pdd",
]


@pytest.mark.parametrize("name", BASE_ATTACKS)
def test_fast_path_matches_plain_recomputation(setup, name):
    ev, model, tok, examples = setup
    targets, population = examples[:12], examples[12:]

    def plain(pre):
        return np.array(
            [plain_score(name, model, tok, examples, population, ex, pre, index=i) for i, ex in enumerate(targets)]
        )

    ft, pt = plain(False), plain(True)
    # scores that are differences (neighbourhood, MoPe, every -pt) are as exact as their terms:
    # within 1e-5 of the terms' size (fp32 forward), which is the NLL's
    tol = 1e-5 * max(1.0, np.abs(ATTACKS["loss"](ev)).max())
    np.testing.assert_allclose(
        ATTACKS[name](ev, **PARAMS.get(name, {})),
        ft,
        rtol=1e-5,
        atol=tol if name in ("neighbourhood", "mope") else 1e-7,
    )
    np.testing.assert_allclose(ATTACKS[f"{name}-pt"](ev, **PARAMS.get(name, {})), ft - pt, rtol=1e-5, atol=tol)


def test_gradnorm_theta_matches_plain_recomputation(setup):
    ev, model, tok, examples = setup
    plain = [plain_score("gradnorm-theta", model, tok, examples, [], ex, False) for ex in examples[:12]]
    np.testing.assert_allclose(ATTACKS["gradnorm-theta"](ev), plain, rtol=1e-5)
    assert not any(p.grad is not None for p in model.parameters())  # no stray gradients left behind


def test_reference_attack_matches_plain_recomputation(setup):
    ev, model, tok, examples = setup

    def nll(ex):
        return -plain_token_lp(model, *plain_ids(tok, ex.prompt, ex.response), False).mean()

    ft = np.array([nll(ex) for ex in examples[:12]])
    model.set_adapter("reference")
    try:
        ref = np.array([nll(ex) for ex in examples[:12]])
    finally:
        model.set_adapter("default")
    assert np.abs(ref - ft).max() > 1e-3  # the two adapters really differ
    np.testing.assert_allclose(ATTACKS["reference"](ev), ref - ft, rtol=1e-5, atol=1e-5 * np.abs(ft).max())


def test_spv_mia_matches_plain_recomputation(setup):
    ev, model, tok, examples = setup
    plain = []
    for ex in examples[:12]:
        ids, s = plain_ids(tok, ex.prompt, ex.response)
        plain.append(plain_pv(model, ids, s, "default") - plain_pv(model, ids, s, "spv-reference"))
    np.testing.assert_allclose(ATTACKS["spv-mia"](ev, m=2), plain, rtol=1e-5, atol=1e-5)


def plain_shadow_scores(model, tok, samples, pool_offset, k=4, seed=0):
    """phi (mean token log-likelihood) under the target and each shadow, and the IN mask, written out:
    pool = population (4) + targets (12); each pool sample is IN for exactly k/2 shadows."""

    def phi(ex, adapter):
        model.set_adapter(adapter)
        try:
            return plain_token_lp(model, *plain_ids(tok, ex.prompt, ex.response), False).mean()
        finally:
            model.set_adapter("default")

    target = np.array([phi(ex, "default") for ex in samples])
    shadows = np.array([[phi(ex, shadow_name(i, k, seed)) for ex in samples] for i in range(k)])
    order = np.random.default_rng(seed).uniform(size=(k, 16)).argsort(0)
    keep = (order < k // 2)[:, pool_offset : pool_offset + len(samples)]
    return target, shadows, keep


def test_shadow_attacks_match_plain_recomputation(setup):
    ev, model, tok, examples = setup
    targets, population = examples[:12], examples[12:]
    phi, sh, keep = plain_shadow_scores(model, tok, targets, 4)
    assert (keep.sum(0) == 2).all()

    def fit(mask):  # per-sample means, one pooled variance (the default for few shadows)
        mu = np.array([sh[mask[:, j], j].mean() for j in range(len(phi))])
        resid = [sh[i, j] - mu[j] for i in range(4) for j in range(len(phi)) if mask[i, j]]
        return mu, np.sqrt(np.sum(np.square(resid)) / (len(resid) - len(phi)))

    mu_out, sd_out = fit(~keep)
    mu_in, sd_in = fit(keep)
    # phi is exact to 1e-5 of its size (fp32 forward); the scores divide differences of phi by sd
    tol = 1e-5 * np.abs(phi).max() / min(sd_in, sd_out)
    np.testing.assert_allclose(ATTACKS["lira-offline"](ev), (phi - mu_out) / sd_out, rtol=1e-5, atol=tol)
    lira_online = norm.logpdf(phi, mu_in, sd_in) - norm.logpdf(phi, mu_out, sd_out)
    np.testing.assert_allclose(
        ATTACKS["lira-online"](ev), lira_online, rtol=1e-5, atol=tol * np.abs((phi - mu_in) / sd_in).max() * 2 + tol**2
    )

    zphi, zsh, zkeep = plain_shadow_scores(model, tok, population, 0)
    for online, name in ((True, "rmia-online"), (False, "rmia-offline")):

        def ratio(p, s, kp, online=online):
            if online:
                px = np.exp(s).mean(0)
            else:
                px = np.array([0.5 * (1.3 * np.exp(s[~kp[:, j], j]).mean() + 0.7) for j in range(len(p))])
            return np.exp(p) / px

        rx, rz = ratio(phi, sh, keep), ratio(zphi, zsh, zkeep)
        plain = [np.mean([rx[j] / rz[m] >= 1.0 for m in range(len(rz))]) for j in range(len(rx))]
        np.testing.assert_allclose(ATTACKS[name](ev), plain)


def test_rouge1_by_hand():
    from loraleak.attacks.samia import rouge1_f1

    # candidate "a b b c", reference "b b d": overlap 2 (b twice), P = 2/4, R = 2/3, F1 = 4/7
    assert rouge1_f1("a b b c", "b b d") == pytest.approx(4 / 7)
    assert rouge1_f1("x", "y") == 0.0 and rouge1_f1("same words", "same words") == 1.0


def test_samia_scores_follow_their_formula(setup, monkeypatch):
    """SaMIA's sampling is replaced by a known 'model' (a random one writes no words), so the test
    checks the prefix / suffix split, ROUGE-1 and the averaging against the texts it chose."""
    import loraleak.attacks.samia as samia

    ev, model, tok, examples = setup
    prompts, suffixes = [], []
    for ex in examples[:12]:
        ids, s = plain_ids(tok, ex.prompt, ex.response)
        cut = s + (len(ids) - s) // 2
        prompts.append(tuple(ids[:cut]))
        suffixes.append(tok.decode(ids[cut:], skip_special_tokens=True))
    # continuation j of sample i: its true suffix, one word of it, or nothing in common
    fake = {
        p: [suf, suf.split()[0] if suf.split() else "", "zzz qqq"] for p, suf in zip(prompts, suffixes, strict=True)
    }
    calls = Counter()

    def sampler(model, tokenizer, prompts, max_new_tokens, seed, batch_size):
        out = []
        for p in prompts:
            out.append(fake[tuple(p)][calls[tuple(p)] % 3])
            calls[tuple(p)] += 1
        return out

    monkeypatch.setattr(samia, "sample_continuations", sampler)
    scores = ATTACKS["samia"](ev, n=3, seed=99)
    plain = []
    for suf in suffixes:
        ref = suf.split()
        f1s = []
        for cand in (w.split() for w in (suf, ref[0] if ref else "", "zzz qqq")):
            overlap = sum(min(cand.count(w), ref.count(w)) for w in set(cand))
            f1s.append(0.0 if overlap == 0 else 2 * overlap / (len(cand) + len(ref)))
        plain.append(np.mean(f1s))
    np.testing.assert_allclose(scores, plain)
    assert scores.max() > 0.5


def test_self_prompted_generation_is_seeded(setup):
    from loraleak.attacks.generation import self_prompted_examples

    ev, model, tok, examples = setup
    a = self_prompted_examples(ev, examples[:5], 8, seed=3)
    b = self_prompted_examples(ev, examples[:5], 8, seed=3)
    c = self_prompted_examples(ev, examples[:5], 8, seed=4)
    assert [e.response for e in a] == [e.response for e in b] != [e.response for e in c]
    assert [e.prompt for e in a] == [e.prompt for e in examples[:5]]


def test_mope_restores_the_weights_exactly(setup):
    ev, model, *_ = setup
    before = [p.detach().clone() for p in model.parameters()]
    ATTACKS["mope-pt"](ev, n=1, sigma=0.1, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert any(p["pass"].endswith("@mope-sigma=0.1-i=0-seed=7") for p in ev.passes)


def test_every_registered_attack_is_checked_here():
    scalar = {a.name for a in ATTACKS.values() if a.scalar}
    assert scalar == set(BASE_ATTACKS)
    token_level = {n for n in scalar if ATTACKS[n].per_token is not None}
    assert token_level == {"min-k", "min-k++"}  # their -pt-token variants: tests/test_attacks_beyond.py
    assert set(ATTACKS) == scalar | {f"{n}-pt" for n in scalar} | {f"{n}-pt-token" for n in token_level} | {
        "ez-mia",
        "ez-mia-ref",
        "learned",
        "learned-lira",
        "wbc",
        "wbc-ref",
        "gradnorm-theta",
        "reference",
        "spv-mia",
        "lira-offline",
        "lira-online",
        "rmia-offline",
        "rmia-online",
        "samia",
    }


def test_at_lora_initialisation_every_pt_score_is_zero():
    ev, *_ = make_evidence(randomise_adapter=False)  # B = 0: the adapter is a no-op
    labels = np.r_[np.ones(6), np.zeros(6)]
    for attack in resolve(["all"]):
        if attack.family == "pretrained-reference":
            scores = attack(ev)
            assert np.all(scores == 0), attack.name
            assert auc(labels, scores) == 0.5


def test_shared_passes_run_once(setup):
    ev, *_ = setup
    for name in ("loss", "min-k", "min-k++", "zlib", "dc-pdd", "loss-pt", "min-k-pt"):
        ATTACKS[name](ev)
    keys = [p["pass"] for p in ev.passes]
    assert len(keys) == len(set(keys))  # no pass computed twice
    assert {"target-original", "pretrained-original"} <= set(keys)


def test_calibrating_a_calibrated_attack_is_refused():
    with pytest.raises(ValueError, match="cannot be calibrated"):
        calibrated_by_pretrained(ATTACKS["loss-pt"])


def test_registry_entries_are_complete():
    for a in ATTACKS.values():
        assert a.family in FAMILIES and a.citation and a.access


def test_dc_pdd_local_corpus_changes_the_frequencies(setup, tmp_path):
    ev, *_ = setup
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("beta beta beta OMEGA\n" * 50)
    base, extra = ATTACKS["dc-pdd"](ev), ATTACKS["dc-pdd"](ev, corpus=str(corpus))
    assert not np.allclose(base, extra)
    with pytest.raises(ValueError, match="does not exist"):
        ATTACKS["dc-pdd"](ev, corpus=str(tmp_path / "missing.txt"))


def test_presets():
    one_pass = {"loss", "zlib", "min-k", "min-k++", "dc-pdd"}
    assert {a.name for a in resolve(["one-pass"])} == one_pass | {f"{n}-pt" for n in one_pass} | {
        "min-k-pt-token", "min-k++-pt-token", "ez-mia", "wbc"
    }  # fmt: skip
    fast = {a.name for a in resolve(["fast"])}
    assert fast > {a.name for a in resolve(["one-pass"])} and not fast & {"reference", "spv-mia", "lira-online"}
    strongest = ["wbc", "min-k-pt-token", "reference", "lira-offline", "lira-online", "rmia-online"]
    assert [a.name for a in resolve(["strongest"])] == strongest
    suite = resolve(["loraleak-15"])
    assert len(suite) == 15 and sum(a.family == "pretrained-reference" for a in suite) == 5


def test_population_requirements():
    """What each attack needs of the population split: nothing, unless it trains on it (reference,
    SPV-MIA), draws reference samples from it (RMIA), fits on it (learned), or reads it (ReCaLL, DC-PDD)."""
    from loraleak.attacks.registry import PopulationError, check_population

    def fails(name, have, params=None):
        try:
            check_population([ATTACKS[name]], params or {}, have, "split.population")
        except PopulationError:
            return True
        return False

    needs_one = {"reference", "spv-mia", "ez-mia-ref", "wbc-ref", "rmia-offline", "rmia-online", "dc-pdd", "dc-pdd-pt"}
    assert {n for n in ATTACKS if fails(n, 0)} == needs_one | {"learned", "learned-lira", "recall", "recall-pt"}
    assert {n for n in ATTACKS if fails(n, 1)} == {"learned", "learned-lira", "recall", "recall-pt"}
    assert {n for n in ATTACKS if fails(n, 2)} == {"recall", "recall-pt"} and not fails("recall", 3)
    assert fails("recall", 9, {"recall": {"shots": 10}}) and not fails("dc-pdd", 0, {"dc-pdd": {"corpus": "c.txt"}})


def test_resolve_presets_and_unknown_names():
    assert [a.name for a in resolve(["loss-pt", "all"])][0] == "loss-pt"
    assert {a.name for a in resolve(["fast"])} >= {"loss", "loss-pt"}
    with pytest.raises(UnknownName, match="unknown attack 'los'; did you mean 'loss'"):
        resolve(["los"])
