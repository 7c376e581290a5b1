"""A grid's cells as Ray tasks (`execution.backend: ray`): on this machine, or on a cluster.

Ray schedules; loraleak only says what each cell holds (`cpus_per_cell`, `gpus_per_cell`). Each task
runs the cell as `experiment.run` does locally, in the cell's own directory, and returns its grid
row to the driver, which writes grid.csv, grid.md and the reports. So the cells write into the
output directory themselves: on a cluster that directory must be shared storage mounted at the
same path on every node (the driver gathers only the rows). Cells already finished under their
config are not submitted; a cell that fails is reported with its error while the others finish,
and a re-run submits only what is not finished.

The attacker's own adapters (the shadows of LiRA / RMIA) are the other expensive part: with the Ray
backend, those whose data does not come from the target are trained at once as Ray tasks
(`adapter_files`), each on its own copy of the base model; only the adapter files come back, and the
driver writes them where a local run would have trained them.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import report
from .cache import RunFiles
from .config import Cell, Config, ExecutionConfig
from .errors import UserError


class GridError(UserError, RuntimeError):
    """Some cells of a grid failed; the others finished and are in its table."""


def ray_rows(cells: list[Cell], keys: list[str], echo: Callable[[str], Any]) -> tuple[list[dict], dict[str, str]]:
    """Each cell's grid row, in grid order, run as Ray tasks; and cell -> error for the ones that failed."""
    import ray

    from .experiment import finished_cell

    execution = cells[0].config.execution
    rows: dict[str, dict] = {}
    for cell in cells:
        done = finished_cell(cell.config)
        if done is not None:
            rows[cell.name] = report.grid_row(cell, done, sum(done.timings_s.values()), keys)
    todo = [cell for cell in cells if cell.name not in rows]
    echo(f"[loraleak] {len(rows)} of {len(cells)} cells already finished; {len(todo)} to run with Ray")
    failed: dict[str, str] = {}
    if todo:
        task = _task(execution, run_cell)
        pending = {task.remote(cell, keys, execution.cpus_per_cell): cell for cell in todo}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(ready[0])
            try:
                rows[cell.name] = ray.get(ready[0])
            except ray.exceptions.RayTaskError as e:
                failed[cell.name] = _reason(e)
            echo(f"[loraleak] cells: {len(rows)} done, {len(pending)} running or queued, {len(failed)} failed")
    return [rows[c.name] for c in cells if c.name in rows], failed


def _task(execution: ExecutionConfig, fn: Callable) -> Any:
    """`fn` as a remote task holding a cell's CPUs and, where the cluster has any, its GPUs (no
    retries: a task that fails is reported, and a re-run retries it)."""
    import ray

    if not ray.is_initialized():
        # a fresh local Ray sized to this machine, or the cluster at `address`
        ray.init(address=execution.address or None, include_dashboard=False, log_to_driver=False)
    gpus = execution.gpus_per_cell if ray.cluster_resources().get("GPU", 0) else 0
    return ray.remote(num_cpus=execution.cpus_per_cell, num_gpus=gpus, max_retries=0)(fn)


def run_cell(cell: Cell, keys: list[str], cpus: float) -> dict:
    """One cell, in a Ray worker: its torch uses the CPUs the task holds; returns the cell's grid row."""
    import torch

    from .experiment import run

    torch.set_num_threads(max(1, int(cpus)))
    t0 = time.perf_counter()
    shared = RunFiles.grid_shared(cell.config.output_dir)
    result = run(cell.config, progress=False, echo=lambda _: None, shared=shared)
    return report.grid_row(cell, result, time.perf_counter() - t0, keys)


def _reason(error: Exception) -> str:
    """The failed cell's own error in one line (Ray wraps it with the worker's traceback)."""
    cause = getattr(error, "cause", None) or error
    return f"{type(cause).__name__}: {str(cause).strip().splitlines()[0] if str(cause).strip() else ''}"


def adapter_files(cfg: Config, jobs: dict[str, tuple], threads: int) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Adapters trained as Ray tasks, all at once: jobs maps a name to (encoded data, train section,
    pad id). Yields (name, its files) as each finishes; a failure raises its own error."""
    import ray

    task = _task(cfg.execution, train_adapter)
    pending = {task.remote(cfg, *job, threads): name for name, job in jobs.items()}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        name = pending.pop(ready[0])
        try:
            yield name, ray.get(ready[0])
        except ray.exceptions.RayTaskError as e:
            raise (getattr(e, "cause", None) or e) from None


def train_adapter(cfg: Config, encoded: Any, train: Any, pad_id: int, threads: int) -> dict[str, bytes]:
    """In a Ray worker: a fresh adapter on this worker's own base model, trained as `extra_adapter`
    trains it locally (the same seed, data order and thread count, so the same numbers); its files."""
    import torch

    from . import finetune
    from .experiment import load_base

    torch.set_num_threads(threads)  # the driver's: the thread count is in the adapter's cache key
    model, _ = load_base(cfg, echo=lambda _: None)
    peft_model = finetune.attach_lora(model, cfg.lora, train.seed)
    log = finetune.train_lora(peft_model, encoded, train, pad_id, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        finetune.save_adapter(peft_model, Path(tmp), log)
        return {file.name: file.read_bytes() for file in Path(tmp).iterdir()}
