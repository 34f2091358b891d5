#!/usr/bin/env bash
# Installs Mesa's software Vulkan driver (lavapipe) from Debian's bookworm-backports suite when the
# machine has no Vulkan driver yet, and Mesa's EGL and OpenGL drivers (llvmpipe), which the tests also run
# on through wgpu's OpenGL ES backend (`--features wring/gl`), curl (the guide's tested serving example calls
# the server with it), and Debian's spirv-tools, whose spirv-val checks
# the SPIR-V that naga writes for every variant (tests/backends.rs). Mesa 25 from backports runs compute about 7x faster than
# bookworm's own Mesa 22.3, so the GPU tests and benchmarks use it.
#
# The backports entry is derived from the machine's own Debian sources (its main stanza with the suite
# changed), so no registry host name is written into this repository.
set -euo pipefail

have_lavapipe() {
  ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 && ldconfig -p | grep -q 'libvulkan.so.1'
}

mesa_is_backports() {
  dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null | grep -q 'bpo'
}

have_egl() {
  ldconfig -p | grep -q 'libEGL_mesa.so.0' && ldconfig -p | grep -q 'libEGL.so.1'
}

have_spirv_val() {
  command -v spirv-val >/dev/null 2>&1
}

# The guide's serving example, which the tests run, talks to the server with curl.
have_curl() {
  command -v curl >/dev/null 2>&1
}

if have_lavapipe && mesa_is_backports && have_egl && have_spirv_val && have_curl; then
  echo "install-vulkan: lavapipe from bookworm-backports, Mesa's EGL, spirv-val and curl are already installed"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    exec sudo bash "$0" "$@"
  fi
  echo "install-vulkan: run as root (or install sudo) to install mesa-vulkan-drivers" >&2
  exit 1
fi

codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
backports_list=/etc/apt/sources.list.d/wring-backports.sources
if [ "$codename" = bookworm ] && [ ! -f "$backports_list" ]; then
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    # deb822 format: take the first stanza (the main archive) and replace its suites.
    awk 'BEGIN{RS=""; ORS="\n\n"} NR==1 {print; exit}' /etc/apt/sources.list.d/debian.sources \
      | sed -E 's/^Suites:.*/Suites: bookworm-backports/' >"$backports_list"
  elif [ -f /etc/apt/sources.list ]; then
    # One-line format: take the first plain "deb" line for bookworm and change its suite.
    grep -E '^deb [^ ]+ bookworm ' /etc/apt/sources.list | head -n 1 \
      | sed -E 's/ bookworm / bookworm-backports /' >/etc/apt/sources.list.d/wring-backports.list
  fi
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
if [ "$codename" = bookworm ]; then
  apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1 libegl1 libegl-mesa0 libgl1-mesa-dri
  apt-get install -y -qq spirv-tools curl
else
  # Newer Debian and Ubuntu releases already ship a recent Mesa.
  apt-get install -y -qq mesa-vulkan-drivers libvulkan1 libegl1 libegl-mesa0 libgl1-mesa-dri spirv-tools curl
fi
echo "install-vulkan: installed mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers)"
