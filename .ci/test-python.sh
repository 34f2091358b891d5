#!/usr/bin/env bash
# The Python bindings: `pip install .` builds crates/wring-py with maturin (abi3; the dev profile here), then pytest runs
# tests/test_wring.py on the test model. Part of the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
# Debian's own Python refuses system-wide installs unless told; a CI machine is disposable.
export PIP_BREAK_SYSTEM_PACKAGES=1
python3 -m pip install --quiet numpy pytest
# The tests build the module in the dev profile with the features of the Rust test build, so maturin reuses
# the artifacts `cargo test --workspace --features wring/gl` left in target/ instead of compiling the whole
# GPU stack again in release (minutes of CI); `pip install .` without this is the optimised build users get.
MATURIN_PEP517_ARGS="${MATURIN_PEP517_ARGS:---profile dev --features wring-runtime/gl}" \
  python3 -m pip install --quiet --force-reinstall --no-deps .
python3 -m pytest -q crates/wring-py/tests
