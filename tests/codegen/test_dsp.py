"""The fast weight layout and the two C paths of kd2mcu_int8.h.

The layout's pair words compute the right dot products; the generator picks the fast requantization
only where its bound holds; and the DSP path (SMLAD, SMMULR, SSAT, run in QEMU), the portable path
(KD2MCU_PORTABLE, in QEMU too) and both weight layouts all give the Python reference's bits.
"""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from conftest import require_arm, require_gcc, save_inputs, write_build

from kd2mcu.codegen import render
from kd2mcu.codegen.render import PORTABLE_CFLAGS
from kd2mcu.commands.emulate import emulate
from kd2mcu.quant import reference
from kd2mcu.quant.random_model import ModelShape, random_inputs, random_model
from kd2mcu.targets import firmware, hostsim
from kd2mcu.targets.firmware import board_has_dsp


def _lo16(a):
    return ((a & 0xFFFF) ^ 0x8000) - 0x8000


def _hi16(a):
    return a >> 16


@pytest.mark.parametrize("seed", range(60))
def test_pair_words_compute_the_gate_dot_products(seed):
    """Summing lo*lo + hi*hi over a unit's words and the unpacked vector gives W @ v for every gate."""
    rng = np.random.default_rng(seed)
    n, H = int(rng.integers(1, 40)), int(rng.integers(1, 9))
    w = rng.integers(-128, 128, size=(4, H, n))
    v = rng.integers(-255, 256, size=n)  # h minus its zero point spans -255..255
    words = render.pair_words(w)  # [H, groups, pair, gate]
    pairs = render.unpack_pairs(v).reshape(-1, 2)  # [groups, pair]
    assert words.shape == (H, -(-n // 4), 2, 4) and pairs.shape == (-(-n // 4), 2)
    assert words.min() >= -(2**31) and words.max() < 2**31
    acc = (_lo16(words) * _lo16(pairs)[None, :, :, None] + _hi16(words) * _hi16(pairs)[None, :, :, None]).sum((1, 2))
    np.testing.assert_array_equal(acc.T, w @ v)


@pytest.mark.parametrize("seed", range(30))
def test_compact_words_unpacked_with_sxtb16_compute_the_gate_dot_products(seed):
    """SXTB16 (bytes 0, 2) against the pair (v0, v2) plus SXTB16 ROR 8 (bytes 1, 3) against (v1, v3) is W @ v."""
    rng = np.random.default_rng(100 + seed)
    n, H = int(rng.integers(1, 40)), int(rng.integers(1, 9))
    w = rng.integers(-128, 128, size=(4, H, n))
    v = rng.integers(-255, 256, size=n)
    words = render.compact_words(w)  # [H, groups, gate]
    assert words.min() >= -(2**31) and words.max() < 2**31
    u = words.astype(np.int64) & 0xFFFFFFFF
    byte = [((u >> (8 * k)) & 0xFF ^ 0x80) - 0x80 for k in range(4)]
    pairs = render.unpack_pairs(v).reshape(-1, 2)
    p0, p1 = pairs[:, 0][None, :, None], pairs[:, 1][None, :, None]
    acc = (byte[0] * _lo16(p0) + byte[2] * _hi16(p0) + byte[1] * _lo16(p1) + byte[3] * _hi16(p1)).sum(1)
    np.testing.assert_array_equal(acc.T, w @ v)


def test_unpack_pairs_follows_the_sxtb16_order():
    """(v0, v2) then (v1, v3): the halves SXTB16 and SXTB16 ROR 8 take from a little-endian int8 word."""
    words = render.unpack_pairs(np.array([1, -2, 3, -4, 5]))
    assert [(_lo16(p), _hi16(p)) for p in words] == [(1, 3), (-2, -4), (5, 0), (0, 0)]


def _edge_model():
    """A valid model that only the generic requantization may run: one forget-gate row has an effective
    bias of 2^26 and its input product is shifted left by 4, inside validate()'s bound (|acc| * 2^S < 2^31)
    but outside kd2mcu_rq_fast's (|acc| * 2^(S+1) < 2^31)."""
    model = random_model(np.random.default_rng(4), ModelShape(input_size=12, hidden=16, steps=20))
    layer = model.layers[0]
    gate = layer.directions[0].gates["f"]
    gate.bias[0] = 2**26 + layer.input.zero_point * int(gate.wx[0].astype(np.int64).sum())
    gate.wx_scale = 12.0 * 2.0**-12 / layer.input.scale  # s_x * s_W / 2^-12 = 12 = 0.75 * 2^4
    model.derive_multipliers().validate()
    assert gate.input_mult[1] == 4
    return model


def test_fast_requantization_only_where_its_bound_holds():
    assert render.fits_fast_rq(2**29, 0) and not render.fits_fast_rq(2**30, 0)
    assert render.fits_fast_rq(2**27, 2) and not render.fits_fast_rq(2**28, 2)
    for regime in ("small", "large"):  # realistic scales, and 'large' ones with left shifts, take the fast path
        model = random_model(np.random.default_rng(3), ModelShape(input_size=32, hidden=64, steps=10, regime=regime))
        c = render.render(model, "m")["m.c"]
        assert "kd2mcu_gate_pre_fast(" in c and "kd2mcu_gate_pre(" not in c
    c = render.render(_edge_model(), "m")["m.c"]
    assert "kd2mcu_gate_pre(" in c and "kd2mcu_gate_pre_fast(" not in c


def _limit_model():
    """A valid model at the edge of kd2mcu_rq_fast's bound, which it still takes: one forget-gate row's
    accumulator reaches 2^30 - 1, one input-gate row's 2^27 - 1 with a left shift of 3."""
    model = random_model(np.random.default_rng(6), ModelShape(input_size=12, hidden=16, steps=20))
    layer = model.layers[0]
    gates = layer.directions[0].gates
    gates["i"].wx_scale = 6.0 * 2.0**-12 / layer.input.scale  # s_x * s_W / 2^-12 = 6 = 0.75 * 2^3: left shift 3
    for name, top, row in (("f", 2**30 - 1, 0), ("f", -(2**30 - 1), 1), ("i", 2**27 - 1, 0)):
        g = gates[name]
        w = g.wx[row].astype(np.int64)
        eff = top - int(np.sign(top)) * 128 * int(np.abs(w).sum())  # |eff| + 128 * sum|w| = |top|
        g.bias[row] = eff + layer.input.zero_point * int(w.sum())
    model.derive_multipliers().validate()
    assert gates["i"].input_mult[1] == 3 and gates["f"].input_mult[1] <= 0
    return model


MODELS_AT_THE_EDGE = {"generic": _edge_model, "limit": _limit_model}


def test_the_edge_models_take_the_intended_requantization():
    assert "kd2mcu_gate_pre(" in render.render(_edge_model(), "m")["m.c"]
    c = render.render(_limit_model(), "m")["m.c"]
    assert "kd2mcu_gate_pre_fast(" in c and "kd2mcu_gate_pre(" not in c


@pytest.mark.parametrize("kind", MODELS_AT_THE_EDGE)
def test_edge_requantization_is_bit_exact_on_the_host(kind, tmp_path):
    require_gcc()
    model = MODELS_AT_THE_EDGE[kind]()
    rng = np.random.default_rng(8)
    x, lengths = random_inputs(rng, model, 64, 20)
    ref = reference.run(model, x, lengths)
    for layout in ("fast", "compact"):
        build = write_build(model, tmp_path / layout, layout=layout)
        exe = hostsim.compile_harness(build / "src", "kd2mcu_model", opt="-O1", sanitize=True)
        sim = hostsim.run_harness(exe, model, x, lengths)
        assert hostsim.compare(ref, sim)[0] == 0
        assert "runtime error" not in sim.stderr and "Sanitizer" not in sim.stderr, sim.stderr


def test_layouts_hold_the_same_weights_in_half_or_double_the_bytes():
    model = random_model(np.random.default_rng(5), ModelShape(input_size=12, hidden=64, steps=10))
    fast = render.render(model, "m", "fast")["m.c"]
    compact = render.render(model, "m", "compact")["m.c"]
    assert "static const int32_t L0F_W[64 * 156]" in fast  # 4 biases + 8 * (3 + 16) pair words per unit
    assert "static const int32_t L0F_W[64 * 80]" in compact  # 4 biases + 4 * (3 + 16) int8 words per unit
    assert "#define KD2MCU_SMALL_TABLES" in compact and "KD2MCU_SMALL_TABLES" not in fast
    with pytest.raises(Exception, match="unknown --layout 'wide'"):
        render.render(model, "m", "wide")


# Models for the two paths x two layouts in QEMU: input and hidden widths with every remainder mod 4,
# bidirectional, stacked, tokens, and 'large' models (left shifts, saturating gates).
PATH_MODELS = [
    ModelShape(input_size=6, hidden=32, steps=30, classes=4),
    ModelShape(input_size=3, hidden=9, steps=25, classes=3, bidirectional=True),
    ModelShape(input_size=5, hidden=10, steps=20, classes=6, layers=2, regime="large"),
    ModelShape(input_size=7, hidden=15, steps=20, classes=5, vocab=40),
    ModelShape(input_size=1, hidden=1, steps=12, classes=2, regime="large"),
    ModelShape(input_size=12, hidden=20, steps=15, classes=4, reverse=True),
]


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["fast", "compact"])
@pytest.mark.parametrize("index", range(len(PATH_MODELS)))
def test_dsp_and_portable_paths_match_the_reference_in_qemu(index, layout, tmp_path):
    require_arm()
    shape = PATH_MODELS[index]
    rng = np.random.default_rng(700 + index)
    model = random_model(rng, shape)
    build = write_build(model, tmp_path / "b", layout=layout)
    x, lengths = random_inputs(rng, model, 24, shape.steps)
    save_inputs(model, x, lengths, tmp_path / "d.npz")
    runs = [("-O2", False), ("-O2", True)] + ([("-O0", False)] if index == 0 else [])  # -O0: intrinsics, no asm
    for opt, portable in runs:
        result = emulate(build, tmp_path / "d.npz", opt=opt, portable=portable)
        assert result["samples"] == 24
        assert result["mismatches"] == 0, f"{opt} portable={portable}: {result['first_mismatch']}"
        assert result["kernel_path"] == ("portable C" if portable else "DSP (SMLAD)")


@pytest.mark.slow
@pytest.mark.parametrize("kind", MODELS_AT_THE_EDGE)
def test_edge_requantization_is_bit_exact_in_qemu(kind, tmp_path):
    require_arm()
    model = MODELS_AT_THE_EDGE[kind]()
    x, lengths = random_inputs(np.random.default_rng(9), model, 16, 20)
    save_inputs(model, x, lengths, tmp_path / "d.npz")
    for layout in ("fast", "compact"):
        build = write_build(model, tmp_path / layout, layout=layout)
        for portable in (False, True):
            result = emulate(build, tmp_path / "d.npz", portable=portable)
            assert result["mismatches"] == 0, f"{layout} portable={portable}: {result['first_mismatch']}"


def _disassembly(project, extra_cflags):
    elf = firmware.make(project, emulate=True, opt="-O2", extra_cflags=extra_cflags)
    text = subprocess.run(["arm-none-eabi-objdump", "-d", str(elf)], capture_output=True, text=True, check=True).stdout
    subprocess.run(["make", "-s", "-C", str(project), "clean"], check=True)
    return text


def test_the_dsp_path_is_the_one_compiled_for_cortex_m4(tmp_path):
    """On the Cortex-M4 the model code uses SMLAD and SMMULR; KD2MCU_PORTABLE compiles without them."""
    require_arm()
    assert board_has_dsp(firmware.load_board("stm32f405"))
    model = random_model(np.random.default_rng(6), ModelShape(input_size=6, hidden=16, steps=10))
    project = write_build(model, tmp_path / "b") / "firmware"
    dsp = _disassembly(project, "")
    portable = _disassembly(project, PORTABLE_CFLAGS)
    assert "\tsmlad\t" in dsp and "\tsmmulr\t" in dsp and "\tssat\t" in dsp
    assert "\tsmlad\t" not in portable and "\tsmmulr\t" not in portable


def test_c_activations_and_requantization_match_python_for_every_input(tmp_path):
    """kd2mcu_int8.h's sigmoid16 / tanh16 on all int16 inputs and shifts -8..12 (tanh_shift = P + 12), with
    both table forms, and kd2mcu_rq_fast against kd2mcu_rq and qmath.rq up to the edge of its bound
    |acc| * 2^(max(S, 0) + 1) < 2^31 (portable path, UBSan)."""
    require_gcc()
    from kd2mcu.quant import qmath

    src = tmp_path / "src"
    src.mkdir()
    (src / render.KERNEL_HEADER).write_text(render.render(
        random_model(np.random.default_rng(1), ModelShape(input_size=2, hidden=2, steps=2)), "m")[render.KERNEL_HEADER])
    rng = np.random.default_rng(12)
    mults = [qmath.quantize_multiplier(float(m)) for m in np.exp(rng.uniform(np.log(1e-7), np.log(200.0), 80))]
    mults += [(1 << 30, -14), (1 << 30, 0), (2**31 - 1, 0), (2**31 - 1, -31), (1 << 30, 2), (2**31 - 1, 7)]
    cases = []
    for m, sh in mults:
        top = (2**30 - 1) >> max(sh, 0)  # the largest |acc| the generator lets through for this shift
        accs = np.concatenate([np.linspace(-top, top, 301).astype(np.int64), [top, top - 1, -top, 1 - top, 0, 1, -1]])
        cases += [(m, sh, int(a)) for a in accs]
    (tmp_path / "cases.txt").write_text("".join(f"{m} {sh} {a}\n" for m, sh, a in cases))
    driver = tmp_path / "t.c"
    driver.write_text("""
#include <stdio.h>
#include "kd2mcu_int8.h"
int main(int argc, char **argv) {
    FILE *cases = fopen(argv[1], "r");
    long m, s, a;
    int32_t v, shift;
    (void)argc;
    for (shift = -8; shift <= 12; ++shift)
        for (v = -32768; v <= 32767; ++v)
            printf("%d %d\\n", kd2mcu_sigmoid16(v, shift), kd2mcu_tanh16(v, shift));
    while (fscanf(cases, "%ld %ld %ld", &m, &s, &a) == 3)
        printf("%d %d\\n", kd2mcu_rq_fast((int32_t)a, (int32_t)m, (int32_t)s), kd2mcu_rq((int32_t)a, (int32_t)m, (int32_t)s));
    fclose(cases);
    return 0;
}
""")
    x = np.arange(-32768, 32768)
    shifts = range(-8, 13)
    n = len(shifts) * len(x)
    want = np.concatenate([np.stack([qmath.sigmoid16(x, sh), qmath.tanh16(x, sh)], 1) for sh in shifts])
    want_rq = np.array([int(qmath.rq(np.int64(a), m, sh)) for m, sh, a in cases])
    for tables in ([], ["-DKD2MCU_SMALL_TABLES"]):  # the fast layout's (base, slope) tables, the compact one's LUT
        exe = tmp_path / "t"
        subprocess.run(["gcc", "-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", "-pedantic", "-fsanitize=undefined",
                        "-fno-sanitize-recover=all", *tables, "-I", str(src), str(driver), "-o", str(exe)], check=True)
        out = subprocess.run([str(exe), str(tmp_path / "cases.txt")], capture_output=True, text=True,
                             check=True).stdout
        got = np.array(out.split(), np.int64).reshape(-1, 2)
        np.testing.assert_array_equal(got[:n], want)
        rq_rows = got[n:]
        assert len(rq_rows) == len(cases)
        np.testing.assert_array_equal(rq_rows[:, 0], rq_rows[:, 1])
        np.testing.assert_array_equal(rq_rows[:, 0], want_rq)


def test_cortex_m3_runs_the_portable_path_bit_exactly(tmp_path):
    """The stm32f205 (Cortex-M3, QEMU netduino2) has no DSP extension: the same sources compile to the
    portable path there, without SMLAD, and give the reference's bits."""
    require_arm()
    board = firmware.load_board("stm32f205")
    assert not board_has_dsp(board)
    rng = np.random.default_rng(13)
    model = random_model(rng, ModelShape(input_size=5, hidden=12, steps=20, classes=3, bidirectional=True))
    from kd2mcu.commands.build import write_build

    write_build(model, {"name": "kd2mcu_model"}, tmp_path / "b", True, "kd2mcu_model", board)
    x, lengths = random_inputs(rng, model, 16, 20)
    save_inputs(model, x, lengths, tmp_path / "d.npz")
    result = emulate(tmp_path / "b", tmp_path / "d.npz")
    assert result["machine"] == "netduino2" and result["kernel_path"] == "portable C"
    assert result["mismatches"] == 0, result["first_mismatch"]
    assert "\tsmlad\t" not in _disassembly(tmp_path / "b" / "firmware", "")


def test_int32_min_words_are_valid_c():
    """A compact word whose top byte is -128 and the rest 0 is INT32_MIN: written so every C compiler reads it."""
    words = render.compact_words(np.array([0, 0, 0, -128]).reshape(1, 1, 4).repeat(4, axis=0))
    assert words.min() == -(2**31)
    assert render.c_array([-(2**31), 7]) == "    (-2147483647 - 1), 7"


def test_report_follows_the_path_emulate_ran(tmp_path):
    """After `emulate --portable` the report's path, flags and instruction count are the portable build's."""
    require_arm()
    from clitools import kd2mcu

    model = random_model(np.random.default_rng(14), ModelShape(input_size=6, hidden=16, steps=20))
    write_build(model, tmp_path / "b")
    for portable in (True, False):
        emulated = json.loads(kd2mcu("emulate", tmp_path / "b", "--json", *(["--portable"] if portable else [])).stdout)
        report = json.loads(kd2mcu("report", tmp_path / "b", "--json").stdout)
        assert report["kernel_path"] == emulated["kernel_path"] == ("portable C" if portable else "DSP (SMLAD)")
        assert (PORTABLE_CFLAGS in report["compiler_flags"]) == portable
        assert report["instructions_per_inference"] == emulated["instructions_per_inference"]


CORES = [["-mcpu=cortex-m0plus", "-mthumb"], ["-mcpu=cortex-m3", "-mthumb"], ["-mcpu=cortex-m4", "-mthumb"],
         ["-mcpu=cortex-m7", "-mthumb"], ["-mcpu=cortex-m33", "-mthumb"], ["-mcpu=cortex-m33+nodsp", "-mthumb"],
         ["-march=armv6", "-marm"]]


@pytest.mark.parametrize("layout", ["fast", "compact"])
def test_the_model_compiles_warning_free_for_every_arm_core(layout, tmp_path):
    """M0+ to M33, with and without DSP, and an ARM-state core (where the Thumb-2 assembly must stay out),
    at every optimization level and with a frame pointer."""
    require_arm()
    model = random_model(np.random.default_rng(15), ModelShape(input_size=7, hidden=13, steps=10, bidirectional=True))
    src = write_build(model, tmp_path / "b", layout=layout) / "src"
    for core in CORES:
        for opt in (["-O0"], ["-O2"], ["-Os"], ["-O2", "-fno-omit-frame-pointer"]):
            proc = subprocess.run(["arm-none-eabi-gcc", *core, *opt, "-std=c99", "-Wall", "-Wextra", "-Werror",
                                   "-pedantic", "-c", str(src / "kd2mcu_model.c"), "-o", str(tmp_path / "m.o")],
                                  capture_output=True, text=True)
            assert proc.returncode == 0, f"{core} {opt}: {proc.stderr}"
