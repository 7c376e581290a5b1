"""A grid's cells as Ray tasks (`execution.backend: ray`): on this machine, or on a cluster.

Ray schedules; loraleak only says what each cell holds (`cpus_per_cell`, `gpus_per_cell`). Each task
runs the cell as `experiment.run` does locally, in the cell's own directory, and returns its grid
row to the driver, which writes grid.csv, grid.md and the reports. So the cells write into the
output directory themselves: on a cluster that directory must be shared storage mounted at the
same path on every node (the driver gathers only the rows). Cells already finished under their
config are not submitted; a cell that fails is reported with its error while the others finish,
and a re-run submits only what is not finished.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from . import report
from .config import Cell, ExecutionConfig
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
        task = _task(execution)
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


def _task(execution: ExecutionConfig) -> Any:
    """The remote cell, holding its CPUs and, where the cluster has any, its GPUs (no retries: a cell
    that fails is reported, and a re-run retries it)."""
    import ray

    if not ray.is_initialized():
        # a fresh local Ray sized to this machine, or the cluster at `address`
        ray.init(address=execution.address or None, include_dashboard=False, log_to_driver=False)
    gpus = execution.gpus_per_cell if ray.cluster_resources().get("GPU", 0) else 0
    return ray.remote(num_cpus=execution.cpus_per_cell, num_gpus=gpus, max_retries=0)(run_cell)


def run_cell(cell: Cell, keys: list[str], cpus: float) -> dict:
    """One cell, in a Ray worker: its torch uses the CPUs the task holds; returns the cell's grid row."""
    import torch

    from .experiment import run

    torch.set_num_threads(max(1, int(cpus)))
    t0 = time.perf_counter()
    result = run(cell.config, progress=False, echo=lambda _: None)
    return report.grid_row(cell, result, time.perf_counter() - t0, keys)


def _reason(error: Exception) -> str:
    """The failed cell's own error in one line (Ray wraps it with the worker's traceback)."""
    cause = getattr(error, "cause", None) or error
    return f"{type(cause).__name__}: {str(cause).strip().splitlines()[0] if str(cause).strip() else ''}"
