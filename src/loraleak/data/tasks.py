"""Task registry (as lm-evaluation-harness does it: tasks by name).

Registered tasks by name, plus generic ones built from a name: `jsonl:PATH`, `csv:PATH`,
`hf:NAME[:CONFIG]`. Prompts are plain text, no chat template.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass

from ..registry import Registry
from . import docstring, generic, spamassassin
from .example import Example, LoadedTask, TaskError


@dataclass(frozen=True)
class Task:
    name: str
    load: Callable[..., LoadedTask]  # load(**options); options a task does not use are ignored
    # "generation": utility = ROUGE-L of greedy generations + perplexity; "classification": accuracy and
    # macro-F1, the predicted label = the choice the model finds more likely
    kind: str = "generation"
    choices: tuple[str, ...] = ()  # classification: the responses exactly as in Example.response
    description: str = ""


GENERIC = "jsonl:PATH, csv:PATH, hf:NAME[:CONFIG]"
TASKS = Registry[Task]("task", f"generic tasks: {GENERIC}")


def _as_loader(fn):
    """fn(**options) -> LoadedTask. A loader without **options gets only the options it names (a bare
    `lambda: ...` gets none); one that returns plain examples dropped nothing."""
    params = inspect.signature(fn).parameters
    takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())

    @functools.wraps(fn)
    def load(**options) -> LoadedTask:
        out = fn(**(options if takes_all else {k: v for k, v in options.items() if k in params}))
        return out if isinstance(out, LoadedTask) else LoadedTask(list(out))

    return load


def register_task(name: str, kind: str = "generation", choices: tuple[str, ...] = (), description: str = ""):
    """Decorator: register `fn(**options)` as task `name` (a name taken already is a ValueError).
    fn returns a LoadedTask, or an iterable of Examples, taken as LoadedTask(examples, skipped={})."""

    def deco(fn):
        TASKS.register(
            name,
            Task(name, _as_loader(fn), kind, tuple(choices), description or (inspect.getdoc(fn) or "").split("\n")[0]),
        )
        return fn

    return deco


def get_task(name: str) -> Task:
    """A registered task, or a generic one; the generic loaders take the options prompt_field="prompt",
    response_field="response", text_field="text", id_field="id", hf_split="train", max_examples=None."""
    if name in TASKS:
        return TASKS[name]
    kind, _, rest = name.partition(":")
    if kind in ("jsonl", "csv", "hf") and rest:
        load = functools.partial(getattr(generic, f"load_{kind}"), rest)
        return Task(name, load, description=f"examples from {name}")
    near = difflib.get_close_matches(name, list(TASKS), n=1)
    raise TaskError(
        f"unknown task '{name}'; registered tasks: {', '.join(sorted(TASKS))}; or a generic one: "
        f"{GENERIC}" + (f"; did you mean '{near[0]}'?" if near else "")
    )


def load_task(name: str, **options) -> LoadedTask:
    """Task `name`'s examples (`.examples`) and what its loader dropped (`.skipped`: reason -> count)."""
    return get_task(name).load(**options)


@register_task("docstring")
def docstring_task() -> LoadedTask:
    """Code summarisation on the running interpreter's standard library: function source -> its docstring."""
    return LoadedTask(
        [
            Example(id=r.id, prompt=docstring.format_prompt(r.code), response=r.docstring, meta={"module": r.module})
            for r in docstring.iter_functions()
        ]
    )


@register_task("spam", kind="classification", choices=(" ham", " spam"))
def spam_task() -> LoadedTask:
    """SpamAssassin public corpus: an email (From/To/Subject/Date and body) -> ' spam' or ' ham'."""
    return spamassassin.spam_examples()


@register_task("subject")
def subject_task() -> LoadedTask:
    """SpamAssassin public corpus, ham only: an email's body -> its subject line."""
    return spamassassin.subject_examples()
