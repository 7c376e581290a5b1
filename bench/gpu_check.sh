#!/usr/bin/env bash
# The GPU check of docs/devices.md: the default demo on CUDA beside the CPU run (under 8 minutes on one
# GPU). Run from the repository root on a machine with a CUDA torch in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
timeout 480 .venv/bin/python bench/gpu_check.py "$@"
