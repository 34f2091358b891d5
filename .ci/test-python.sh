#!/usr/bin/env bash
# The Python bindings: `pip install .` builds crates/wring-py with maturin (release, abi3), then pytest runs
# tests/test_wring.py on the test model. Part of the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
# Debian's own Python refuses system-wide installs unless told; a CI machine is disposable.
export PIP_BREAK_SYSTEM_PACKAGES=1
python3 -m pip install --quiet numpy pytest
python3 -m pip install --quiet .
python3 -m pytest -q crates/wring-py/tests
