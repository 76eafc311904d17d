"""Pre-processing of the integer model's input, exactly as the generated C does it.

Three paths from what firmware has to the int8 ``x_q`` (or token ids) the kernel reads; each function
here gives the same bits as its C counterpart, on every input:

- ``quantize_raw`` (C: ``NAME_quantize_input``): a step of raw float samples, in the units the model
  trained on. Per input value k of feature f = k mod F (frame stacking repeats the F features):
      v = (float32(x) - MEAN[f]) * INV[f]          in float32, MEAN = float32(mean),
                                                   INV = float32(1 / (std * input_scale))
      q = sat8(round_half_away(clamp(v, -256, 256)) + zero_point), NaN read as the mean (q = zero_point).
  The subtraction comes before the product, so no compiler can fuse them into a multiply-add.
  A model without a normalization has MEAN 0 and STD 1: the input quantization alone.
- ``quantize_raw_i16`` (C: ``NAME_quantize_raw_i16``): a step of int16 samples (ADC or IMU counts in the
  training units), integers only, for cores without an FPU:
      q = sat8(((int32(raw) * M[f] + B[f]) >> S[f]) + zero_point)    (arithmetic shift: a floor)
  with M = round(a * 2^S), B = round(b * 2^S) + 2^(S-1) (rounding half up), a = 1 / (std * scale),
  b = -mean * a, and S the largest shift in 0..30 with |M| <= 2^15 - 1 and |B| <= 2^30 (so the sum
  never leaves int32). Where even S = 0 cannot hold them, M and B are clamped: then one count moves
  the input by more than the int8 range, or every int16 input saturates, and the clamp changes nothing
  that matters. It can differ from the float path by one step where a * raw + b lies within 2^-S of
  a half (``benchmarks`` and the tests count how often).
- ``encode_utf8`` (C: ``NAME_encode_utf8``): UTF-8 bytes to token ids. Code points are decoded as the
  Unicode standard's "maximal subpart" practice replaces errors (what Python's ``errors="replace"``
  does): each maximal invalid subsequence (a stray continuation byte, a truncated sequence, an overlong
  form, a surrogate, a value above U+10FFFF) becomes one out-of-vocabulary token (id 1), as does any code
  point outside the vocabulary; the result is cut to the trained length. On valid UTF-8 it equals
  ``kd2mcu.train.datasets.encode_text`` of the decoded text.
"""
from __future__ import annotations

import numpy as np

from kd2mcu.quant.intmodel import IntModel
from kd2mcu.quant.qmath import sat8

OOV_ID = 1
I16_MAX_M = 2**15 - 1
I16_MAX_B = 2**30
I16_MAX_SHIFT = 30


def _stats(model: IntModel) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) float64 [F] of one sample's features: identity without a normalization."""
    F = model.sample_features
    if model.normalization is None:
        return np.zeros(F), np.ones(F)
    return np.asarray(model.normalization.mean, np.float64), np.asarray(model.normalization.std, np.float64)


def raw_float_constants(model: IntModel) -> tuple[np.ndarray, np.ndarray]:
    """(MEAN, INV) float32 [F]: the constants of ``NAME_quantize_input``."""
    mean, std = _stats(model)
    return mean.astype(np.float32), (1.0 / (std * model.input.scale)).astype(np.float32)


def _per_value(values: np.ndarray, width: int) -> np.ndarray:
    """Per-sample-feature constants repeated over a step of ``width`` = frame_stack * F values."""
    return np.tile(values, width // len(values))


def quantize_raw(model: IntModel, x) -> np.ndarray:
    """Raw float samples [..., INPUT_SIZE] to int8, as ``NAME_quantize_input``."""
    x = np.asarray(x, dtype=np.float32)
    mean, inv = (_per_value(v, model.input_size) for v in raw_float_constants(model))
    with np.errstate(over="ignore", invalid="ignore"):  # inf - inf, inf * x: NaN or inf, handled below as in C
        v = (x - mean) * inv
    v = np.where(np.isnan(v), np.float32(0), v)
    v = np.clip(v, np.float32(-256), np.float32(256))
    whole = np.trunc(v)
    frac = v - whole  # exact for |v| <= 256
    q = whole.astype(np.int64) + (frac >= np.float32(0.5)) - (frac <= np.float32(-0.5))
    return sat8(q + model.input.zero_point).astype(np.int8)


def raw_i16_constants(model: IntModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(M int32, B int32, S int32) [F]: the constants of ``NAME_quantize_raw_i16``."""
    mean, std = _stats(model)
    M, B, S = [], [], []
    for m, s in zip(mean, std):
        a = 1.0 / (s * model.input.scale)
        b = -m * a
        shift = 0
        for k in range(I16_MAX_SHIFT, -1, -1):
            if abs(round(a * 2.0**k)) <= I16_MAX_M and abs(round(b * 2.0**k)) + 2**max(k - 1, 0) <= I16_MAX_B:
                shift = k
                break
        mult = int(np.clip(round(a * 2.0**shift), -I16_MAX_M, I16_MAX_M))
        half = 2 ** (shift - 1) if shift else 0
        offset = int(np.clip(round(b * 2.0**shift), -I16_MAX_B + half, I16_MAX_B - half)) + half
        M.append(mult)
        B.append(offset)
        S.append(shift)
    return np.array(M, np.int32), np.array(B, np.int32), np.array(S, np.int32)


def quantize_raw_i16(model: IntModel, raw) -> np.ndarray:
    """int16 samples [..., INPUT_SIZE] to int8, as ``NAME_quantize_raw_i16``."""
    raw = np.asarray(raw)
    if raw.dtype != np.int16:
        raise ValueError(f"raw samples must be int16, got {raw.dtype}")
    M, B, S = (_per_value(v, model.input_size).astype(np.int64) for v in raw_i16_constants(model))
    acc = raw.astype(np.int64) * M + B
    return sat8((acc >> S) + model.input.zero_point).astype(np.int8)


# ---------------------------------------------------------------------------------------------- text
def decode_utf8(data: bytes) -> list[int]:
    """Code points of UTF-8 bytes, each maximal invalid subpart as -1 (the rules of ``NAME_encode_utf8``)."""
    out = []
    i, n = 0, len(data)
    while i < n:
        b = data[i]
        if b < 0x80:
            out.append(b)
            i += 1
            continue
        if 0xC2 <= b <= 0xDF:
            need, cp, lo, hi = 1, b & 0x1F, 0x80, 0xBF
        elif 0xE0 <= b <= 0xEF:
            need, cp = 2, b & 0x0F
            lo, hi = (0xA0, 0xBF) if b == 0xE0 else (0x80, 0x9F) if b == 0xED else (0x80, 0xBF)
        elif 0xF0 <= b <= 0xF4:
            need, cp = 3, b & 0x07
            lo, hi = (0x90, 0xBF) if b == 0xF0 else (0x80, 0x8F) if b == 0xF4 else (0x80, 0xBF)
        else:  # a continuation byte without a lead, C0, C1, F5..FF
            out.append(-1)
            i += 1
            continue
        i += 1
        ok = True
        for k in range(need):  # the second byte has the lead's own range, later ones 80..BF
            if i < n and (lo if k == 0 else 0x80) <= data[i] <= (hi if k == 0 else 0xBF):
                cp = (cp << 6) | (data[i] & 0x3F)
                i += 1
            else:
                ok = False
                break
        out.append(cp if ok else -1)
    return out


def code_point_table(model: IntModel) -> tuple[np.ndarray, np.ndarray]:
    """(code points ascending, their token ids): the table ``NAME_encode_utf8`` searches."""
    pairs = sorted((ord(ch), k) for k, ch in enumerate(model.text.vocab) if k >= 2)
    return np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64)


def text_max_len(model: IntModel) -> int:
    """Characters a text is cut to: the trained length, or the build's maximum steps if smaller."""
    return min(model.text.max_len, model.max_steps)


def encode_utf8(model: IntModel, data: bytes) -> np.ndarray:
    """Token ids (int32 [<= max_len]) of UTF-8 bytes, as ``NAME_encode_utf8``."""
    if model.text is None or not model.text.encodable:
        raise ValueError("the model has no character vocabulary")
    index = {ord(ch): k for k, ch in enumerate(model.text.vocab) if k >= 2}
    cps = decode_utf8(bytes(data))[:text_max_len(model)]
    return np.array([index.get(cp, OOV_ID) for cp in cps], np.int32)
