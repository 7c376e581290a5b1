"""Task utility of the fine-tuned model and of the pre-trained model, on the same held-out examples.

Privacy is only half a result: a defense that kills leakage by killing the task is no defense.
Both models are the one resident PeftModel (adapter on / off), read through an `Evidence` over
the held-out (non-member) examples, so every pass is cached and resumable like the attacks'.

- generation tasks: ROUGE-L (rouge-score) of greedy generations of at most max_response_tokens
  against the reference response (cut to the same cap, as fine-tuned on), and perplexity of the
  reference response tokens (EOS included).
- classification tasks: the predicted label is the choice with the higher total log-likelihood as
  the response; accuracy and macro-F1 (scikit-learn).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from . import metrics as M
from .cache import atomic, read_cached
from .data import Task
from .generation import continuations
from .scoring import Evidence, register_variant

ROLES = ("target", "pretrained")


class HeldOut(Evidence):
    """Evidence over the held-out examples, knowing the task's label choices (for the "choice" variant)."""

    def __init__(self, *args, choices: tuple = (), **kwargs):
        super().__init__(*args, tokens="response", **kwargs)
        self.choices = tuple(choices)


@register_variant("choice")
def _with_choice(ev: HeldOut, index: int):
    """The samples with their response replaced by choice `index`; the response tokens are scored."""
    enc = ev.encode([dataclasses.replace(ex, response=ev.choices[index]) for ex in ev.examples])
    return enc, list(enc.response_start)


def measure(ev: HeldOut, task: Task, max_new_tokens: int) -> dict:
    """{role: {metric: value}} for the fine-tuned ("target") and pre-trained models on ev.examples."""
    if task.kind == "classification" and not task.choices:
        raise ValueError(f"classification task '{task.name}' declares no choices")
    result = {"held_out": len(ev.examples), "kind": task.kind}
    for role in ROLES:
        result[role] = (
            _classification(ev, role, task.choices)
            if task.kind == "classification"
            else _generation(ev, role, max_new_tokens)
        )
    return result


def _classification(ev: HeldOut, role: str, choices: tuple) -> dict:
    loglik = np.stack([_total(ev.stats(role, "choice", index=i)) for i in range(len(choices))], axis=1)
    predicted = [choices[j] for j in loglik.argmax(1)]
    return M.classification([ex.response for ex in ev.examples], predicted)


def _total(st) -> np.ndarray:
    """Total log-likelihood of each sample's scored tokens."""
    return np.add.reduceat(st.logprob.astype(np.float64), st.offsets[:-1])


def _generation(ev: Evidence, role: str, max_new_tokens: int) -> dict:
    enc, _ = ev.encoded()
    st = ev.stats(role)  # response tokens: HeldOut always scores those
    texts = _greedy(ev, role, enc, max_new_tokens)
    # the reference is the response as fine-tuned on: cut to the same token cap as the generations
    refs = [
        ev.tokenizer.decode(seq[s:], skip_special_tokens=True)
        for seq, s in zip(enc.input_ids, enc.response_start, strict=True)
    ]
    return {
        "rouge_l": M.rouge_l([t.strip() for t in texts], [r.strip() for r in refs]),
        "perplexity": M.perplexity(st.logprob),
    }


def _greedy(ev: Evidence, role: str, enc, max_new_tokens: int) -> list[str]:
    """Greedy generations from each prompt, cached beside the role's passes as generations-new=N.jsonl
    (id, generation, reference)."""
    path = ev.file(role, f"generations-new={max_new_tokens}.jsonl")
    ids = [ex.id for ex in ev.examples]
    if path is not None and path.is_file():
        rows = read_cached(path, lambda p: [json.loads(line) for line in p.read_text().splitlines()])
        if [r["id"] for r in rows] == ids:
            return [r["generation"] for r in rows]
    prompts = [seq[:s] for seq, s in zip(enc.input_ids, enc.response_start, strict=True)]
    with ev.entered(role) as model:
        texts = continuations(model, ev.tokenizer, prompts, max_new_tokens, ev.batch_size)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic(path) as tmp:
            tmp.write_text(
                "".join(
                    json.dumps({"id": i, "generation": t, "reference": ex.response}) + "\n"
                    for i, t, ex in zip(ids, texts, ev.examples, strict=True)
                )
            )
    return texts
