"""Zlib (Carlini et al., USENIX Security 2021): the LM's log-perplexity relative to zlib's entropy.

A text the model finds likely but zlib cannot compress well is suspicious. Carlini et al.'s code
divides log-perplexity (mean NLL) by the zlib-compressed length in bytes; we do the same on the
scored text, negated so that higher means member.
"""

import zlib as _zlib

import numpy as np

from .registry import scalar_attack


def zlib_bytes(text: str) -> int:
    return len(_zlib.compress(text.encode("utf-8")))


@scalar_attack(
    "zlib",
    score="-(mean token NLL) / zlib-compressed bytes of x",
    citation="Carlini et al., Extracting Training Data from Large Language Models, USENIX Security 2021",
)
def zlib_ratio(view):
    sizes = np.array([zlib_bytes(t) for t in view.evidence.scored_texts], dtype=np.float64)
    return -view.stats().nll() / sizes
