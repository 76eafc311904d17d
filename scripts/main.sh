#!/usr/bin/env bash
# The main job on the bundled default dataset (BasicMotions, 6-axis motion, shipped inside aeon):
#   1. kd2mcu train: the default teacher (a transformer trained here with MiniRocket + logistic regression
#      as an ensemble), distilled into a TinyLSTM student on an augmented transfer set, then
#      quantization-aware distillation whose forward pass is the int8 kernel's, bit for bit;
#   2. kd2mcu build: the run's integer model generated as C, plus an STM32F405 firmware project;
#   3. kd2mcu sim: the C, compiled with gcc, checked bit for bit against the Python integer reference
#      on the held-out test split;
#      (and the same samples in raw units through the C's own normalization);
#   4. kd2mcu emulate: the firmware, cross-compiled, run in QEMU and checked the same way; kd2mcu validate
#      --qemu: the board firmware's serial runner in QEMU, fed over a pty; kd2mcu report.
# Output: runs/default/ (the run folder) and runs/default/build/ (sources and firmware project).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/default}
KD=.venv/bin/kd2mcu
$KD train --out "$OUT" --force --baseline
$KD report "$OUT"
$KD build "$OUT" --out "$OUT/build" --force
$KD sim "$OUT/build" --inputs "$OUT/test.npz" --save "$OUT/test_logits.npz"
if command -v arm-none-eabi-gcc >/dev/null && command -v qemu-system-arm >/dev/null; then
    $KD emulate "$OUT/build" --inputs "$OUT/test.npz"
    $KD validate "$OUT/build" --qemu --inputs "$OUT/test.npz"
    $KD report "$OUT/build"
else
    echo "main: arm-none-eabi-gcc or qemu-system-arm missing (scripts/setup.sh installs them as root): firmware not emulated"
fi
echo "main: run folder $OUT (metrics.json, curves.png, confusion.png); verified sources in $OUT/build/src;" \
     "STM32 firmware project in $OUT/build/firmware"
