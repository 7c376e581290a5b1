"""The types every loader shares: an example, what a load returns, and the error a bad task raises.

A module of its own so that loaders and the task registry both import it and never each other.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from ..errors import UserError


class TaskError(UserError, ValueError):
    """A task could not produce usable examples; the message names the task and what to do."""


@dataclass(frozen=True)
class Example:
    id: str  # stable across runs: every score traces back to its example
    prompt: str
    response: str
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def text(self) -> str:
        return self.prompt + self.response

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


@dataclass(frozen=True)
class LoadedTask:
    """What a task's loader returns: its examples, and reason -> count of the records it dropped
    (returned, not stored globally, so two loads never see each other's counts)."""

    examples: list[Example]
    skipped: dict[str, int] = field(default_factory=dict)
