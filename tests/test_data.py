import ast
import math
import re
import textwrap
from pathlib import Path

import pytest
from helpers import toy_examples

import loraleak.data
from loraleak.data import (
    Example,
    TaskError,
    dedup,
    encode_examples,
    load_task,
    make_split,
    read_manifest,
    shift_check,
    write_manifest,
)
from loraleak.data.docstring import records_from_source

SOURCE = textwrap.dedent('''
    def add(a, b):
        """Add two numbers.

            Indented detail.
        """
        return a + b

    def _private(x):
        """Hidden."""
        return x

    def only_doc():
        """Nothing but a docstring."""

    class Box:
        @staticmethod
        def make(n):
            """Make a box."""
            return Box()

        def _inner(self):
            """Hidden too."""
            return 1
''')


def test_docstring_records_remove_the_docstring_and_skip_private_names():
    recs = {r.id: r for r in records_from_source(SOURCE, "mod")}
    assert set(recs) == {"mod.add", "mod.Box.make"}
    add = recs["mod.add"]
    assert add.code == "def add(a, b):\n    return a + b"
    assert add.docstring == "Add two numbers.\n\nIndented detail."  # inspect.cleandoc
    assert recs["mod.Box.make"].code.startswith("@staticmethod\ndef make(n):")


def test_unparsable_source_yields_nothing():
    assert list(records_from_source("def broken(:\n", "m")) == []


def test_stdlib_docstring_task_is_large_and_clean():
    loaded = load_task("docstring")
    examples = loaded.examples
    assert len(examples) > 1000 and loaded.skipped == {}
    assert not any(".test." in ex.id or ex.id.split(".")[-1].startswith("_") for ex in examples)
    kept, dropped = dedup(examples)
    assert len({ex.response.strip().lower() for ex in kept}) == len(kept)


def test_split_is_deterministic_disjoint_and_order_free():
    ex = toy_examples(60)
    a = make_split(ex, 20, 20, 10, seed=1)
    b = make_split(list(reversed(ex)), 20, 20, 10, seed=1)
    c = make_split(ex, 20, 20, 10, seed=2)

    def ids(s):
        return [[e.id for e in part] for part in (s.members, s.nonmembers, s.population)]

    assert ids(a) == ids(b) and ids(a) != ids(c)
    m, n, p = map(set, ids(a))
    assert not (m & n) and not (m & p) and not (n & p)
    assert (len(m), len(n), len(p)) == (20, 20, 10)
    assert list(a.labels) == [1] * 20 + [0] * 20


def test_split_too_small_names_the_sizes():
    with pytest.raises(TaskError, match=r"task 'toy' yields 10 examples .* asks for 12"):
        make_split(toy_examples(10), 5, 5, 2, seed=0, task="toy")


def test_dedup_drops_repeated_texts_and_responses():
    ex = [Example("a", "p1", " r1"), Example("b", "p1 ", " r1"), Example("c", "p2", " R1"), Example("d", "p3", " r3")]
    kept, dropped = dedup(ex)
    assert [e.id for e in kept] == ["a", "d"] and dropped == 2


def test_manifest_traces_every_example(tmp_path):
    split = make_split(toy_examples(40), 10, 10, 5, seed=0)
    write_manifest(split, tmp_path / "m.jsonl")
    rows = read_manifest(tmp_path / "m.jsonl")
    assert [r["split"] for r in rows] == ["member"] * 10 + ["nonmember"] * 10 + ["population"] * 5
    assert rows[0] == {"id": split.members[0].id, "sha256": split.members[0].sha256, "split": "member"}


def test_encoding_caps_tokens_and_keeps_the_prompt_cue(tiny):
    _, tok = tiny
    ex = [Example("x", "a" * 50 + "CUE:", " " + "b" * 40), Example("y", "short:", " ok")]
    enc = encode_examples(ex, tok, max_prompt_tokens=20, max_response_tokens=10)
    long, short = enc.input_ids
    assert len(long) == 20 + 10 + 1 and long[-1] == tok.eos_token_id
    assert tok.decode(long[:20]).endswith("CUE:") and enc.response_start[0] == 20
    assert tok.decode(short[: enc.response_start[1]]) == "short:" and enc.truncated == 1


# The import graph, read with `ast` rather than by importing: an import inside a function counts too.
SRC = Path(loraleak.data.__file__).parents[2]


def source_of(module: str, root: Path) -> Path | None:
    base = root.joinpath(*module.split("."))
    return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)


def imports(module: str, root: Path = SRC) -> set[str]:
    """The dotted names `module` imports, at any nesting level, relative ones made absolute
    (`from .x import y` in package p: "p.x.y", whether y is a module or a name in p.x)."""
    path = source_of(module, root)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            parts = package[: len(package) + 1 - node.level] if node.level else []
            base = ".".join(parts + ([node.module] if node.module else []))
            out |= {f"{base}.{a.name}" for a in node.names}
    return out


def data_imports(root: Path = SRC) -> dict[str, set[str]]:
    """loraleak.data's modules -> those of its modules each imports ("__init__" for names taken from the
    package itself)."""
    stems = {p.stem for p in (root / "loraleak" / "data").glob("*.py")}
    graph = {}
    for stem in stems:
        module = "loraleak.data" if stem == "__init__" else f"loraleak.data.{stem}"
        names = [
            n.split(".")[2:] for n in imports(module, root) if n == "loraleak.data" or n.startswith("loraleak.data.")
        ]
        graph[stem] = {n[0] if n and n[0] in stems else "__init__" for n in names} - {stem}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    done, path = set(), []

    def visit(m):  # depth-first: meeting a module that is on the path closes a cycle
        if m in path:
            return path[path.index(m) :] + [m]
        if m not in done:
            path.append(m)
            for n in sorted(graph[m]):
                if cycle := visit(n):
                    return cycle
            path.pop()
            done.add(m)

    return next(filter(None, map(visit, sorted(graph))), None)


def test_data_package_has_no_import_cycle():
    graph = data_imports()
    assert graph["tasks"] == {"docstring", "generic", "spamassassin", "example"}  # loaders at top level
    assert graph["example"] == set()
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_cycle_check_sees_relative_absolute_and_nested_imports(tmp_path):
    pkg = tmp_path / "loraleak" / "data"
    pkg.mkdir(parents=True)
    for name, src in {
        "__init__": "from .d import D",
        "a": "from .b import x\nfrom ..cache import cache_root",
        "b": "def f():\n    import loraleak.data.c",
        "c": "from loraleak.data import a",
        "d": "",
        "e": "from . import d\nfrom loraleak.data import D",
    }.items():
        (pkg / f"{name}.py").write_text(src)
    graph = data_imports(tmp_path)
    assert graph == {"__init__": {"d"}, "a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set(), "e": {"d", "__init__"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({**graph, "c": set()}) is None


def test_spamassassin_does_not_import_torch():
    """`loraleak data fetch` must stay light: nothing spamassassin imports, directly or through other
    loraleak modules, is torch or loraleak.models."""
    seen, todo = set(), ["loraleak.data.spamassassin"]
    while todo:
        for name in imports(module := todo.pop()):
            assert name.split(".")[0] != "torch" and not name.startswith("loraleak.models"), f"{module} imports {name}"
            target = next((m for m in (name, name.rsplit(".", 1)[0]) if source_of(m, SRC)), None)
            if name.startswith("loraleak.") and target and target not in seen:
                seen.add(target)
                todo.append(target)
    assert {"loraleak.data.emails", "loraleak.data.example", "loraleak.cache", "loraleak.errors"} <= seen


@pytest.mark.parametrize(
    "name, text",
    [
        ("qa.csv", 'id,prompt,response\nq1,"Q,1:", A1\nq2,Q2:, A2\n'),
        (
            "qa.jsonl",
            '{"id": "q1", "prompt": "Q,1:", "response": " A1"}\n{"id": "q2", "prompt": "Q2:", "response": " A2"}\n',
        ),
    ],
)
def test_a_byte_order_mark_loads_as_the_same_file_without_it(tmp_path, name, text):
    """Spreadsheet exports start with a UTF-8 BOM; it must not become part of the first column's name."""
    plain, marked = tmp_path / name, tmp_path / "bom" / name
    marked.parent.mkdir()
    plain.write_bytes(text.encode())
    marked.write_bytes(b"\xef\xbb\xbf" + text.encode())
    kind = name.split(".")[1]
    expected = [Example("q1", "Q,1:", " A1"), Example("q2", "Q2:", " A2")]
    assert load_task(f"{kind}:{plain}").examples == load_task(f"{kind}:{marked}").examples == expected


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
@pytest.mark.parametrize(
    "name, data, line",
    [
        ("bad.jsonl", b'{"text": "a"}\n\n{"text": "caf\xe9"}\n{"text": "b"}\n', 3),
        ("bad.csv", b'text\na\n"multi\nline"\ncaf\xe9\nb\n', 5),
    ],
)
def test_a_byte_that_is_not_utf8_names_the_file_and_its_line(tmp_path, bom, name, data, line):
    path = tmp_path / name
    path.write_bytes(bom + data)
    message = rf"^{re.escape(str(path))}: line {line} has a byte that is not UTF-8 \(0xe9\); re-save the file as UTF-8$"
    with pytest.raises(TaskError, match=message):
        load_task(f"{name.split('.')[1]}:{path}")


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("x.csv", "text,id\na,1\nb,2,3\n", r"x\.csv: line 3 has more fields than the header's 2; quote a field"),
        ("x.csv", "text\n" + "a" * 200_000 + "\n", r"x\.csv: the row from line 2 is not valid CSV \(field larger"),
        ("x.jsonl", '{"text": "a"}\n"just a string"\n', r"x\.jsonl: line 2 is a str, not an object with fields"),
        ("x.jsonl", '{"text": "a"}\n' + "[" * 100_000, r"x\.jsonl: line 2 is not valid JSON \(nested too deeply"),
        ("x.jsonl", '{"text": "\\ud800"}\n', r"x\.jsonl: line 1 has an unpaired surrogate"),
        ("x.jsonl", '{"id": "a\\nb", "text": "a"}\n{"id": "a\\nb", "text": "b"}\n', r"repeats id 'a\\nb' of line 1"),
    ],
)
def test_every_other_bad_file_is_one_line_naming_the_file_and_line(tmp_path, name, data, message):
    path = tmp_path / name
    path.write_text(data)
    with pytest.raises(TaskError, match=message) as err:
        load_task(f"{name.split('.')[1]}:{path}")
    assert "\n" not in str(err.value)


def test_a_directory_or_unreadable_file_is_a_task_error(tmp_path, monkeypatch):
    from loraleak.data import generic

    with pytest.raises(TaskError, match=r"is a directory; generic tasks are jsonl:PATH or csv:PATH naming a file"):
        load_task(f"csv:{tmp_path}")
    path = tmp_path / "locked.jsonl"
    path.write_text('{"text": "a"}\n')

    def denied(file, *args, **kwargs):  # as a file without read permission (chmod means nothing to root)
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr(generic, "open", denied, raising=False)
    for kind in ("jsonl", "csv"):
        with pytest.raises(TaskError, match=r"locked\.jsonl: cannot read it \(Permission denied\); check that"):
            load_task(f"{kind}:{path}")


def test_shift_check_on_long_texts_stays_finite():
    """Word counts of two 2 MB one-word texts: the product of their squared norms passes 2**64."""
    text = "word " * 400_000
    out = shift_check([Example("m", "", text)], [Example("n", "", text)])
    assert all(math.isfinite(v) for v in out.values())
    assert out["unigram_cosine"] == 1.0 and out["vocab_jaccard"] == 1.0
