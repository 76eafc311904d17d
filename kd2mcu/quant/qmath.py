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
    return _sigmoid_x(_lut_input(pre, shift))


def _sigmoid_x(x):
    """sigmoid16 of x, the input already in the table's index units (``_lut_input``)."""
    x = np.asarray(x, dtype=np.int64)
    a = np.abs(x)
    k = a >> 9
    frac = a & 0x1FF
    kc = np.minimum(k, 255)
    r = np.where(k >= 255, 0x7FFF << 10, (SIGMOID_LUT[kc] << 9) + frac * (_LUT_NEXT[kc] - SIGMOID_LUT[kc]))
    out = np.where(x >= 0, r + (1 << 9), (1 << 25) - r + (1 << 9) - 1) >> 10
    return out


def tanh16(pre, shift: int = 0):
    """Q3.12 (after ``shift``) in, Q0.15 out, through the shared table."""
    return _tanh_x(_lut_input(pre, shift))


def _tanh_x(x):
    """tanh16 of x, the input already in the table's index units (``_lut_input``)."""
    x = np.asarray(x, dtype=np.int64)
    a = np.abs(x)
    k = a >> 8
    frac = a & 0xFF
    kc = np.minimum(k, 255)
    r = np.where(k >= 255, 0xFFFF << 8, (SIGMOID_LUT[kc] << 8) + frac * (_LUT_NEXT[kc] - SIGMOID_LUT[kc]))
    out = np.where(x >= 0, r - (1 << 23) + (1 << 7), (1 << 23) - r + (1 << 7) - 1) >> 8
    return out


def activation_tables() -> tuple[np.ndarray, np.ndarray]:
    """The generated C's form of the shared table, for both signs of x: 512 pairs (base, slope), entry
    j + 256 for j = clamp(x >> n, -256, 255), with
        sigmoid16 = (base + (x & 0x1FF) * slope) >> 10   (n = 9),
        tanh16    = (base + (x & 0xFF) * slope) >> 8     (n = 8),
    x & mask being x's position inside its interval for either sign (two's complement): no absolute value
    and no sign fix-up in the C. For x >= 0 an entry holds T[k] << n with the rounding constant folded in
    (entry 255 the saturated value, slope 0). For x < 0 it holds the reflection of the positive interval
    below, through -floor(r / 2^m) = floor((2^m - 1 - r) / 2^m), which is linear in the position again.
    Where the reflection meets the saturation (sigmoid at x = -255 * 2^9) the interval is constant and
    its entry that constant. Every entry is checked here on its whole interval against sigmoid16 / tanh16
    (and tests/quant/test_qmath.py checks every int16 input at every shift)."""
    T = SIGMOID_LUT.astype(np.int64)
    tables = []
    for n, m, sat, fold, mirror, ref in (
            (9, 10, 0x7FFF << 10, 1 << 9, lambda r: (1 << 25) + (1 << 10) - 1 - r, _sigmoid_x),
            (8, 8, 0xFFFF << 8, (1 << 7) - (1 << 23), lambda r: (1 << 8) - 1 - r, _tanh_x)):
        pos = np.zeros((256, 2), np.int64)
        pos[:255, 0] = (T[:255] << n) + fold
        pos[:255, 1] = T[1:] - T[:255]
        pos[255] = (sat + fold, 0)
        neg = np.array([(mirror(base + (slope << n)), slope) for base, slope in pos])  # neg[k]: j = -(k + 1)
        table = np.concatenate([neg[::-1], pos])
        f = np.arange(1 << n)
        for e, j in enumerate(range(-256, 256)):
            want = ref((j << n) + f)
            if np.any((table[e, 0] + f * table[e, 1]) >> m != want):
                if np.any(want != want[0]):
                    raise AssertionError(f"activation table: interval {j} is neither linear nor constant")
                table[e] = (int(want[0]) << m, 0)
        tables.append(table)
    return tables[0], tables[1]


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
