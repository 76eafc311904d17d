#!/usr/bin/env bash
# The main job: a float LSTM classifier trained on the bundled BasicMotions dataset, exported to
# ONNX, quantized to int8 C by kd2mcu, verified bit for bit by the host simulator and, built for
# the STM32F405, in QEMU.
# Output: runs/basic_motions/ (data, model.onnx, build/ with the generated sources).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/basic_motions}
mkdir -p "$OUT"
.venv/bin/python scripts/float_baseline.py --out "$OUT"
.venv/bin/kd2mcu build "$OUT/model.onnx" --calib "$OUT/train.npz" --out "$OUT/build" --force
.venv/bin/kd2mcu sim "$OUT/build" --inputs "$OUT/test.npz" --save "$OUT/test_logits.npz"
if command -v arm-none-eabi-gcc >/dev/null && command -v qemu-system-arm >/dev/null; then
    .venv/bin/kd2mcu emulate "$OUT/build" --inputs "$OUT/test.npz"
    .venv/bin/kd2mcu report "$OUT/build"
else
    echo "main: arm-none-eabi-gcc or qemu-system-arm missing (scripts/setup.sh installs them as root): firmware not emulated"
fi
echo "main: verified sources in $OUT/build/src, STM32 firmware project in $OUT/build/firmware"
