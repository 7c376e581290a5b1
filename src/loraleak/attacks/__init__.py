"""Membership inference attacks, one registered unit each; importing this package registers them all."""

# in the order of the README table
from . import loss, zlib, lowercase, mink, neighbourhood, mope, gradnorm, reference, spv, shadow, samia, recall, dcpdd  # noqa: F401,I001  (registers)
from .registry import (ATTACKS, FAMILIES, PRESETS, Attack, ExtraAdapter, calibrated_by_pretrained, check_params,
                       params_for, register, resolve, scalar_attack)

__all__ = ["ATTACKS", "FAMILIES", "PRESETS", "Attack", "ExtraAdapter", "calibrated_by_pretrained", "check_params", "params_for",
           "register", "resolve", "scalar_attack"]
