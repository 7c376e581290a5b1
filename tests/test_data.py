import textwrap

import pytest

from loraleak.data import (Example, TaskError, dedup, encode_examples, load_task, make_split, read_manifest,
                           write_manifest)
from loraleak.data.docstring import records_from_source

from helpers import toy_examples

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
    examples = load_task("docstring")
    assert len(examples) > 1000
    assert not any(".test." in ex.id or ex.id.split(".")[-1].startswith("_") for ex in examples)
    kept, dropped = dedup(examples)
    assert len({ex.response.strip().lower() for ex in kept}) == len(kept)


def test_split_is_deterministic_disjoint_and_order_free():
    ex = toy_examples(60)
    a = make_split(ex, 20, 20, 10, seed=1)
    b = make_split(list(reversed(ex)), 20, 20, 10, seed=1)
    c = make_split(ex, 20, 20, 10, seed=2)
    ids = lambda s: [[e.id for e in part] for part in (s.members, s.nonmembers, s.population)]
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
    assert tok.decode(short[:enc.response_start[1]]) == "short:" and enc.truncated == 1
