#!/usr/bin/env bash
# Builds the peer of `cargo xtask bench llm` and `bench gpu`: llama.cpp as vendored in the llama-cpp-python
# 0.3.36 source distribution, with its Vulkan back end (shaders compiled by Debian's glslc) beside the CPU
# one, into target/llama.cpp/build/bin: llama-bench, llama-perplexity, llama-completion, llama-quantize and
# llama-imatrix (`bench quality`'s llama.cpp points, with and without an importance matrix), llama-server
# (`bench serve`'s peer), and greedy-ids
# (tools/fixtures/greedy_ids.cpp, for the greedy-id fixtures). One build serves both back ends: the
# bench hides the Vulkan devices (GGML_VK_VISIBLE_DEVICES empty) for the CPU rows and offloads every
# layer (-ngl 99) to the device wring runs on for the Vulkan rows.
#
# Idempotent: an existing build is kept. Needs a C++ compiler and Python's pip; as root on Debian or
# Ubuntu it installs glslc, the Vulkan headers and SPIR-V headers itself. Takes about 40 minutes on a
# 2-core machine (most of it the Vulkan shaders), a few on a desktop.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=target/llama.cpp
bin=$dir/build/bin
if [ -x "$bin/llama-bench" ] && [ -x "$bin/llama-perplexity" ] && [ -x "$bin/greedy-ids" ] && [ -x "$bin/llama-server" ]; then
  echo "build-llama-cpp: $bin is built"
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq glslc libvulkan-dev spirv-headers g++ >/dev/null
fi
mkdir -p "$dir"
python3 -m pip install --quiet --disable-pip-version-check scikit-build-core cmake
sdist=$dir/llama_cpp_python-0.3.36.tar.gz
if [ ! -f "$sdist" ]; then
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    --no-build-isolation llama-cpp-python==0.3.36 -d "$dir"
fi
src=$dir/llama_cpp_python-0.3.36/vendor/llama.cpp
[ -d "$src" ] || tar xzf "$sdist" -C "$dir"
# Debian 12's Vulkan headers (1.3.239) predate VK_EXT_layer_settings (1.3.261), which ggml-vulkan uses only to
# ask the validation layer for best-practice warnings: older headers build the instance without it.
python3 - "$src/ggml/src/ggml-vulkan/ggml-vulkan.cpp" <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
start = text.find("    VkBool32 enable_best_practice = layer_settings;")
end_marker = "&layer_setting_info);\n"
end = text.find(end_marker, start)
if start >= 0 and end >= 0 and "VK_HEADER_VERSION >= 261" not in text:
    end += len(end_marker)
    block = text[start:end]
    plain = "    vk::InstanceCreateInfo instance_create_info(vk::InstanceCreateFlags{}, &app_info, layers, extensions);\n"
    text = text[:start] + "#if VK_HEADER_VERSION >= 261\n" + block + "#else\n" + plain + "#endif\n" + text[end:]
    open(path, "w").write(text)
PY
vulkan=OFF
if command -v glslc >/dev/null 2>&1 && [ -f /usr/include/vulkan/vulkan.h ]; then
  vulkan=ON
else
  echo "build-llama-cpp: no glslc or Vulkan headers: building the CPU back end only" >&2
fi
cmake -S "$src" -B "$dir/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DGGML_VULKAN=$vulkan
cmake --build "$dir/build" -j"$(nproc)" --target llama-bench llama-perplexity llama-completion llama-quantize llama-imatrix llama-server
g++ -O2 -std=c++17 -I "$src/include" -I "$src/ggml/include" tools/fixtures/greedy_ids.cpp \
  -L "$bin" -lllama -lggml -lggml-base -Wl,-rpath,"$(cd "$bin" && pwd)" -o "$bin/greedy-ids"
echo "build-llama-cpp: built $bin (Vulkan back end: $vulkan)"
