"""Deduplicate, then split deterministically into members / non-members / population, with a manifest.

Members and non-members are a uniformly random partition of one deduplicated pool, so they come
from the same distribution: membership inference is only meaningful without distribution shift.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .tasks import Example, TaskError

SPLITS = ("member", "nonmember", "population")


@dataclass
class Split:
    members: list[Example]
    nonmembers: list[Example]
    population: list[Example]

    @property
    def targets(self) -> list[Example]:
        """The samples an attack scores: members first, then non-members."""
        return self.members + self.nonmembers

    @property
    def labels(self) -> np.ndarray:
        """1 = member, 0 = non-member, aligned with `targets`."""
        return np.r_[np.ones(len(self.members), int), np.zeros(len(self.nonmembers), int)]

    def sizes(self) -> dict:
        return {"members": len(self.members), "nonmembers": len(self.nonmembers),
                "population": len(self.population)}


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip().lower()


def dedup(examples: list[Example]) -> tuple[list[Example], int]:
    """Drop repeated examples: same text up to whitespace/case, or same response (a shared docstring
    or subject line would let a non-member ride on a member's memorisation). First occurrence wins."""
    seen_text, seen_resp, kept = set(), set(), []
    for ex in examples:
        t, r = _norm(ex.text), _norm(ex.response)
        if t in seen_text or r in seen_resp:
            continue
        seen_text.add(t)
        seen_resp.add(r)
        kept.append(ex)
    return kept, len(examples) - len(kept)


def make_split(examples: list[Example], members: int, nonmembers: int, population: int, seed: int,
               task: str = "task") -> Split:
    """A seeded uniformly random, disjoint split. Independent of the order `examples` came in."""
    ids = [ex.id for ex in examples]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise TaskError(f"task '{task}' produced duplicate example id '{dup}'; ids must be unique")
    need = members + nonmembers + population
    if need > len(examples):
        raise TaskError(
            f"task '{task}' yields {len(examples)} examples after deduplication, but the split asks for "
            f"{need} (members {members} + nonmembers {nonmembers} + population {population}); "
            f"lower split.members / split.nonmembers / split.population")
    pool = sorted(examples, key=lambda ex: ex.id)
    order = np.random.default_rng(seed).permutation(len(pool))
    take = [pool[i] for i in order[:need]]
    return Split(take[:members], take[members:members + nonmembers], take[members + nonmembers:])


def write_manifest(split: Split, path: Path) -> None:
    """One JSON line per example: id, sha256 of its text, split."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for name, part in zip(SPLITS, (split.members, split.nonmembers, split.population)):
            for ex in part:
                f.write(json.dumps({"id": ex.id, "sha256": ex.sha256, "split": name}) + "\n")


def read_manifest(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
