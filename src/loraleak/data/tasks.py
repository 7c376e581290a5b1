"""Task registry (as lm-evaluation-harness does it: tasks by name) and the example type.

Registered tasks by name, plus generic ones built from a name: `jsonl:PATH`, `csv:PATH`,
`hf:NAME[:CONFIG]`. Prompts are plain text, no chat template.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
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


@dataclass(frozen=True)
class Task:
    name: str
    load: Callable[..., Iterable[Example]]  # load(**options); options a task does not use are ignored
    # "generation": utility = ROUGE-L of greedy generations + perplexity; "classification": accuracy and
    # macro-F1, the predicted label = the choice the model finds more likely
    kind: str = "generation"
    choices: tuple[str, ...] = ()  # classification: the responses exactly as in Example.response
    description: str = ""


TASKS: dict[str, Task] = {}
GENERIC = "jsonl:PATH, csv:PATH, hf:NAME[:CONFIG]"
# task name -> {reason: count} of the records its last load dropped (tasks that drop records fill it)
SKIPPED: dict[str, dict[str, int]] = {}


def _ignoring_unknown_options(fn):
    """A loader without **options gets only the options it names (a bare `lambda: ...` gets none)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return fn
    return functools.wraps(fn)(lambda **options: fn(**{k: v for k, v in options.items() if k in params}))


def register_task(name: str, kind: str = "generation", choices: tuple[str, ...] = (), description: str = ""):
    def deco(fn):
        TASKS[name] = Task(name, _ignoring_unknown_options(fn), kind, tuple(choices),
                           description or (inspect.getdoc(fn) or "").split("\n")[0])
        return fn
    return deco


def get_task(name: str) -> Task:
    """A registered task, or a generic one; the generic loaders take the options prompt_field="prompt",
    response_field="response", text_field="text", id_field="id", hf_split="train", max_examples=None."""
    if name in TASKS:
        return TASKS[name]
    kind, _, rest = name.partition(":")
    if kind in ("jsonl", "csv", "hf") and rest:
        from . import generic  # it imports this module
        load = functools.partial(getattr(generic, f"load_{kind}"), rest)
        return Task(name, load, description=f"examples from {name}")
    raise TaskError(f"unknown task '{name}'; registered tasks: {', '.join(sorted(TASKS))}; or a generic one: {GENERIC}")


def load_task(name: str, **options) -> list[Example]:
    return list(get_task(name).load(**options))


@register_task("docstring")
def docstring_task() -> list[Example]:
    """Code summarisation on the running interpreter's standard library: function source -> its docstring."""
    return [Example(id=r.id, prompt=docstring.format_prompt(r.code), response=r.docstring,
                    meta={"module": r.module}) for r in docstring.iter_functions()]


def _spamassassin():
    from . import spamassassin  # it imports this module; and it is only needed for its two tasks
    return spamassassin


@register_task("spam", kind="classification", choices=(" ham", " spam"))
def spam_task() -> list[Example]:
    """SpamAssassin public corpus: an email (From/To/Subject/Date and body) -> ' spam' or ' ham'."""
    examples, SKIPPED["spam"] = _spamassassin().spam_examples()
    return examples


@register_task("subject")
def subject_task() -> list[Example]:
    """SpamAssassin public corpus, ham only: an email's body -> its subject line."""
    examples, SKIPPED["subject"] = _spamassassin().subject_examples()
    return examples
