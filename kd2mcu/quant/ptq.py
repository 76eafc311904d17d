"""Post-training quantization: a FloatModel plus calibration ranges become an IntModel.

Choices (all per the spec): activations asymmetric int8 from the calibrated min/max (widened to
include zero), weights symmetric int8 with one scale per gate matrix, the head per output channel,
biases int32 at s_in * s_w, and cell_scale_power the smallest P with max |c| < 2^(P + 15).
"""
from __future__ import annotations

import math

import numpy as np

from kd2mcu.errors import UserError
from kd2mcu.quant.floatmodel import CalibrationStats, FloatModel
from kd2mcu.quant.intmodel import (
    GATES,
    MAX_CELL_POWER,
    MIN_CELL_POWER,
    Direction,
    Gate,
    Head,
    IntModel,
    LSTMLayer,
    QParams,
)

_MIN_RANGE = 1e-6


def asymmetric_qparams(lo: float, hi: float) -> QParams:
    """int8 scale and zero point covering [lo, hi] and zero."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < _MIN_RANGE:
        hi = lo + _MIN_RANGE
    scale = (hi - lo) / 255.0
    zero_point = int(np.clip(round(-128 - lo / scale), -128, 127))
    return QParams(scale, zero_point)


def symmetric_scale(w: np.ndarray) -> float:
    m = float(np.abs(w).max()) if w.size else 0.0
    return m / 127.0 if m > 0 else 1.0


def quantize_symmetric(w: np.ndarray, scale: float) -> np.ndarray:
    return np.clip(np.rint(w / scale), -127, 127).astype(np.int8)


def quantize_bias(b: np.ndarray, scale: float, what: str) -> np.ndarray:
    q = np.rint(np.asarray(b, dtype=np.float64) / scale)
    if np.abs(q).max(initial=0) >= 2**31 - 1:
        raise UserError(f"{what}: bias too large for int32 at scale {scale:.3g}: the calibrated input range is "
                        "nearly zero (calibration data that hardly varies?) or the weights are nearly zero against "
                        "a large bias")
    return q.astype(np.int32)


def cell_scale_power(cell_absmax: float) -> int:
    """Smallest P with max |c| < 2^(P + 15), kept inside the range the kernel supports."""
    if cell_absmax <= 0:
        return MIN_CELL_POWER
    p = math.floor(math.log2(cell_absmax)) - 14
    while cell_absmax >= 2.0 ** (p + 15):
        p += 1
    while p - 1 >= MIN_CELL_POWER and cell_absmax < 2.0 ** (p + 14):
        p -= 1
    return int(np.clip(p, MIN_CELL_POWER, MAX_CELL_POWER))


def quantize(fm: FloatModel, stats: CalibrationStats, max_steps: int, source: str = "") -> IntModel:
    if fm.is_token_model:
        in_q = asymmetric_qparams(fm.embedding.min(), fm.embedding.max())
        embedding = np.clip(np.rint(fm.embedding / in_q.scale) + in_q.zero_point, -128, 127).astype(np.int8)
    else:
        in_q = asymmetric_qparams(stats.input_min[0], stats.input_max[0])
        embedding = None
    layers = []
    prev_q = in_q
    for k, fl in enumerate(fm.layers):
        hid_q = asymmetric_qparams(stats.hidden_min[k], stats.hidden_max[k])
        dirs = []
        for d, fd in enumerate(fl.directions):
            gates = {}
            for gi, name in enumerate(GATES):
                sx, sh = symmetric_scale(fd.wx[gi]), symmetric_scale(fd.wh[gi])
                gates[name] = Gate(quantize_symmetric(fd.wx[gi], sx), quantize_symmetric(fd.wh[gi], sh),
                                   quantize_bias(fd.bias[gi], prev_q.scale * sx, f"layer {k} gate {name}"),
                                   sx, sh)
            dirs.append(Direction(gates))
        layers.append(LSTMLayer(prev_q, hid_q, cell_scale_power(stats.cell_absmax[k]), dirs, reverse=fl.reverse))
        prev_q = hid_q
    w_scale = np.array([symmetric_scale(row) for row in fm.head_weight], dtype=np.float64)
    w_q = np.stack([quantize_symmetric(row, s) for row, s in zip(fm.head_weight, w_scale)])
    b_q = np.concatenate([quantize_bias(fm.head_bias[c:c + 1], prev_q.scale * w_scale[c], "head")
                          for c in range(fm.num_classes)])
    out_q = asymmetric_qparams(stats.logits_min, stats.logits_max)
    head = Head(w_q, w_scale, b_q, prev_q, out_q)
    model = IntModel(in_q, layers, head, int(max_steps), embedding, fm.labels, source)
    return model.derive_multipliers().validate()
