#!/usr/bin/env bash
# Set up kd2mcu on a fresh machine: system tools (gcc; needs root for apt-get) and a virtual
# environment in .venv with the package installed editable plus what the tests and the main job use.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v gcc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: missing ${need_apt[*]}; installing them needs root: run 'sudo apt-get install -y ${need_apt[*]}' and retry" >&2
        exit 2
    fi
    apt-get update -qq && apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# The ARM toolchain and QEMU (firmware builds, kd2mcu emulate, their tests). Optional without root:
# the firmware tests then skip and say why.
need_arm=()
command -v arm-none-eabi-gcc >/dev/null 2>&1 || need_arm+=(gcc-arm-none-eabi)
[ -e /usr/lib/arm-none-eabi/newlib/libc.a ] || [ -e /usr/lib/arm-none-eabi/lib/libc.a ] || need_arm+=(libnewlib-arm-none-eabi)
command -v qemu-system-arm >/dev/null 2>&1 || need_arm+=(qemu-system-arm)
command -v make >/dev/null 2>&1 || need_arm+=(make)
if [ ${#need_arm[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "setup: installing ${need_arm[*]} (apt-get)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_arm[@]}" >/dev/null
    else
        echo "setup: warning: ${need_arm[*]} missing and not root; firmware and emulator tests will skip." \
             "Run 'sudo apt-get install -y ${need_arm[*]}' to enable them." >&2
    fi
fi

# QEMU 7.2's qemu-plugin.h, for the memory-system cycle model (benchmarks/cycle_model/): from Debian's qemu
# source package of the installed QEMU, into .venv/qemu-plugin/. Root only (a deb-src entry is added).
qemu_plugin_header() {
    [ -e .venv/qemu-plugin/qemu-plugin.h ] && return 0
    command -v qemu-system-arm >/dev/null 2>&1 || return 1
    [ "$(id -u)" -eq 0 ] || { echo "setup: warning: not root: the cycle model's qemu-plugin.h is not installed" >&2; return 1; }
    if ! grep -rqs "deb-src" /etc/apt/sources.list /etc/apt/sources.list.d/; then
        suite=$(. /etc/os-release && echo "$VERSION_CODENAME")
        printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: %s %s-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb-src\nURIs: http://deb.debian.org/debian-security\nSuites: %s-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            "$suite" "$suite" "$suite" > /etc/apt/sources.list.d/kd2mcu-src.sources
        apt-get update -qq
    fi
    tmp=$(mktemp -d)
    version=$(dpkg-query -W -f='${source:Version}' qemu-system-arm 2>/dev/null || true)
    (cd "$tmp" && { apt-get source -qq --download-only "qemu=$version" >/dev/null 2>&1 || \
                    apt-get source -qq --download-only qemu >/dev/null 2>&1; }) || { rm -rf "$tmp"; return 1; }
    mkdir -p .venv/qemu-plugin
    tar -xJf "$tmp"/qemu_*.orig.tar.xz -C "$tmp" --wildcards '*/include/qemu/qemu-plugin.h' &&
        cp "$tmp"/qemu-*/include/qemu/qemu-plugin.h .venv/qemu-plugin/
    rm -rf "$tmp"
    [ -e .venv/qemu-plugin/qemu-plugin.h ] && echo "setup: qemu-plugin.h for the cycle model in .venv/qemu-plugin/"
}

python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' || {
    echo "setup: kd2mcu needs Python 3.10 or newer (found $(python3 --version 2>&1))" >&2; exit 2; }

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# torch==2.13.0 is the CPU wheel; pip takes it from the local wheel store where the machine has one.
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
qemu_plugin_header || true
echo "setup: ready (.venv/bin/kd2mcu --help)"
