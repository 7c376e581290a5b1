"""Grids with `execution.backend: ray` (Ray started locally with 2 CPUs): the same table as the local
backend, a failing cell reported while the other finishes, and a re-run that runs only what is left."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import tiny_config, toy_examples

from loraleak.config import load_grid
from loraleak.execution import GridError
from loraleak.experiment import run_grid

ray = pytest.importorskip("ray", reason="Ray is not installed: `make test` installs it (pip install -e '.[ray]')")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _grid(tmp_path, name, backend, **sections):
    """A 2-cell tiny-llama grid on a jsonl task (Ray workers see files, not tasks registered in this process)."""
    data = tmp_path / "toy.jsonl"
    if not data.is_file():
        data.write_text("".join(json.dumps({"id": e.id, "prompt": e.prompt, "response": e.response}) + "\n"
                                for e in toy_examples()))  # fmt: skip
    cfg = tiny_config(
        tmp_path,
        task={"name": f"jsonl:{data}"},
        output_dir=str(tmp_path / name),
        execution={"backend": backend, "cpus_per_cell": 2},  # 2 threads per cell, as the local run has here
        **{"attacks": ["loss", "loss-pt", "min-k"], "eval": {"bootstrap": 20, "utility": False}, **sections},
    )
    return cfg


def test_a_ray_grid_gives_the_local_grids_table(tmp_path, local_ray):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the local cells with the threads each Ray cell gets: the same numerics
    try:
        local = run_grid(load_grid(_grid(tmp_path, "local", "local"), sweep={"lora.r": [2, 4]}), progress=False)
    finally:
        torch.set_num_threads(threads)
    said: list[str] = []
    remote = run_grid(load_grid(_grid(tmp_path, "ray", "ray"), sweep={"lora.r": [2, 4]}), echo=said.append)
    columns = [c for c in local.columns if c.startswith(("auc:", "tpr@", "best_"))]
    pd.testing.assert_frame_equal(remote[["cell", *columns]], local[["cell", *columns]])
    for cell in local["cell"]:
        a, b = (pd.read_csv(tmp_path / g / "cells" / cell / "scores.csv") for g in ("local", "ray"))
        pd.testing.assert_frame_equal(a, b)
    assert (tmp_path / "ray" / "grid.csv").is_file() and (tmp_path / "ray" / "report.html").is_file()
    assert "0 of 2 cells already finished; 2 to run with Ray" in said[0]
    assert said[-1] == "[loraleak] cells: 2 done, 0 running or queued, 0 failed"


def test_a_failing_cell_is_reported_the_other_finishes_and_a_rerun_runs_only_what_is_left(tmp_path, local_ray):
    cfg = _grid(tmp_path, "grid", "ray")
    variants = [{"name": "good"}, {"name": "bad", "lora.target_modules": ["no_such_proj"]}]
    cells = load_grid(cfg, variants=variants)
    with pytest.raises(GridError) as failure:
        run_grid(cells, echo=lambda _: None)
    message = str(failure.value)
    assert message.startswith("1 of 2 cells failed (bad: ConfigError: lora.target_modules ['no_such_proj']")
    assert "the 1 finished are in" in message and "only these run again" in message
    table = pd.read_csv(tmp_path / "grid" / "grid.csv")
    assert list(table["cell"]) == ["good"]
    finished = (tmp_path / "grid" / "cells" / "good" / "results.json").stat().st_mtime_ns
    said: list[str] = []
    with pytest.raises(GridError):
        run_grid(cells, echo=said.append)  # the same grid again: the good cell is not run again
    assert "1 of 2 cells already finished; 1 to run with Ray" in said[0]
    assert (tmp_path / "grid" / "cells" / "good" / "results.json").stat().st_mtime_ns == finished


def test_shadows_trained_as_ray_tasks_equal_shadows_trained_locally(tmp_path, local_ray, monkeypatch):
    """k=2 shadows for LiRA: with the Ray backend each is a Ray task on its own base model (the driver
    trains none: its add_lora fails here), and their adapter files are byte for byte the local ones."""
    from loraleak import finetune
    from loraleak.experiment import run

    attacks = {"attacks": ["lira-offline"], "attack_params": {"lira-offline": {"k": 2}}}
    local = run(_grid(tmp_path, "local", "local", **attacks), progress=False, echo=lambda _: None)
    monkeypatch.setattr(finetune, "add_lora", lambda *a, **k: pytest.fail("the driver trained a shadow itself"))
    said: list[str] = []
    remote = run(_grid(tmp_path, "ray", "ray", **attacks), progress=False, echo=said.append)
    assert "[loraleak] training 2 adapters as Ray tasks: shadow-0-of-2-seed0, shadow-1-of-2-seed0" in said
    assert sum("trained with Ray" in line for line in said) == 2
    for name in ("shadow-0-of-2-seed0", "shadow-1-of-2-seed0"):
        a, b = (tmp_path / run_dir / "adapters" / name for run_dir in ("local", "ray"))
        assert (a / "adapter_model.safetensors").read_bytes() == (b / "adapter_model.safetensors").read_bytes()
        configs = [json.loads((where / "adapter_config.json").read_text()) for where in (a, b)]
        for c in configs:  # PEFT writes its set of module names in the process's hash order
            c["target_modules"] = sorted(c["target_modules"])
        assert configs[0] == configs[1]
    np.testing.assert_array_equal(remote.scores["lira-offline"].to_numpy(), local.scores["lira-offline"].to_numpy())
    said.clear()
    again = _grid(tmp_path, "ray", "ray", **attacks, eval={"bootstrap": 21, "utility": False})
    run(again, progress=False, echo=said.append)
    assert not any("Ray tasks" in line for line in said)  # finished shadows are reused, not trained again
