"""Generic tasks from a user's data: `jsonl:PATH`, `csv:PATH`, `hf:NAME[:CONFIG]`.

A row gives prompt and response from `prompt_field` / `response_field` when it has both, else its
`text_field` is the whole response after an empty prompt. The id is the row's `id_field`, else
"<file stem>:<line>" (the line it came from, so a score traces back to the file). A bad row is an
error, never skipped, so these loads report no skips. Files are UTF-8 (a byte-order mark is fine);
whatever is wrong with one is a one-line TaskError naming the file and, where there is one, the line.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import BinaryIO, TypeVar

from .example import Example, LoadedTask, TaskError

T = TypeVar("T")


def load_jsonl(path: str, max_examples: int | None = None, **options) -> LoadedTask:
    file = _existing(path)

    def rows():
        with _opened(file) as f:
            for line_no, raw in enumerate(f, 1):  # bytes split at b"\n": the lines an editor numbers
                line = _decoded(raw, file, line_no)
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except (ValueError, RecursionError) as e:  # also an int over Python's 4300 digits, deep nesting
                    reason = "nested too deeply" if isinstance(e, RecursionError) else str(e).split(";")[0]
                    reason = e.msg if isinstance(e, json.JSONDecodeError) else reason  # without its line, column
                    raise TaskError(
                        f"{file}: line {line_no} is not valid JSON ({reason}); each line must be one JSON object"
                    ) from None
                yield f"line {line_no}", line_no, row

    return LoadedTask(to_examples(islice(rows(), max_examples), str(file), file.stem, **options))


def load_csv(path: str, max_examples: int | None = None, **options) -> LoadedTask:
    file = _existing(path)
    with _opened(file) as f:
        data = _read(file, f.read)
    text = _decoded(data, file, 1)
    reader = csv.DictReader(io.StringIO(text, newline=""))

    def rows():
        try:
            for row in reader:
                if None in row:  # DictReader files the fields beyond the header's under None
                    raise TaskError(
                        f"{file}: line {reader.line_num} has more fields than the header's "
                        f"{len(reader.fieldnames or ())}; quote a field that holds a comma"
                    )
                yield f"line {reader.line_num}", reader.line_num, row
        except csv.Error as e:  # a field over the csv module's size limit, a NUL byte (Python 3.10) ...
            raise TaskError(
                f"{file}: the row from line {reader.line_num + 1} is not valid CSV ({e}); "
                "fix it or give the data as jsonl"
            ) from None

    return LoadedTask(to_examples(islice(rows(), max_examples), str(file), file.stem, **options))


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
    try:
        file = Path(path).expanduser()
    except RuntimeError:  # ~name of no such user
        raise TaskError(f"data file {path}: no home directory for its '~'; give the full path") from None
    if _read(file, file.is_dir):  # stat can fail, e.g. on a folder without permission
        raise TaskError(f"data file {file} is a directory; generic tasks are jsonl:PATH or csv:PATH naming a file")
    if not file.is_file():
        raise TaskError(f"data file {file} not found; generic tasks are jsonl:PATH or csv:PATH with an existing file")
    return file


def _opened(file: Path) -> BinaryIO:
    return _read(file, lambda: open(file, "rb"))


def _read(file: Path, step: Callable[[], T]) -> T:
    """step(), with an OSError while reading `file` (no permission, an I/O error) as a TaskError."""
    try:
        return step()
    except OSError as e:
        raise TaskError(f"{file}: cannot read it ({e.strerror or e}); check that it exists and is readable") from None


def _decoded(data: bytes, file: Path, first_line: int) -> str:
    """`data` (starting at line `first_line` of `file`) as text; a leading byte-order mark, which
    spreadsheet exports write, is dropped so that it does not become part of the first field name."""
    try:
        return data.decode("utf-8-sig" if first_line == 1 else "utf-8")
    except UnicodeDecodeError as e:
        bad = e.object  # what was decoded: `data` less any mark, which e.start counts from
        line = first_line + bad.count(b"\n", 0, e.start)
        raise TaskError(
            f"{file}: line {line} has a byte that is not UTF-8 (0x{bad[e.start]:02x}); re-save the file as UTF-8"
        ) from None


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
                f"'{text_field}'; its fields: {', '.join(map(_shown, row)) or 'none'} "
                "(set the task's prompt_field / response_field / text_field)"
            )
        values = [row[k] for k in fields]
        for k, v in zip(fields, values, strict=True):
            if not isinstance(v, str):
                raise TaskError(f"{source}: {where}: field '{k}' is {type(v).__name__}, not a string")
        ex_id = str(row[id_field]) if row.get(id_field) not in (None, "") else f"{stem}:{number}"
        if not all(map(_encodable, [*values, ex_id])):
            raise TaskError(f"{source}: {where} has an unpaired surrogate (a \\ud800-style escape); fix the text")
        if ex_id in first_seen:
            raise TaskError(
                f"{source}: {where} repeats id '{_shown(ex_id)}' of {first_seen[ex_id]}; ids must be unique"
            )
        first_seen[ex_id] = where
        examples.append(Example(ex_id, *values) if len(values) == 2 else Example(ex_id, "", values[0]))
    if not examples:
        raise TaskError(f"{source} has no examples")
    return examples


def _shown(value: object) -> str:
    """`value` for a one-line message: a line break or other control character in a key or id escaped."""
    text = str(value)
    return text if text.isprintable() else repr(text)[1:-1]


def _encodable(text: str) -> bool:
    # JSON's \ud800 escapes give str a lone surrogate, which no UTF-8 consumer (hashing, tokenizers) accepts
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
