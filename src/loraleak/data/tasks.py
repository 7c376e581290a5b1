"""Task registry (as lm-evaluation-harness does it: tasks by name) and the example type."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Iterable

from . import docstring


class TaskError(ValueError):
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


TASKS: dict[str, Callable[[], Iterable[Example]]] = {}


def register_task(name: str):
    def deco(fn):
        TASKS[name] = fn
        return fn
    return deco


@register_task("docstring")
def docstring_task() -> list[Example]:
    """Code summarisation on the running interpreter's standard library: function source -> its docstring."""
    return [Example(id=r.id, prompt=docstring.format_prompt(r.code), response=r.docstring,
                    meta={"module": r.module}) for r in docstring.iter_functions()]


def load_task(name: str) -> list[Example]:
    if name not in TASKS:
        raise TaskError(f"unknown task '{name}'; registered tasks: {', '.join(sorted(TASKS))}")
    return list(TASKS[name]())
