"""Generic tasks from a user's data: `jsonl:PATH`, `csv:PATH`, `hf:NAME[:CONFIG]`.

A row gives prompt and response from `prompt_field` / `response_field` when it has both, else its
`text_field` is the whole response after an empty prompt. The id is the row's `id_field`, else
"<file stem>:<line>" (the line it came from, so a score traces back to the file). A bad row is an
error, never skipped, so these loads report no skips.
"""

from __future__ import annotations

import csv
import json
from itertools import islice
from pathlib import Path

from .example import Example, LoadedTask, TaskError


def load_jsonl(path: str, max_examples: int | None = None, **options) -> LoadedTask:
    file = _existing(path)

    def rows():
        with open(file, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise TaskError(
                        f"{file}: line {line_no} is not valid JSON ({e.msg}); each line must be one JSON object"
                    ) from None
                yield f"line {line_no}", line_no, row

    return LoadedTask(to_examples(islice(rows(), max_examples), str(file), file.stem, **options))


def load_csv(path: str, max_examples: int | None = None, **options) -> LoadedTask:
    file = _existing(path)
    with open(file, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        rows = ((f"line {reader.line_num}", reader.line_num, row) for row in reader)
        return LoadedTask(to_examples(islice(rows, max_examples), str(file), file.stem, **options))


def load_hf(spec: str, hf_split: str = "train", max_examples: int | None = None, **options) -> LoadedTask:
    name, _, config = spec.partition(":")
    try:
        import datasets
    except ImportError:
        raise TaskError(f"task 'hf:{spec}' needs the `datasets` library: pip install datasets") from None
    try:
        ds = datasets.load_dataset(name, config or None, split=hf_split)
    except Exception as e:  # not found, no network and not cached, bad split...
        raise TaskError(
            f"could not load Hugging Face dataset '{name}'"
            f"{f' (config {config})' if config else ''}, split '{hf_split}': {e}"
        ) from None
    rows = ((f"row {i}", i, row) for i, row in enumerate(ds))
    return LoadedTask(to_examples(islice(rows, max_examples), f"hf:{spec}", name.split("/")[-1], **options))


def _existing(path: str) -> Path:
    file = Path(path).expanduser()
    if not file.is_file():
        raise TaskError(f"data file {file} not found; generic tasks are jsonl:PATH or csv:PATH with an existing file")
    return file


def to_examples(
    rows,
    source: str,
    stem: str,
    prompt_field: str = "prompt",
    response_field: str = "response",
    text_field: str = "text",
    id_field: str = "id",
    **_,
) -> list[Example]:
    """rows: (where, number, row dict). Every problem is a TaskError naming the source and the row."""
    examples: list[Example] = []
    first_seen: dict[str, str] = {}
    for where, number, row in rows:
        if not isinstance(row, dict):
            raise TaskError(f"{source}: {where} is a {type(row).__name__}, not an object with fields")
        fields: tuple[str, ...]
        if prompt_field in row and response_field in row:
            fields = (prompt_field, response_field)
        elif text_field in row:
            fields = (text_field,)
        else:
            raise TaskError(
                f"{source}: {where} has neither '{prompt_field}' and '{response_field}' nor "
                f"'{text_field}'; its fields: {', '.join(map(str, row)) or 'none'} "
                "(set the task's prompt_field / response_field / text_field)"
            )
        values = [row[k] for k in fields]
        for k, v in zip(fields, values, strict=True):
            if not isinstance(v, str):
                raise TaskError(f"{source}: {where}: field '{k}' is {type(v).__name__}, not a string")
        ex_id = str(row[id_field]) if row.get(id_field) not in (None, "") else f"{stem}:{number}"
        if ex_id in first_seen:
            raise TaskError(f"{source}: {where} repeats id '{ex_id}' of {first_seen[ex_id]}; ids must be unique")
        first_seen[ex_id] = where
        examples.append(Example(ex_id, *values) if len(values) == 2 else Example(ex_id, "", values[0]))
    if not examples:
        raise TaskError(f"{source} has no examples")
    return examples
