"""What a run found, typed: `RunResult` is what `loraleak.run` returns and what results.json holds."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .config import Config


@dataclass
class SplitSummary:
    members: int
    nonmembers: int
    population: int
    pool_after_dedup: int
    duplicates_dropped: int
    records_skipped: dict[str, int]  # reason -> count of records the task's loader dropped
    members_truncated: int
    targets_truncated: int
    scored_tokens_per_sample: float
    shift_check: dict[str, float]  # are members and non-members alike (data.split.shift_check)


@dataclass
class TaskSummary:
    name: str
    kind: str  # "generation" | "classification"
    choices: list[str]


@dataclass
class TrainingSummary:
    steps: int
    first_loss: float | None  # the first and last finite loss (a DP step on an empty batch has none)
    final_loss: float | None
    trainable_parameters: int


@dataclass
class RunResult:
    """One run. `attacks` maps each attack to its metrics (metrics.evaluate) plus family, time and
    citation; `scores` (one row per target sample) is written to scores.csv, not results.json."""

    loraleak_version: str
    config: Config
    split: SplitSummary
    task: TaskSummary
    training: TrainingSummary
    privacy: dict[str, Any] | None  # DP-SGD's epsilon and its accounting, when on
    attacks: dict[str, dict[str, Any]]
    utility: dict[str, Any] | None
    family_time_s: dict[str, float]
    forward_passes: list[dict[str, Any]]
    environment: dict[str, Any]
    timings_s: dict[str, float]
    scores: pd.DataFrame = field(repr=False, compare=False)
    audit: dict[str, Any] | None = None  # an audit's adapter (path, sha256, variant) and record files
    blind_baseline: dict[str, Any] | None = None  # blind.blind_baseline: can the split alone be told apart?

    @classmethod
    def from_dict(cls, data: dict[str, Any], scores: pd.DataFrame) -> RunResult:
        """A result read back from results.json (what `to_dict` wrote) and scores.csv."""
        from .config import load_config

        typed = {"split": SplitSummary, "task": TaskSummary, "training": TrainingSummary}
        fields = {f.name for f in dataclasses.fields(cls)} - {"scores"}
        values = {k: typed[k](**v) if k in typed else v for k, v in data.items() if k in fields}
        return cls(**{**values, "config": load_config(data["config"])}, scores=scores)

    def to_dict(self) -> dict[str, Any]:
        """What results.json holds: every field but `scores`, the config as a plain mapping."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "scores"}
        return {
            k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) and not isinstance(v, type) else v)
            for k, v in out.items()
        }
