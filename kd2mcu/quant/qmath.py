"""Integer arithmetic of the kd2mcu int8 LSTM spec (int8-lstm.md), in numpy.

Everything here is exact integer math on int64 arrays; the functions mirror, one for one, the
static inline helpers of ``templates/kd2mcu_int8.h.j2`` so the two can be read side by side.
"""
from __future__ import annotations

import math
from importlib import resources

import numpy as np

INT8_MIN, INT8_MAX = -128, 127
INT16_MIN, INT16_MAX = -32768, 32767
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

#: Requantization of f * c into the cell: f * c scaled by exactly 2^-15.
FORGET_TO_CELL = (2**30, -14)


def _load_lut() -> np.ndarray:
    text = resources.files("kd2mcu").joinpath("data/sigmoid_lut_u16.txt").read_text()
    values = [int(line) for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if len(values) != 256:
        raise RuntimeError(f"sigmoid_lut_u16.txt holds {len(values)} entries, expected 256")
    return np.array(values, dtype=np.int64)


#: The 256-entry table of 65536 * sigmoid(k / 24), shared by sigmoid16 and tanh16.
SIGMOID_LUT = _load_lut()
# T[k + 1] for k = 255 is never read (k >= 255 saturates); pad so indexing stays in bounds.
_LUT_NEXT = np.append(SIGMOID_LUT[1:], SIGMOID_LUT[-1])


def quantize_multiplier(m: float) -> tuple[int, int]:
    """QM(m): a positive real multiplier as (M, S) with m ~= M * 2^(S - 31)."""
    if m < 0 or not math.isfinite(m):
        raise ValueError(f"multiplier must be finite and >= 0, got {m}")
    if m == 0:
        return 0, 0
    frac, e = math.frexp(m)
    mult = math.floor(frac * 2.0**31 + 0.5)  # exact: frac * 2^31 < 2^31 has room for the half
    if mult == 2**31:
        mult, e = 2**30, e + 1
    if e < -31:
        mult, e = 0, 0
    return int(mult), int(e)


def rq(acc, mult: int, shift: int):
    """rq(acc, M, S): TFLite's MultiplyByQuantizedMultiplier (double rounding), elementwise."""
    v = np.asarray(acc, dtype=np.int64) * (1 << max(shift, 0))
    hi = (v * np.int64(mult) + (1 << 30)) >> 31
    n = max(-shift, 0)
    if n == 0:
        return hi
    mask = (1 << n) - 1
    rem = hi & mask
    thr = (mask >> 1) + (hi < 0)
    return (hi >> n) + (rem > thr)


def sat(v, lo: int, hi: int):
    return np.clip(v, lo, hi)


def sat8(v):
    return np.clip(v, INT8_MIN, INT8_MAX)


def sat16(v):
    return np.clip(v, INT16_MIN, INT16_MAX)


def _lut_input(pre, shift: int):
    pre = np.asarray(pre, dtype=np.int64)
    if shift < 0:
        n = -shift
        return (pre * 3 + (1 << (n - 1))) >> n
    return pre * (3 << shift)


def sigmoid16(pre, shift: int = 0):
    """Q3.12 (after ``shift``) in, Q0.15 out, through the shared table."""
    x = _lut_input(pre, shift)
    a = np.abs(x)
    k = a >> 9
    frac = a & 0x1FF
    kc = np.minimum(k, 255)
    r = np.where(k >= 255, 0x7FFF << 10, (SIGMOID_LUT[kc] << 9) + frac * (_LUT_NEXT[kc] - SIGMOID_LUT[kc]))
    out = np.where(x >= 0, r + (1 << 9), (1 << 25) - r + (1 << 9) - 1) >> 10
    return out


def tanh16(pre, shift: int = 0):
    """Q3.12 (after ``shift``) in, Q0.15 out, through the shared table."""
    x = _lut_input(pre, shift)
    a = np.abs(x)
    k = a >> 8
    frac = a & 0xFF
    kc = np.minimum(k, 255)
    r = np.where(k >= 255, 0xFFFF << 8, (SIGMOID_LUT[kc] << 8) + frac * (_LUT_NEXT[kc] - SIGMOID_LUT[kc]))
    out = np.where(x >= 0, r - (1 << 23) + (1 << 7), (1 << 23) - r + (1 << 7) - 1) >> 8
    return out


def activation_tables() -> tuple[np.ndarray, np.ndarray]:
    """The generated C's form of the shared table: for k = 0..255, pairs (base, slope) with
    sigmoid16 = x >= 0 ? q : 32768 - q, q = (base + (|x| & 0x1FF) * slope) >> 10, k = min(|x| >> 9, 255);
    tanh16    = x >= 0 ? q : -q,        q = (base + (|x| & 0xFF) * slope) >> 8,   k = min(|x| >> 8, 255).
    The rounding constants are folded into the bases, the saturation into entry 255 (slope 0), and
    the negative half follows from (2^25 - r + 2^9 - 1) >> 10 = 2^15 - ((r + 2^9) >> 10) and
    (2^23 - r + 2^7 - 1) >> 8 = -((r - 2^23 + 2^7) >> 8). Equal to sigmoid16 / tanh16 for every input."""
    T = SIGMOID_LUT.astype(np.int64)
    slope = np.zeros(256, np.int64)
    slope[:255] = T[1:] - T[:255]
    sig = (T << 9) + (1 << 9)
    sig[255] = (0x7FFF << 10) + (1 << 9)
    tanh = (T << 8) - (1 << 23) + (1 << 7)
    tanh[255] = (0xFFFF << 8) - (1 << 23) + (1 << 7)
    return np.stack([sig, slope], 1), np.stack([tanh, slope], 1)


def quantize_float(x, inv_scale: float, zero_point: int):
    """Float samples to int8 exactly as the generated C helper does it, in float32.

    v = x * inv_scale (float32), clamped to [-256, 256] (NaN counts as 0), rounded half away
    from zero via an exact split into integer and fractional parts, plus the zero point, saturated.
    """
    return sat8(rounded_float(x, inv_scale) + zero_point).astype(np.int8)


def rounded_float(x, inv_scale: float) -> np.ndarray:
    """The int64 value ``quantize_float`` saturates after adding the zero point: x * inv_scale in float32,
    clamped to [-256, 256] (NaN: 0), rounded half away from zero."""
    inv = np.float32(inv_scale)
    with np.errstate(over="ignore", invalid="ignore"):  # x * inv may overflow to inf: clamped below, as in C
        v = np.asarray(x, dtype=np.float32) * inv
    v = np.where(np.isnan(v), np.float32(0), v)
    v = np.clip(v, np.float32(-256), np.float32(256))
    whole = np.trunc(v)
    frac = v - whole  # exact for |v| <= 256
    return whole.astype(np.int64) + (frac >= np.float32(0.5)) - (frac <= np.float32(-0.5))


def clipped_inputs(x, inv_scale: float, zero_point: int, valid) -> int:
    """How many of the values of x where ``valid`` is true ``quantize_float`` saturates: their rounded value
    plus the zero point lies outside -128..127."""
    r = rounded_float(x, inv_scale) + zero_point
    return int(np.count_nonzero(((r < -128) | (r > 127)) & np.asarray(valid, bool)))
