"""Where loraleak keeps what it computed, and the fingerprints that say when it can be reused.

The user-level cache (`cache_root`) holds converted models and fetched corpora. A run's own
products (adapters, token statistics, utility passes) live in its output directory, named by
`RunFiles`, each keyed by a fingerprint of exactly the inputs it depends on.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .errors import UserError

T = TypeVar("T")


def cache_root() -> Path:
    """`LORALEAK_CACHE`, else the user's cache directory (`$XDG_CACHE_HOME/loraleak`, `~/.cache/loraleak`)."""
    env = os.environ.get("LORALEAK_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "loraleak"


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (dataclasses as dicts): equal inputs, equal key."""
    blob = json.dumps(parts, sort_keys=True, default=_plain)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks (model and adapter weights can be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _plain(o: Any) -> Any:
    """What json cannot write itself: config sections (dataclasses) and paths."""
    if dataclasses.is_dataclass(o) and not isinstance(o, type):  # a field added later is keyed only when set
        return {
            f.name: getattr(o, f.name)
            for f in dataclasses.fields(o)
            if not (f.metadata.get("keyed_if_set") and getattr(o, f.name) == f.default)
        }
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot fingerprint {type(o).__name__}")


# --- a run's output directory ------------------------------------------------------------------------


class OutputError(UserError, OSError):
    """The output directory cannot be used (a file, not writable, full, in use by another run)."""


class CorruptCache(UserError, ValueError):
    """A cached file cannot be read back (truncated, or written by something else)."""


class RunFiles:
    """Every file and folder of a run's output directory, named once. Token statistics and utility
    passes are named inside them by `scoring.Evidence`, their one owner."""

    KEY_FILE = "loraleak-key.json"  # in a finished folder (adapter, or the run's results): the key it was made under
    LOCK_FILE = ".loraleak.lock"

    def __init__(self, root: str | Path, shared: str | Path | None = None):
        self.root = Path(root)
        self.results = self.root / "results.json"
        self.scores = self.root / "scores.csv"
        self.roc_csv, self.roc_png = self.root / "roc.csv", self.root / "roc.png"
        self.records = self.root / "records.csv"
        self.html = self.root / "report.html"
        # what a run shows: removed together when a run starts under another key
        self.report = (self.results, self.scores, self.records, self.roc_csv, self.roc_png, self.html)
        self.manifest = self.root / "manifest.jsonl"
        self.stats = self.root / "stats"  # attack evidence
        self.utility = self.root / "utility"  # utility evidence and generations
        # The pre-trained model's pieces depend on no training: the cells of a grid share them in one
        # folder (`shared`), where each is keyed by content and none is stale; else the run keeps its own.
        self.shared = Path(shared) if shared is not None else None
        self.pretrained_stats = self.shared / "stats" if self.shared else None
        self.pretrained_utility = self.shared / "utility" if self.shared else None

    @staticmethod
    def grid_shared(cell_dir: str | Path) -> Path:
        """What the cells of the grid whose cell writes to OUT/cells/NAME share: OUT/pretrained."""
        return Path(cell_dir).parent.parent / "pretrained"

    def adapter(self, name: str = "default") -> Path:
        """The target adapter in adapter/, every other (reference, shadows, ...) in adapters/NAME/."""
        return self.root / "adapter" if name == "default" else self.root / "adapters" / name

    def finished_under(self, folder: Path) -> str | None:
        """The key a folder was finished under (None: absent or unfinished)."""
        path = folder / self.KEY_FILE
        return read_cached(path, lambda p: json.loads(p.read_text())["key"]) if path.is_file() else None

    def finish(self, folder: Path, key: str) -> None:
        """Mark a folder complete under `key`: written last, so an interrupted run redoes its work."""
        with atomic(folder / self.KEY_FILE) as tmp:
            tmp.write_text(json.dumps({"key": key}) + "\n")

    def clear_report_unless(self, key: str) -> None:
        """Remove the report of a run made under another key (config, data or numerics changed) the
        moment a new one starts: the directory never shows results its adapter did not produce."""
        if self.finished_under(self.root) != key:
            for path in (*self.report, self.root / self.KEY_FILE):
                path.unlink(missing_ok=True)

    def locked(self) -> AbstractContextManager[str | None]:
        """Hold the output directory for one run (see `locked`)."""
        return locked(self.root)


def check_output(directory: Path) -> None:
    """Can a run write to `directory`? A quick check before any work (the lock checks it for real)."""
    if directory.exists() and not directory.is_dir():
        raise OutputError(f"output directory {directory} is a file: choose another --output (or output_dir)")
    existing = next(p for p in (directory, *directory.absolute().parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"output directory {directory}: {existing} is not writable; choose another --output")


_HELD: set[Path] = set()  # directories this process holds: the CLI takes a lock before `run` takes it again


@contextmanager
def locked(directory: Path) -> Iterator[str | None]:
    """Hold DIRECTORY/.loraleak.lock for the block: an OS file lock, released on any exit (even kill -9).
    A lock file left by a killed run is stale by construction: it is taken over, and its holder (what
    was killed) is yielded; None when the last run exited. A second live run is refused with the first
    one's process id; every way the directory cannot be used is one OutputError. Re-entrant within
    a process (the inner hold yields None)."""
    check_output(directory)
    if directory.resolve() in _HELD:
        yield None
        return
    with ExitStack() as stack:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            handle = stack.enter_context(open(directory / RunFiles.LOCK_FILE, "a+"))
        except OSError as e:
            raise OutputError(
                f"cannot write to output directory {directory} ({e.strerror}): choose another --output"
            ) from None
        handle.seek(0)
        holder = handle.read().strip() or None
        if not _try_lock(handle):
            raise OutputError(
                f"output directory {directory} is in use by another loraleak run ({holder or 'starting'}): "
                "wait for it to finish, or choose another --output"
            )
        handle.truncate(0)
        handle.write(f"pid {os.getpid()} on {platform.node()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        _HELD.add(directory.resolve())
        try:
            yield holder
        finally:
            _HELD.discard(directory.resolve())
            handle.truncate(0)  # any exit but a kill leaves an empty lock file; the lock goes with the handle


def _try_lock(handle: Any) -> bool:
    try:
        if sys.platform == "win32":  # Windows has no flock
            import msvcrt

            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):  # held by another process
        return False
    except OSError as e:
        raise OutputError(
            f"cannot lock {handle.name} ({e.strerror}): its filesystem has no file locks; choose an --output "
            "on a local disk"
        ) from None
    return True


@contextmanager
def atomic(path: Path) -> Iterator[Path]:
    """Write to a temporary sibling (same suffix, for writers that infer the format from it) and move
    it over `path` only when complete: a failed write (a full disk, a kill) leaves no partial file."""
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class StaleCache(Exception):
    """A cached file written by an older loraleak, lacking what this one stores: compute it again."""


def read_cached(path: Path, load: Callable[[Path], T]) -> T:
    """`load(path)` for a file this run (or an earlier one) cached; unreadable is a CorruptCache that
    says which file to delete, never a parser's traceback."""
    try:
        return load(path)
    except (FileNotFoundError, StaleCache):
        raise
    except Exception as e:  # a truncated npz, json or safetensors raises whatever its parser raises
        rm = "rm -r" if path.is_dir() else "rm"
        raise CorruptCache(
            f"cached file {path} cannot be read ({type(e).__name__}: {str(e)[:120]}); delete it "
            f"({rm} '{path}') and rerun: it is recomputed, everything else is reused"
        ) from None


DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


@contextmanager
def disk_errors(directory: Path) -> Iterator[None]:
    """A full, read-only or forbidden disk (or file) during a run is one OutputError naming the file;
    whatever was finished before it is kept and reused by the next run."""
    try:
        yield
    except OSError as e:
        if e.errno not in DISK_ERRORS or isinstance(e, UserError):
            raise
        where = e.filename or directory
        raise OutputError(
            f"cannot use {where} ({e.strerror}): free disk space or fix its permissions (or choose another "
            "--output), then rerun: what was finished is reused"
        ) from None


# --- what each product depends on ----------------------------------------------------------------------
# A key lists exactly what a product's bytes depend on: the config sections and values it reads, the
# data's digest (an edited data file retrains) and the numerics (torch version, device and thread count:
# CPU kernels reduce in an order that depends on the threads, which moves scores by ~1e-2).
# `output_dir`, `eval` and `attacks` are in none of them, so changing those recomputes nothing cached.


@dataclass(frozen=True)
class Keys:
    """The fingerprints of one run's cached products. `data`: the digest of the split's examples."""

    cfg: Any
    data: str = ""
    numerics: dict[str, Any] = field(default_factory=dict)  # experiment.numerics(): torch, device, threads
    adapter: str = ""  # an audit's given adapter (its sha256): then it, not a recipe, is the target

    def target(self) -> str:
        """The target adapter: model, data, split, recipe and DP; or the given adapter and the model."""
        c = self.cfg
        if self.adapter:
            return fingerprint("given", self.model(), self.adapter, self.numerics)
        return fingerprint("target", self.model(), c.task, c.split, c.lora, c.train, c.dp, self.data, self.numerics)

    def pretrained(self) -> str:
        """The pre-trained model: the model alone."""
        return fingerprint("pretrained", self.model(), self.numerics)

    def extra_adapter(self, spec: Any) -> str:
        """An attacker's adapter (reference, shadow, ...): the target's recipe without DP, its own name,
        seed offset and data inputs, and, when its data is generated by the target, the target and the
        scoring settings its generation batches follow."""
        c = self.cfg
        reads = (self.target(), c.scoring) if spec.reads_target else None
        return fingerprint(
            "extra", spec.name, spec.seed_offset, spec.inputs, self.model(), c.task, c.split, c.lora, c.train,
            self.data, self.numerics, reads,
        )  # fmt: skip

    def model(self) -> dict[str, Any]:
        """The model section without where it runs: the device it resolved to is in `numerics` (so
        `device: auto` and `device: cpu` on a CPU machine share their cache)."""
        placement = ("device", "device_map")
        return {k: v for k, v in dataclasses.asdict(self.cfg.model).items() if k not in placement}

    def roles(self) -> dict[str, str]:
        """The keys of the two roles every run has: the fine-tuned model and the pre-trained one."""
        return {"target": self.target(), "pretrained": self.pretrained()}

    def targets(self) -> str:
        """The attacks' samples (members + non-members, population) as encoded and scored."""
        return fingerprint("targets", self.cfg.task, self.cfg.split, self.cfg.scoring, self.data)

    def held_out(self) -> str:
        """The utility's samples (the non-members), their passes and greedy generations."""
        return fingerprint("held-out", self.cfg.task, self.cfg.split, self.cfg.scoring.batch_size, self.data)

    def report(self) -> str:
        """A run's report: the whole config (eval and attacks included) over the data and numerics; not
        how a grid ran it (`execution`: the threads it gave a cell are in the numerics)."""
        config = {k: v for k, v in dataclasses.asdict(self.cfg).items() if k != "execution"}
        return fingerprint("report", config, self.data, self.numerics, self.adapter)
