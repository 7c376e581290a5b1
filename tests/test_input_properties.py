"""Property tests of what users hand in: any config mapping, config file or `--set` override, and any
jsonl / csv data file, either loads or fails with one clear line (a UserError), never another exception."""

import csv
import dataclasses
import io
import json
import typing

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from loraleak.config import Config, ConfigError, load_config, load_grid
from loraleak.data import Example, LoadedTask, load_task
from loraleak.errors import UserError

# derandomize: CI sees the same examples every run; example counts keep the file well under 30 s
SETTINGS = settings(derandomize=True, max_examples=120, deadline=None)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One folder per test, whose file each example overwrites (@given runs many examples per test call)."""
    return tmp_path_factory.mktemp("inputs")


def one_line_or(load, expected: type):
    """load() returns an `expected`, or raises a UserError of one line; anything else fails the test."""
    try:
        out = load()
    except UserError as e:
        message = str(e)
        assert message.strip() and len(message.splitlines()) == 1, f"not one line: {message!r}"
        return None
    assert isinstance(out, expected), out
    return out


# --- configs ------------------------------------------------------------------------------------------

WORDS = ["response", "full", "float32", "one-pass", "loss", "zlib", "tiny-llama", "toy", "q_proj", "runs/x"]

junk_keys = st.text(max_size=8) | st.integers(-2, 2) | st.none() | st.booleans()
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.just(10**4000)  # YAML reads it; too large for a float
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(WORDS)
)
junk = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(junk_keys, inner, max_size=3), max_leaves=8
)


def mostly(good: st.SearchStrategy, bad: st.SearchStrategy = junk) -> st.SearchStrategy:
    """`good` 19 times in 20, else `bad`: most examples get deep into the checks, some probe each one."""
    return st.integers(0, 19).flatmap(lambda i: bad if i == 7 else good)  # not an end: draws favour those


def plausible(f: dataclasses.Field, tp: typing.Any) -> st.SearchStrategy:
    """Values field `f` of type `tp` takes: its choices, numbers in its range, names (junk probes the rest)."""
    meta = f.metadata
    if "choices" in meta:
        return st.sampled_from(meta["choices"])
    if tp is bool:
        return st.booleans()
    low, high = meta.get("gt", meta.get("ge", -3)), meta.get("lt", 12)
    if tp is int:
        return st.integers(low + ("gt" in meta), high)
    if tp is float:
        return st.floats(low, high, exclude_min="gt" in meta, exclude_max="lt" in meta)
    if tp is str:
        return st.sampled_from(WORDS) | st.text(max_size=6)
    if typing.get_origin(tp) is list:
        return st.lists(st.integers(-3, 12) if typing.get_args(tp)[0] is int else st.sampled_from(WORDS), max_size=3)
    return st.dictionaries(st.sampled_from(WORDS), st.dictionaries(st.sampled_from(["n", "k"]), junk, max_size=2))


def fields_of(cls: type, prefix: str = "") -> dict[str, tuple[typing.Any, st.SearchStrategy]]:
    """Dotted key -> (type, plausible values), for every field of Config and of its sections."""
    out, hints = {}, typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        out.update(
            fields_of(tp, f"{f.name}.") if dataclasses.is_dataclass(tp) else {prefix + f.name: (tp, plausible(f, tp))}
        )
    return out


SETTING = {key: values for key, (_, values) in fields_of(Config).items()}
SCALAR = [key for key, (tp, _) in fields_of(Config).items() if "." in key and tp in (bool, int, float, str)]
SECTIONS = sorted({key.split(".")[0] for key in SCALAR})
TOP = [f.name for f in dataclasses.fields(Config)] + ["sweep", "variants"]


def value_of(key: str) -> st.SearchStrategy:
    """A value for a dotted key: mostly plausible, sometimes a list of them (a sweep), sometimes junk."""
    good = SETTING[key]
    return mostly(mostly(good, st.lists(good, min_size=1, max_size=2)) if key in SCALAR else good)


def pairs(keys: list[str], prefix: str = "") -> st.SearchStrategy:
    """A mapping of up to 3 of `keys` (less `prefix`) to values; one pair in twenty is junk."""
    pair = st.sampled_from(keys).flatmap(lambda k: st.tuples(st.just(k.removeprefix(prefix)), value_of(k)))
    return st.lists(mostly(pair, st.tuples(junk_keys, junk)), max_size=3).map(dict)


def section(name: str) -> st.SearchStrategy:
    return mostly(pairs([k for k in SETTING if k.startswith(f"{name}.")], prefix=f"{name}."))


sweep = st.sampled_from(SCALAR).flatmap(lambda k: st.tuples(st.just(k), st.lists(SETTING[k], min_size=1, max_size=2)))
variant = st.builds(lambda name, kvs: {"name": name, **kvs}, st.sampled_from("abcd"), pairs(list(SETTING)))
grid_parts = {
    "sweep": mostly(st.lists(mostly(sweep, st.tuples(junk_keys, junk)), max_size=2).map(dict)),
    "variants": mostly(
        st.lists(variant, min_size=1, max_size=3, unique_by=lambda v: v["name"]), st.lists(variant, min_size=2) | junk
    ),
    **{name: value_of(name) for name in ("attacks", "attack_params", "output_dir")},
}
configs = st.builds(
    lambda real, extra: {**extra, **real},
    st.fixed_dictionaries({}, optional={**{name: section(name) for name in SECTIONS}, **grid_parts}),
    mostly(st.just({}), st.dictionaries(junk_keys | st.sampled_from(TOP), junk, max_size=2)),
)
overrides = st.lists(
    mostly(
        st.sampled_from(list(SETTING)).flatmap(
            lambda k: value_of(k).map(lambda v: f"{k}={json.dumps(v)}")  # JSON is YAML
        ),
        st.text(max_size=15)
        | st.builds("{}={}".format, st.sampled_from(TOP) | st.text(max_size=8), st.text(max_size=8)),
    ),
    max_size=4,
)


def check_config_and_grid(config, sets=()):
    one_line_or(lambda: load_config(config, overrides=list(sets)), Config)
    cells = one_line_or(lambda: load_grid(config, overrides=list(sets)), list)
    assert cells is None or (cells and all(isinstance(c.config, Config) for c in cells))


@SETTINGS
@given(configs)
def test_any_config_mapping_loads_or_is_one_clear_line(data):
    check_config_and_grid(data)


@SETTINGS
@given(configs, overrides)
def test_any_config_file_with_overrides_loads_or_is_one_clear_line(workdir, data, sets):
    path = workdir / "c.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    check_config_and_grid(path, sets)


@SETTINGS
@given(st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")) | st.binary(max_size=100))
def test_any_text_in_a_config_file_loads_or_is_one_clear_line(workdir, content):
    path = workdir / "c.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    check_config_and_grid(path)


@SETTINGS
@given(overrides)
def test_any_overrides_load_or_are_one_clear_line(sets):
    check_config_and_grid(None, sets)


@pytest.mark.parametrize(
    "content, message",
    [  # each crashed (or gave a multi-line error) before the fix its message names
        ("train: {lr: " + "9" * 400 + "}", r"'train.lr' is 9+\.\.\.9+, too large for a float; give a smaller number"),
        ("model: " + "9" * 5000, r"not valid YAML \(Exceeds the limit \(4300 digits\).*value has 5000 digits\)$"),
        ("[" * 600 + "]" * 600, r"not valid YAML \(nested too deeply\)"),
        ("model: {name: 2020-13-45}", r"not valid YAML \(month must be in 1\.\.12\)"),
        ("model: [a\n", r"not valid YAML \(expected ',' or '\]', but got '<stream end>' at line 2, column 1\)"),
        (
            "\nmodel: {name: \x07}",
            r"not valid YAML \(line 2 has character #x0007: special characters are not allowed\)",
        ),
        (b"\nmodel: {name: caf\xe9}", r"c\.yaml: line 2 has a byte that is not UTF-8; re-save the file as UTF-8"),
        ("sweep: {1: [2, 3]}", r"grid key 1 is not a dotted key like train\.epochs"),
        ("variants: [{name: a, 7: 1}]", r"grid key 7 is not a dotted key like train\.epochs"),
        ("output_dir: 3\nsweep: {train.epochs: [1, 2]}", r"'output_dir' must be str, got 3"),
        ("output_dir: null\nvariants: [{name: a}, {name: b}]", r"'output_dir' must be str, got None"),
        ("model: {name: []}", r"'model\.name' is an empty list; give a value, or values to sweep"),
        ('train: {"a\\nb": 1}', r"unknown key 'train\.a\\nb'"),
        ('train: {"a\\x85b": 1}', r"unknown key 'train\.a\\x85b'"),
    ],
)
def test_config_files_that_once_crashed_are_one_clear_line(tmp_path, content, message):
    path = tmp_path / "c.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    for load in (load_config, load_grid):
        with pytest.raises(ConfigError, match=message) as err:
            load(path)
        assert len(str(err.value).splitlines()) == 1


@pytest.mark.parametrize(
    "sets, message",
    [
        (["train.lr=["], r"--set: the value of 'train\.lr' is not valid YAML \(expected the node content.*\); quote"),
        (["train.lr=!!python/name:os.system"], r"the value of 'train\.lr' is not valid YAML \(could not determine"),
        (["model.name=[]"], r"'model\.name' is an empty list"),
        (["a\nb"], r"--set: 'a\\nb' is not KEY=VALUE"),
        (
            ["model.name=x", "model.name.y\nz=1"],
            r"--set: 'model\.name\.y\\nz' goes through 'name', which is not a section",
        ),
    ],
)
def test_overrides_that_once_crashed_are_one_clear_line(sets, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(None, overrides=sets)
    assert len(str(err.value).splitlines()) == 1


def test_a_huge_value_in_a_message_is_cut_short():
    """A YAML alias can expand to millions of items, an int can be too long for str: a message shows a bit."""
    bomb = ["x"] * 10
    for _ in range(6):
        bomb = [bomb] * 10  # 10**7 items, shared as YAML aliases share them
    with pytest.raises(ConfigError, match=r"'attacks' must be a list of names, got \[\[\[.*\.\.\.$") as err:
        load_config({"attacks": bomb})
    assert len(str(err.value)) < 300
    with pytest.raises(
        ConfigError, match=r"'model' must be a mapping of keys to values, got a number too long to show"
    ):
        load_config({"model": 10**5000})


# --- jsonl and csv data ---------------------------------------------------------------------------------

COLUMNS = ["id", "prompt", "response", "text"]
BOM = st.sampled_from([b"", b"\xef\xbb\xbf"])  # spreadsheet exports start with one
texts = mostly(st.text(max_size=10), st.sampled_from(["\ud800", "a\u2028b", "\x00", "\r"]))  # text() has no surrogates
ids = st.integers(0, 30) | st.text(min_size=1, max_size=3) | st.none()  # null: an id from the line
json_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
good_rows = st.fixed_dictionaries({"prompt": texts, "response": texts}, optional={"id": ids, "text": texts}) | (
    st.fixed_dictionaries({"text": texts}, optional={"id": ids, "other": json_junk})
)
bad_rows = json_junk | st.dictionaries(st.sampled_from(COLUMNS) | st.text(max_size=6), json_junk, max_size=4)


@st.composite
def jsonl_files(draw) -> bytes:
    rows = draw(st.lists(mostly(good_rows, bad_rows), max_size=6))
    ascii_only, end = draw(st.booleans()), draw(st.sampled_from(["\n", "\r\n", "\n\n"]))
    text = end.join(json.dumps(r, ensure_ascii=ascii_only) for r in rows)
    return draw(BOM) + text.encode("utf-8", "surrogatepass")  # a lone surrogate: bytes that are not UTF-8


@st.composite
def csv_files(draw) -> bytes:
    header = draw(mostly(st.sampled_from([["text"], ["id", "text"], ["prompt", "response"], COLUMNS]), st.lists(texts)))
    cells = st.lists(texts, min_size=len(header), max_size=len(header))
    rows = draw(st.lists(mostly(cells, st.lists(texts, max_size=len(header) + 2)), max_size=6))
    out = io.StringIO()
    csv.writer(out, lineterminator=draw(st.sampled_from(["\r\n", "\n"]))).writerows([header, *rows])
    return draw(BOM) + out.getvalue().encode("utf-8", "surrogatepass")


def spoiled(files: st.SearchStrategy) -> st.SearchStrategy:
    """A file with a few random bytes put in somewhere: a stray byte that is not UTF-8, a NUL, a quote..."""
    return st.builds(
        lambda data, junk, at: data[: int(at * len(data))] + junk + data[int(at * len(data)) :],
        files,
        st.binary(min_size=1, max_size=3),
        st.floats(0, 1),
    )


def check_data(path, kind: str):
    loaded = one_line_or(lambda: load_task(f"{kind}:{path}"), LoadedTask)
    if loaded is not None:
        assert loaded.examples and all(isinstance(ex, Example) for ex in loaded.examples)
        assert all(isinstance(x, str) for ex in loaded.examples for x in (ex.id, ex.prompt, ex.response))
        assert len({ex.id for ex in loaded.examples}) == len(loaded.examples)
        assert all(ex.sha256 for ex in loaded.examples)  # every text encodes as UTF-8


@SETTINGS
@given(st.binary(max_size=300) | spoiled(jsonl_files()) | spoiled(csv_files()), st.sampled_from(["jsonl", "csv"]))
def test_any_bytes_in_a_data_file_load_or_are_one_clear_line(workdir, data, kind):
    path = workdir / f"d.{kind}"
    path.write_bytes(data)
    check_data(path, kind)


@SETTINGS
@given(jsonl_files().map(lambda data: ("jsonl", data)) | csv_files().map(lambda data: ("csv", data)))
def test_any_jsonl_or_csv_rows_load_or_are_one_clear_line(workdir, file):
    kind, data = file
    path = workdir / f"d.{kind}"
    path.write_bytes(data)
    check_data(path, kind)


NO_NUL = st.characters(exclude_characters="\x00")  # Python 3.10's csv refuses a NUL


@SETTINGS
@given(
    st.lists(
        st.tuples(st.text(NO_NUL, min_size=1, max_size=4), st.text(NO_NUL, max_size=8), st.text(NO_NUL, max_size=8)),
        min_size=1,
        max_size=5,
        unique_by=lambda r: r[0],
    ),
    BOM,
    st.sampled_from(["jsonl", "csv"]),
)
def test_good_rows_load_exactly_with_or_without_a_byte_order_mark(workdir, rows, bom, kind):
    out = io.StringIO()
    if kind == "csv":
        csv.writer(out).writerows([["id", "prompt", "response"], *rows])
    else:
        out.writelines(json.dumps({"id": i, "prompt": p, "response": r}) + "\n" for i, p, r in rows)
    path = workdir / f"d.{kind}"
    path.write_bytes(bom + out.getvalue().encode())
    assert load_task(f"{kind}:{path}").examples == [Example(*row) for row in rows]
