"""Deduplicate, then split deterministically into members / non-members / population, with a manifest.

Members and non-members are a uniformly random partition of one deduplicated pool, so they come
from the same distribution: membership inference is only meaningful without distribution shift.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cache import atomic
from .example import Example, TaskError

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
        return {"members": len(self.members), "nonmembers": len(self.nonmembers), "population": len(self.population)}


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip().lower()


def dedup(examples: list[Example], by_response: bool = True) -> tuple[list[Example], int]:
    """Drop repeated examples: same text up to whitespace/case, or (`by_response`) same response: a
    shared docstring or subject line would let a non-member ride on a member's memorisation. A
    classification task's few responses are shared by design: pass by_response=False there.
    First occurrence wins."""
    seen_text, seen_resp, kept = set(), set(), []
    for ex in examples:
        t, r = _norm(ex.text), _norm(ex.response)
        if t in seen_text or (by_response and r in seen_resp):
            continue
        seen_text.add(t)
        seen_resp.add(r)
        kept.append(ex)
    return kept, len(examples) - len(kept)


def shift_check(members: list[Example], nonmembers: list[Example]) -> dict:
    """Are members and non-members alike? Character lengths (mean, median, two-sample KS test) and
    word overlap (Jaccard of the word-type sets, cosine of the word-count vectors). A random split
    of one pool should give a small KS statistic and a cosine near 1."""
    from scipy.stats import ks_2samp

    groups = (members, nonmembers)
    lengths = [np.array([len(ex.text) for ex in group], float) for group in groups]
    a, b = [Counter(w for ex in group for w in re.findall(r"\w+", ex.text.lower())) for group in groups]
    ks = ks_2samp(*lengths)
    dot = sum(a[w] * b[w] for w in a.keys() & b.keys())
    # each sum in float before the product: two long texts' exact int product can pass 2**64, which np.sqrt refuses
    norm = math.sqrt(float(sum(v * v for v in a.values())) * float(sum(v * v for v in b.values())))
    union = a.keys() | b.keys()
    return {
        "member_mean_chars": float(lengths[0].mean()),
        "member_median_chars": float(np.median(lengths[0])),
        "nonmember_mean_chars": float(lengths[1].mean()),
        "nonmember_median_chars": float(np.median(lengths[1])),
        "length_ks_statistic": float(ks.statistic),
        "length_ks_pvalue": float(ks.pvalue),
        "vocab_jaccard": len(a.keys() & b.keys()) / len(union) if union else 1.0,
        "unigram_cosine": float(dot / norm) if norm else 1.0,
    }


def make_split(
    examples: list[Example], members: int, nonmembers: int, population: int, seed: int, task: str = "task"
) -> Split:
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
            f"lower split.members / split.nonmembers / split.population"
        )
    pool = sorted(examples, key=lambda ex: ex.id)
    order = np.random.default_rng(seed).permutation(len(pool))
    take = [pool[i] for i in order[:need]]
    return Split(take[:members], take[members : members + nonmembers], take[members + nonmembers :])


def write_manifest(split: Split, path: Path) -> None:
    """One JSON line per example: id, sha256 of its text, split."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic(path) as tmp, open(tmp, "w") as f:
        for name, part in zip(SPLITS, (split.members, split.nonmembers, split.population), strict=True):
            for ex in part:
                f.write(json.dumps({"id": ex.id, "sha256": ex.sha256, "split": name}) + "\n")


def read_manifest(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
