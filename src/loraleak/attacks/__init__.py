"""Membership inference attacks, one registered unit each; importing this package registers them all."""

from . import loss  # noqa: F401  (registers)
from .registry import ATTACKS, FAMILIES, PRESETS, Attack, calibrated_by_pretrained, register, resolve, scalar_attack

__all__ = ["ATTACKS", "FAMILIES", "PRESETS", "Attack", "calibrated_by_pretrained", "register", "resolve",
           "scalar_attack"]
