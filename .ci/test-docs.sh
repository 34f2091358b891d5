#!/usr/bin/env bash
# The guide and the API documentation: `mdbook build docs` (mdBook 0.5, installed with cargo when missing)
# must finish without a warning, and `cargo doc` must document every workspace crate with warnings as errors
# (every library crate has #![warn(missing_docs)], so an undocumented public item fails here). The guide's
# examples and links are tested by the test command itself (crates/wring-cli/tests/book.rs, and
# crates/wring-py/tests/test_docs.py for the Python page). Part of the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

if ! mdbook --version 2>/dev/null | grep -q 'v0\.5\.'; then
  # Only the book renderer and its search index: the live-reload server's dependencies are not needed.
  cargo install --quiet --locked mdbook@0.5.4 --no-default-features --features search
fi
log=$(mktemp)
mdbook build docs 2>&1 | tee "$log"
if grep -Eq '(WARN|ERROR)' "$log"; then
  echo "mdbook build printed warnings or errors" >&2
  exit 1
fi

RUSTDOCFLAGS="-D warnings" cargo doc --quiet --no-deps --workspace --lib --features wring/gl
echo "test-docs: the guide and the API documentation build without warnings"
