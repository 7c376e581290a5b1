"""Membership inference attacks, one registered unit each; importing this package registers them all."""

import importlib

from .registry import (
    ATTACKS,
    FAMILIES,
    PRESETS,
    Attack,
    ExtraAdapter,
    calibrated_by_pretrained,
    check_params,
    check_population,
    params_for,
    register,
    resolve,
    scalar_attack,
)

# importing a module registers its attacks; this order is the order of `loraleak attacks`, presets and results
ORDER = (
    "loss",
    "zlib",
    "lowercase",
    "mink",
    "neighbourhood",
    "mope",
    "gradnorm",
    "reference",
    "spv",
    "shadow",
    "samia",
    "recall",
    "dcpdd",
    "ezmia",
    "wbc",
    "learned",
)
for _module in ORDER:
    importlib.import_module(f".{_module}", __name__)

__all__ = [
    "ATTACKS",
    "FAMILIES",
    "PRESETS",
    "Attack",
    "ExtraAdapter",
    "calibrated_by_pretrained",
    "check_params",
    "check_population",
    "params_for",
    "register",
    "resolve",
    "scalar_attack",
]
