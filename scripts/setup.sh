#!/usr/bin/env bash
# Creates .venv (Python >= 3.11) and installs avjax with its test tools. Safe to re-run.
# Extra pip arguments pass through, e.g. `bash scripts/setup.sh .[dev,torch]`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e "${1:-.[dev]}"
