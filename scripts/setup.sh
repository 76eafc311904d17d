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

python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' || {
    echo "setup: kd2mcu needs Python 3.10 or newer (found $(python3 --version 2>&1))" >&2; exit 2; }

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# torch==2.13.0 is the CPU wheel; pip takes it from the local wheel store where the machine has one.
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
echo "setup: ready (.venv/bin/kd2mcu --help)"
