"""What an attack is, the registry of attacks by name, and the pre-trained-calibration combinator.

Convention for every attack: a higher score means "more likely a member".
An attack reads `scoring.Evidence`: token statistics per model role ("target" = base + adapter,
"pretrained" = the same model with the adapter disabled) and text variant, computed on demand and
shared. A scalar attack reads one model through a `ModelView`, so it can be calibrated by another.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

FAMILIES = ("reference-free", "pretrained-reference", "reference-model", "shadow", "label-only")


@dataclass(frozen=True)
class ExtraAdapter:
    """A further LoRA adapter an attack needs (reference, shadow, ...): trained by the runner with the
    target's recipe (lora, train sections) on `data(split, evidence)`, on the one resident model,
    then readable as model role `name`."""
    name: str
    data: Callable  # (split, evidence) -> list[Example]
    seed_offset: int  # its adapter init and data order use train.seed + seed_offset


@dataclass(frozen=True)
class Attack:
    name: str
    family: str  # one of FAMILIES
    access: tuple  # what the attacker needs: "logits", "gradients", "weights", "generation"
    citation: str
    fn: Callable  # scalar attacks: fn(view, **params); others: fn(evidence, **params)
    defaults: dict = field(default_factory=dict)
    scalar: bool = True  # reads one model's statistics, so it can be calibrated by another model
    roles: tuple = ("target",)  # model roles whose statistics it reads
    variants: tuple = ()  # text variants it scores besides the original (each one more pass per role)
    adapters: Callable | None = None  # (**params) -> [ExtraAdapter]: further adapters it needs trained
    note: str = ""  # departures from the paper, if any

    def __call__(self, evidence, **params) -> np.ndarray:
        kwargs = {**self.defaults, **params}
        scores = self.fn(evidence.view("target"), **kwargs) if self.scalar else self.fn(evidence, **kwargs)
        return np.asarray(scores, dtype=np.float64)


def calibrated_by_pretrained(attack: Attack) -> Attack:
    """score(M_ft, x) - score(M_pt, x): the public pre-trained model as a free reference model."""
    if not attack.scalar:
        raise ValueError(f"attack '{attack.name}' does not score one model, so it cannot be calibrated")

    def fn(evidence, **params):
        return attack.fn(evidence.view("target"), **params) - attack.fn(evidence.view("pretrained"), **params)

    return replace(attack, name=f"{attack.name}-pt", family="pretrained-reference", fn=fn, scalar=False,
                   roles=("target", "pretrained"),
                   citation=f"{attack.citation}; calibrated by the pre-trained model (LoRA-Leak)")


ATTACKS: dict[str, Attack] = {}


def _logits_only(a: Attack) -> bool:
    return set(a.access) <= {"logits"} and set(a.roles) <= {"target", "pretrained"}
PRESETS: dict[str, Callable[[], list[str]]] = {
    "all": lambda: list(ATTACKS),
    # logit access only, no further adapters to train
    "fast": lambda: [a.name for a in ATTACKS.values() if _logits_only(a)],
    # LoRA-Leak's suite: ten published attacks and five calibrated by the pre-trained model
    "loraleak-15": lambda: ["loss", "zlib", "lowercase", "min-k", "min-k++", "neighbourhood", "mope", "gradnorm-x",
                            "reference", "spv-mia", "loss-pt", "min-k++-pt", "mope-pt", "gradnorm-x-pt",
                            "neighbourhood-pt"],
    # of those, the ones that read nothing but the one forward pass per model: cost ~nothing
    "one-pass": lambda: [a.name for a in ATTACKS.values() if _logits_only(a) and not a.variants],
}


def register(attack: Attack, calibrate: bool = True) -> Attack:
    """Add `attack` (and, for scalar attacks, its `-pt` calibrated variant) to the registry."""
    for a in [attack] + ([calibrated_by_pretrained(attack)] if calibrate and attack.scalar else []):
        if a.name in ATTACKS:
            raise ValueError(f"attack '{a.name}' is registered twice")
        ATTACKS[a.name] = a
    return attack


def scalar_attack(name: str, citation: str, access=("logits",), variants=(), note: str = "", **defaults):
    """Decorator: register fn(view, **params) -> scores as a reference-free attack plus its -pt variant."""
    def deco(fn):
        register(Attack(name=name, family="reference-free", access=tuple(access), citation=citation, fn=fn,
                        defaults=defaults, variants=tuple(variants), note=note))
        return fn
    return deco


def params_for(attack: Attack, attack_params: dict) -> dict:
    """The config's hyperparameters for `attack` (an entry for NAME applies to NAME-pt too)."""
    base = attack.name[:-3] if attack.family == "pretrained-reference" else attack.name
    return dict(attack_params.get(attack.name) or attack_params.get(base) or {})


def check_params(attack_params: dict) -> None:
    """Every entry names a registered attack and only hyperparameters it has."""
    for name, params in attack_params.items():
        if name not in ATTACKS:
            near = difflib.get_close_matches(name, list(ATTACKS), n=1)
            raise KeyError(f"attack_params: unknown attack '{name}'" + (f"; did you mean '{near[0]}'?" if near else ""))
        unknown = set(params) - set(ATTACKS[name].defaults)
        if unknown:
            known = ", ".join(ATTACKS[name].defaults) or "none"
            raise KeyError(f"attack_params.{name}: unknown hyperparameter '{sorted(unknown)[0]}' (it has: {known})")


def resolve(names) -> list[Attack]:
    """Attack names and presets -> attacks, in the order given, each once."""
    out: dict[str, Attack] = {}
    for name in names:
        if name in PRESETS:
            out.update({n: ATTACKS[n] for n in PRESETS[name]()})
        elif name in ATTACKS:
            out[name] = ATTACKS[name]
        else:
            near = difflib.get_close_matches(name, list(ATTACKS) + list(PRESETS), n=1)
            hint = f"; did you mean '{near[0]}'?" if near else ""
            raise KeyError(f"unknown attack '{name}'{hint} (list them with `loraleak attacks`)")
    return list(out.values())
