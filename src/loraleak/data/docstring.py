"""The `docstring` task's records: public functions of the standard library, read with `ast`.

For each public function or method (no leading underscore, in a module outside test packages)
with a docstring and a body beyond it: code = the function's source with the docstring lines
removed (dedented), docstring = `inspect.cleandoc` of it. Nothing is imported or downloaded.
"""

from __future__ import annotations

import ast
import inspect
import sysconfig
import textwrap
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SKIP_DIRS = {
    "test",
    "tests",
    "idle_test",
    "site-packages",
    "dist-packages",
    "__pycache__",
    "lib2to3",
    "turtledemo",
    "ensurepip",
}
MAX_SOURCE_CHARS = 4000  # very long functions would only be cut to the token cap anyway


@dataclass(frozen=True)
class FunctionRecord:
    id: str
    module: str
    code: str
    docstring: str


def format_prompt(code: str) -> str:
    return f"# Python function:\n{code}\n# Its docstring:\n"


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def iter_functions(root: Path | None = None) -> Iterator[FunctionRecord]:
    root = root or stdlib_dir()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if SKIP_DIRS.intersection(rel.parts[:-1]) or rel.name.startswith("test_") or rel.name.startswith("_"):
            continue
        module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        yield from records_from_source(path.read_text(encoding="utf-8", errors="replace"), module)


def records_from_source(source: str, module: str) -> Iterator[FunctionRecord]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences etc. in old stdlib code
            tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return
    lines = source.splitlines()
    seen: dict[str, int] = {}
    for qualname, node in _public_functions(tree):
        rec = _record(node, lines)
        if rec is None:
            continue
        code, doc = rec
        base = f"{module}.{qualname}"
        seen[base] = seen.get(base, 0) + 1  # conditional re-definitions get #2, #3, ...
        yield FunctionRecord(base if seen[base] == 1 else f"{base}#{seen[base]}", module, code, doc)


def _public_functions(tree: ast.AST, prefix: str = ""):
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if not node.name.startswith("_"):
                yield prefix + node.name, node
        elif isinstance(node, ast.ClassDef):
            if not node.name.startswith("_"):
                yield from _public_functions(node, prefix + node.name + ".")
        elif isinstance(node, (ast.If, ast.Try)):  # platform-conditional definitions
            yield from _public_functions(node, prefix)


def _record(node, lines: list[str]):
    body = node.body
    if (
        not (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        )
        or len(body) < 2
    ):
        return None  # no docstring, or nothing but a docstring
    doc = inspect.cleandoc(body[0].value.value).strip()
    if not doc:
        return None
    start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
    d0, d1 = body[0].lineno - 1, body[0].end_lineno
    if lines[d0].strip()[:1] not in ('"', "'", "r", "R", "u", "U", "b", "B") or body[1].lineno - 1 < d1:
        return None  # docstring shares a line with other code: cannot cut it out cleanly
    kept = lines[start:d0] + lines[d1 : node.end_lineno]
    code = textwrap.dedent("\n".join(kept)).strip("\n")
    if len(code) > MAX_SOURCE_CHARS:
        return None
    return code, doc
