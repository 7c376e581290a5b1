"""loraleak: how much a LoRA fine-tuned language model leaks membership of its fine-tuning data.

Pipeline, one module per step: models -> data -> finetune -> scoring -> attacks -> metrics -> report,
with config, cache, experiment (stages, grids) and cli around them.

The public API (imported on first use, so `import loraleak` stays light):
- `run(config=None, **sections) -> RunResult`: one experiment; `run_grid(load_grid(...))` a grid.
- `score(model, tokenizer, examples, labels=None, *, attacks=[...], ...) -> Scores`: attacks on your
  own (PEFT) model and examples, without the CLI.
- `load_config`, `load_grid`, `Config`; `load_model`, `load_task`, `load_split`, `Example`;
  `ATTACKS` and `PRESETS`, the attack registry; `UserError`, the base of every error a user can fix.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_API = {
    "run": "experiment",
    "run_grid": "experiment",
    "score": "experiment",
    "Scores": "experiment",
    "load_split": "experiment",
    "RunResult": "results",
    "load_config": "config",
    "load_grid": "config",
    "Config": "config",
    "load_model": "models",
    "load_task": "data",
    "Example": "data",
    "ATTACKS": "attacks",
    "PRESETS": "attacks",
    "UserError": "errors",
}
__all__ = [
    "ATTACKS",
    "PRESETS",
    "Config",
    "Example",
    "RunResult",
    "Scores",
    "UserError",
    "__version__",
    "load_config",
    "load_grid",
    "load_model",
    "load_split",
    "load_task",
    "run",
    "run_grid",
    "score",
]

if TYPE_CHECKING:
    from .attacks import ATTACKS, PRESETS
    from .config import Config, load_config, load_grid
    from .data import Example, load_task
    from .errors import UserError
    from .experiment import Scores, load_split, run, run_grid, score
    from .models import load_model
    from .results import RunResult


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'loraleak' has no attribute '{name}'")
