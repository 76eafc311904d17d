#!/usr/bin/env bash
# The main job: a float LSTM classifier trained on the bundled BasicMotions dataset, exported to
# ONNX, quantized to int8 C by kd2mcu, and verified bit for bit by the host simulator.
# Output: runs/basic_motions/ (data, model.onnx, build/ with the generated sources).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/basic_motions}
mkdir -p "$OUT"
.venv/bin/python scripts/float_baseline.py --out "$OUT"
.venv/bin/kd2mcu build "$OUT/model.onnx" --calib "$OUT/train.npz" --out "$OUT/build" --force
.venv/bin/kd2mcu sim "$OUT/build" --inputs "$OUT/test.npz" --save "$OUT/test_logits.npz"
echo "main: verified sources in $OUT/build/src"
