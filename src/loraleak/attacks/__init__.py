"""Membership inference attacks, one registered unit each; importing this package registers them all."""

# registration order = the order of `loraleak attacks` and of results
from . import (loss, zlib, lowercase, mink, neighbourhood, mope, gradnorm, reference, spv,  # noqa: F401,I001
               shadow, samia, recall, dcpdd)  # (importing registers them)
from .registry import (ATTACKS, FAMILIES, PRESETS, Attack, ExtraAdapter, calibrated_by_pretrained, check_params,
                       params_for, register, resolve, scalar_attack)

__all__ = ["ATTACKS", "FAMILIES", "PRESETS", "Attack", "ExtraAdapter", "calibrated_by_pretrained", "check_params",
           "params_for", "register", "resolve", "scalar_attack"]
