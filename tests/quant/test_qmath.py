"""The spec's integer helpers against exact rational arithmetic and against the functions they stand for."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from kd2mcu.quant import qmath
from kd2mcu.quant.qmath import SIGMOID_LUT, quantize_float, quantize_multiplier, rq, sigmoid16, tanh16


def _rq_exact(acc: int, M: int, S: int) -> int:
    """The spec's rq with Python's unbounded ints and explicit floor/round rules."""
    v = acc * 2 ** max(S, 0)
    hi = math.floor(Fraction(v * M + 2**30, 2**31))
    n = max(-S, 0)
    if n == 0:
        return hi
    q = Fraction(hi, 2**n)  # round half away from zero
    r = math.floor(abs(q) + Fraction(1, 2))
    return r if q >= 0 else -r


def test_quantize_multiplier_is_within_half_an_ulp():
    rng = np.random.default_rng(1)
    for m in np.exp(rng.uniform(-21, 8, size=2000)):
        M, S = quantize_multiplier(float(m))
        assert 2**30 <= M < 2**31
        approx = Fraction(M) * Fraction(2) ** (S - 31)
        assert abs(approx - Fraction(float(m))) <= Fraction(2) ** (S - 32)


def test_quantize_multiplier_edges():
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(1.0) == (2**30, 1)
    assert quantize_multiplier(0.5) == (2**30, 0)
    assert quantize_multiplier(2.0**-40) == (0, 0)  # below the representable range
    # frac * 2^31 rounds up to 2^31: renormalized
    assert quantize_multiplier(1.0 - 2.0**-40) == (2**30, 1)


def test_rq_matches_exact_definition():
    rng = np.random.default_rng(2)
    for _ in range(300):
        M, S = quantize_multiplier(float(np.exp(rng.uniform(-20, 3))))
        limit = (2**31 - 1) >> max(S, 0)
        acc = rng.integers(-limit, limit, size=50)
        got = rq(acc, M, S)
        want = [_rq_exact(int(a), M, S) for a in acc]
        assert got.tolist() == want


def test_rq_rounds_halves_away_from_zero():
    # multiplier 1/8: ties away from zero; and the double rounding of TFLite: 3/8 first rounds to
    # 2/4 (half up), then 2/4 rounds away to 1, while -3/8 goes to -1/4 and then 0.
    M, S = 2**30, -2
    assert rq(np.array([4, -4, 12, -12, 3, -3]), M, S).tolist() == [1, -1, 2, -2, 1, 0]


def test_lut_is_the_sigmoid_table():
    k = np.arange(256)
    assert SIGMOID_LUT[0] == 32768 and SIGMOID_LUT[-1] == 65535
    assert np.all(np.diff(SIGMOID_LUT) >= 0)
    assert np.max(np.abs(SIGMOID_LUT - np.minimum(65536 / (1 + np.exp(-k / 24)), 65535))) < 1.5  # TFLite table, not exactly rounded


def test_activations_approximate_sigmoid_and_tanh():
    pre = np.arange(-32768, 32768)
    real = pre / 4096.0
    s = sigmoid16(pre) / 32768.0
    t = tanh16(pre) / 32768.0
    assert np.max(np.abs(s - 1 / (1 + np.exp(-real)))) < 2e-4
    assert np.max(np.abs(t - np.tanh(real))) < 4e-4
    assert np.all(np.diff(sigmoid16(pre)) >= 0) and np.all(np.diff(tanh16(pre)) >= 0)
    assert sigmoid16(pre).min() >= 0 and sigmoid16(pre).max() <= 32767
    assert tanh16(pre).min() >= -32768 and tanh16(pre).max() <= 32767


def test_cell_tanh_reads_the_cell_scale():
    for P in range(-20, 1):
        c = np.arange(-32768, 32768, 7)
        t = tanh16(c, P + 12) / 32768.0
        assert np.max(np.abs(t - np.tanh(c * 2.0**P))) < 1e-3, P


def test_quantize_float_rounds_half_away_and_saturates():
    q = quantize_float(np.array([0.5, -0.5, 1.49, 2.5, -2.5, 1e9, -1e9, np.nan, np.inf, -np.inf], np.float32), 1.0, 0)
    assert q.tolist() == [1, -1, 1, 3, -3, 127, -128, 0, 127, -128]
    # the float32 just below 0.5 must not round up (the naive (int)(v + 0.5f) does)
    assert quantize_float(np.array([np.nextafter(np.float32(0.5), np.float32(0))]), 1.0, 0).tolist() == [0]
    assert quantize_float(np.array([0.0], np.float32), 1.0, -7).tolist() == [-7]


def test_activation_tables_give_the_spec_for_every_input():
    """The generated C's signed (base, slope) tables reproduce sigmoid16 / tanh16 on all int16 inputs and
    shifts, with no absolute value and no sign fix-up, and saturate beyond the table's range."""
    sig, tanh = qmath.activation_tables()
    assert sig.shape == tanh.shape == (512, 2)
    x_in = np.arange(-32768, 32768)
    for shift in range(-8, 13):  # tanh_shift = P + 12 over the cell powers, and the gates' 0
        x = qmath._lut_input(x_in, shift)
        e = np.clip(x >> 9, -256, 255) + 256
        np.testing.assert_array_equal((sig[e, 0] + (x & 0x1FF) * sig[e, 1]) >> 10, qmath.sigmoid16(x_in, shift))
        e = np.clip(x >> 8, -256, 255) + 256
        np.testing.assert_array_equal((tanh[e, 0] + (x & 0xFF) * tanh[e, 1]) >> 8, qmath.tanh16(x_in, shift))
    assert sig[0, 1] == sig[511, 1] == tanh[0, 1] == tanh[511, 1] == 0  # the saturated ends
    assert (sig[0, 0] >> 10, sig[511, 0] >> 10, tanh[0, 0] >> 8, tanh[511, 0] >> 8) == (1, 32767, -32767, 32767)
    assert np.abs(sig[:, 0]).max() < 2**26 and np.abs(tanh[:, 0]).max() < 2**24