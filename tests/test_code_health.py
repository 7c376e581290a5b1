"""Conventions the linters cannot see: functions a reader can take in at a glance."""

import ast
from pathlib import Path

SRC = Path(__file__).parent.parent / "src" / "loraleak"


def test_every_function_in_src_is_under_50_lines():
    long = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines >= 50:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "split these into stages or helpers: " + ", ".join(long)
