#!/usr/bin/env bash
# Puts llama.cpp's tokenizer test vocabularies into models/vocab/ (git-ignored): vocabulary-only GGUFs of
# real models' tokenizers (Qwen2, Llama 3, Llama 2's SentencePiece, Phi-3) with llama.cpp's own test texts
# (.inp) and the ids its tokenizer gives them (.out), as tests/tokenizer-0 reads them. They ship in the
# llama.cpp tree that the llama-cpp-python 0.3.36 source package vendors, which pip fetches from the package
# registry (preparing its metadata needs scikit-build-core, installed into a scratch folder); no model hub
# is involved.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=models/vocab
names=(qwen2 llama-bpe llama-spm phi-3)
missing=0
for n in "${names[@]}"; do
  for ext in gguf gguf.inp gguf.out; do
    [ -f "$dir/ggml-vocab-$n.$ext" ] || missing=1
  done
done
if [ "$missing" = 0 ]; then
  echo "fetch-vocab: $dir is complete"
  exit 0
fi
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1
python3 -m pip install --quiet --target "$tmp/build" scikit-build-core
PYTHONPATH="$tmp/build" python3 -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation \
  llama-cpp-python==0.3.36 -d "$tmp"
src=llama_cpp_python-0.3.36/vendor/llama.cpp/models
members=()
for n in "${names[@]}"; do
  for ext in gguf gguf.inp gguf.out; do
    members+=("$src/ggml-vocab-$n.$ext")
  done
done
tar -xzf "$tmp/llama_cpp_python-0.3.36.tar.gz" -C "$tmp" "${members[@]}"
for m in "${members[@]}"; do
  cp "$tmp/$m" "$dir/"
done
echo "fetch-vocab: wrote ${#members[@]} files into $dir"
