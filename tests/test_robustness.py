"""Nothing lost, nothing mixed: one run per output directory, results that always match their adapter,
every failure of the disk or of a cached file one clear line, and checks before any work."""

import errno
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import tiny_config, toy_examples

from loraleak import cache, experiment, finetune
from loraleak.cache import CorruptCache, OutputError, RunFiles
from loraleak.cli import main
from loraleak.experiment import run


def _jsonl_config(tmp_path: Path, out: str) -> Path:
    """A tiny-llama run on a jsonl file: what a second process can run (the toy task is this process's)."""
    data = tmp_path / "toy.jsonl"
    data.write_text("".join(json.dumps(vars(ex)) + "\n" for ex in toy_examples()))
    cfg = tiny_config(tmp_path, task={"name": f"jsonl:{data}"}, eval={"bootstrap": 0, "utility": False})
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump({**cfg.to_dict(), "output_dir": str(tmp_path / out)}))
    return path


def test_a_second_run_into_a_busy_directory_is_refused_and_the_first_is_intact(tmp_path, capsys):
    config = _jsonl_config(tmp_path, "shared")
    lock = tmp_path / "shared" / RunFiles.LOCK_FILE
    first = subprocess.Popen(
        [sys.executable, "-m", "loraleak.cli", "run", "--config", str(config), "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (lock.is_file() and lock.read_text().startswith("pid")) and first.poll() is None:
        assert time.time() < deadline, "the first run never took the lock"
        time.sleep(0.05)
    assert main(["run", "--config", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"in use by another loraleak run (pid {first.pid} " in err and len(err.strip().splitlines()) == 1
    assert first.wait(timeout=600) == 0, first.stderr.read()
    assert lock.read_text() == ""  # released: the next run takes it
    # intact: exactly what the same config gives alone
    alone = yaml.safe_load(config.read_text())
    run({**alone, "output_dir": str(tmp_path / "alone")}, progress=False, echo=lambda _: None)
    shared, clean = (pd.read_csv(tmp_path / d / "scores.csv") for d in ("shared", "alone"))
    pd.testing.assert_frame_equal(shared, clean)


def test_the_lock_is_the_os_lock_and_a_killed_runs_lock_is_taken_over(tmp_path):
    held = subprocess.Popen(
        [sys.executable, "-c", f"from loraleak import cache; from pathlib import Path\n"
         f"with cache.locked(Path({str(tmp_path)!r})):\n    print('held', flush=True); input()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert held.stdout.readline() == "held\n"
    with pytest.raises(OutputError, match=f"pid {held.pid} "), cache.locked(tmp_path):
        pass
    held.kill()  # no chance to clean up: the OS releases the lock, the holder's line stays
    held.wait()
    with cache.locked(tmp_path) as killed:
        assert killed.startswith(f"pid {held.pid} ")
    with cache.locked(tmp_path) as killed, cache.locked(tmp_path) as again:
        assert killed is None  # the last run exited normally
        assert again is None  # re-entrant: `loraleak run` holds it before `run` takes it again


def test_results_of_an_older_config_go_the_moment_a_new_one_starts(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path, eval={"bootstrap": 0, "utility": False}, attacks=["loss"])
    run(cfg, progress=False, echo=lambda _: None)
    files = RunFiles(cfg.output_dir)
    assert all(p.is_file() for p in files.report)

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(finetune, "train_lora", killed)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, train={"epochs": 2}, progress=False, echo=lambda _: None)
    assert not any(p.exists() for p in files.report)  # no results beside an adapter they did not come from
    assert files.finished_under(files.adapter())  # the finished adapter of the first config is kept
    run(cfg, progress=False, echo=lambda _: None)  # the first config again: its adapter reused, no training
    assert all(p.is_file() for p in files.report)


def test_a_full_disk_is_one_line_leaves_no_partial_file_and_the_rerun_resumes(tmp_path, monkeypatch, capsys):
    cfg = tiny_config(tmp_path, eval={"bootstrap": 0, "utility": False}, attacks=["loss", "loss-pt"])
    real_savez = np.savez

    def full(file, **arrays):
        Path(file).write_bytes(b"PK\x03\x04 half")  # what a write cut short leaves
        raise OSError(errno.ENOSPC, "No space left on device", str(file))

    monkeypatch.setattr(np, "savez", full)
    with pytest.raises(OutputError, match="No space left on device") as e:
        run(cfg, progress=False, echo=lambda _: None)
    assert "\n" not in str(e.value) and "rerun" in str(e.value)
    out = Path(cfg.output_dir)
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    assert not list(out.rglob("*.npz"))
    monkeypatch.setattr(np, "savez", real_savez)
    monkeypatch.setattr(finetune, "train_lora", lambda *a, **k: pytest.fail("the finished adapter was retrained"))
    result = run(cfg, progress=False, echo=lambda _: None)
    assert set(result.attacks) == {"loss", "loss-pt"}


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_a_read_only_or_forbidden_output_is_one_line(tmp_path, monkeypatch, code):
    def refused(self, *a, **k):
        raise OSError(code, "refused", str(self))

    monkeypatch.setattr(Path, "mkdir", refused)
    with pytest.raises(OutputError, match="cannot write to output directory"):
        run(tiny_config(tmp_path), progress=False)


def test_an_output_that_is_a_file_or_unwritable_fails_before_any_work(tmp_path, monkeypatch, capsys):
    taken = tmp_path / "results.txt"
    taken.write_text("not a directory")
    assert main(["run", "--output", str(taken), "--no-progress"]) == 2
    assert "is a file" in capsys.readouterr().err
    monkeypatch.setattr(cache.os, "access", lambda *a: False)
    assert main(["run", "--output", str(tmp_path / "new"), "--no-progress"]) == 2
    assert "is not writable" in capsys.readouterr().err


def test_corrupt_cache_files_are_named_with_what_to_delete(tmp_path):
    cfg = tiny_config(tmp_path, eval={"bootstrap": 0, "utility": False}, attacks=["loss"])
    run(cfg, progress=False, echo=lambda _: None)
    cfg.eval.seed = 1  # another report, so the re-runs read the cache back (a finished run reads nothing)
    files = RunFiles(cfg.output_dir)
    stats = next(files.stats.rglob("*.npz"))
    stats.write_bytes(stats.read_bytes()[:100])
    with pytest.raises(CorruptCache, match=f"rm '{stats}'"):
        run(cfg, progress=False, echo=lambda _: None)
    stats.unlink()
    weights = files.adapter() / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:50])
    with pytest.raises(CorruptCache, match=f"rm -r '{files.adapter()}'"):
        run(cfg, progress=False, echo=lambda _: None)
    (files.adapter() / RunFiles.KEY_FILE).write_text("{trunc")
    with pytest.raises(CorruptCache, match=RunFiles.KEY_FILE):
        run(cfg, progress=False, echo=lambda _: None)


def test_bad_target_modules_are_one_line_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(finetune, "train_lora", lambda *a, **k: pytest.fail("trained"))
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tmp_path, lora={"target_modules": ["foo_proj"]}).to_dict()))
    assert main(["run", "--config", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "lora.target_modules ['foo_proj']" in err and len(err.strip().splitlines()) == 1


def test_too_small_a_split_is_refused_with_the_minimum(tmp_path):
    from loraleak.config import ConfigError

    with pytest.raises(ConfigError, match=r"'split.members' must be >= 10, got 1"):
        run(tiny_config(tmp_path, split={"members": 1, "nonmembers": 1}), progress=False)


def test_config_errors_attack_names_and_model_paths_need_no_torch():
    code = (
        "import sys\nfrom loraleak.cli import main\n"
        "assert main(['run', '--set', 'eval.confidence=1.5']) == 2\n"
        "assert main(['run', '--attacks', 'lossx']) == 2\n"
        "assert main(['run', '--set', 'train.epochz=1']) == 2\n"
        "assert main(['run', '--set', 'model.name=/nowhere/model.gguf']) == 2\n"
        "heavy = [m for m in ('torch', 'transformers', 'scipy', 'sklearn') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert [line.split(":")[0] for line in done.stderr.splitlines()] == ["loraleak"] * 4


def test_numerics_follow_the_thread_count():
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = experiment.numerics()
        torch.set_num_threads(2)
        assert experiment.numerics() != one and one["threads"] == 1
    finally:
        torch.set_num_threads(before)


def test_a_grid_is_checked_whole_before_its_first_cell_trains(tmp_path, monkeypatch):
    from loraleak.config import load_grid

    monkeypatch.setattr(experiment, "load_base", lambda *a, **k: pytest.fail("a model was loaded"))
    grid = {
        **tiny_config(tmp_path).to_dict(),
        "output_dir": str(tmp_path / "grid"),
        "sweep": {"split.members": [16, 1000]},
    }
    from loraleak.data import TaskError

    with pytest.raises(TaskError, match="split asks for"):
        experiment.run_grid(load_grid(grid), progress=False)
