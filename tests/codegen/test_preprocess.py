"""The generated C's own pre-processing and answers, bit-exact with kd2mcu.quant.preprocess: raw float
samples, raw int16 samples (every int16 value), UTF-8 text (valid, and a sanitized fuzz run of invalid
bytes), NAME_predict and NAME_CLASS_NAMES."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
from conftest import require_gcc

from kd2mcu.codegen import render
from kd2mcu.quant import preprocess, reference
from kd2mcu.quant.intmodel import Normalization, TextEncoding
from kd2mcu.quant.random_model import ModelShape, random_model
from kd2mcu.targets import hostsim


def _sensor_model(seed=0, frame_stack=2, regime="small"):
    rng = np.random.default_rng(seed)
    F = 3
    model = random_model(rng, ModelShape(input_size=F * frame_stack, hidden=8, steps=24, classes=4, regime=regime))
    model.frame_stack = frame_stack
    model.normalization = Normalization([float(v) for v in rng.normal(0, 300, F)],
                                        [float(v) for v in rng.uniform(0.05, 80, F)], ["ax", 'a"y*/', "温度"])
    model.labels = ["walk", "run??/", 'q"uote\\', "中文 */"]
    return model.validate()


def _compile(model, tmp_path, name="pre"):
    require_gcc()
    render.write_sources(model, name, tmp_path / "src")
    return hostsim.compile_harness(tmp_path / "src", name, sanitize=True)


@pytest.fixture(scope="module")
def sensor(tmp_path_factory):
    model = _sensor_model()
    return model, _compile(model, tmp_path_factory.mktemp("sensor"))


def test_raw_float_samples_quantize_and_classify_bit_exactly(sensor):
    model, exe = sensor
    rng = np.random.default_rng(1)
    mean, std = (np.tile(v, model.frame_stack) for v in preprocess._stats(model))
    x = (rng.normal(0, 2.0, (60, 24, model.input_size)) * std + mean).astype(np.float32)
    x[0, 0, :4] = [np.nan, np.inf, -np.inf, 3e38]  # NaN reads as the mean; the rest saturate
    x[1] = np.float32(mean)  # exactly the mean: the zero point
    lengths = rng.integers(1, 25, 60)
    sim = hostsim.run_harness(exe, model, x, lengths, raw="float")
    q = preprocess.quantize_raw(model, x)
    assert q[0, 0, 0] == model.input.zero_point and q[0, 0, 1] == 127 and q[0, 0, 2] == -128 and q[0, 0, 3] == 127
    assert np.all(q[1] == model.input.zero_point)
    for n in range(60):
        np.testing.assert_array_equal(sim.x_q[n], q[n, :lengths[n]])
    ref = reference.run(model, q, lengths)
    np.testing.assert_array_equal(sim.logits, ref["logits"])
    np.testing.assert_array_equal(sim.c, ref["c"])


def test_the_float_path_is_the_training_normalization(sensor):
    """(x - mean) / std quantized as in training, to within the float32 rounding of the folded constant."""
    model, _ = sensor
    rng = np.random.default_rng(2)
    mean, std = (np.tile(v, model.frame_stack) for v in preprocess._stats(model))
    x = (rng.normal(0, 1.5, (200, model.input_size)) * std + mean).astype(np.float32)
    normalized = ((x.astype(np.float64) - mean) / std).astype(np.float32)
    agree = preprocess.quantize_raw(model, x) == reference.quantize_input(model, normalized)
    assert agree.mean() > 0.999, agree.mean()


def test_every_int16_value_quantizes_bit_exactly(sensor):
    model, exe = sensor
    every = np.arange(-32768, 32768, dtype=np.int64)
    x = np.repeat(every[:, None], model.input_size, 1).astype(np.int16).reshape(-1, 16, model.input_size)
    sim = hostsim.run_harness(exe, model, x, None, raw="i16")
    q = preprocess.quantize_raw_i16(model, x)
    np.testing.assert_array_equal(np.stack(sim.x_q), q)
    np.testing.assert_array_equal(sim.logits, reference.run(model, q)["logits"])
    # the integer path rounds like the float path but for values within 2^-S of a half
    differs = q != preprocess.quantize_raw(model, x.astype(np.float32))
    assert differs.mean() < 1e-3, differs.mean()


def test_int16_constants_never_overflow_int32():
    model = _sensor_model()
    for mean, std in [(0.0, 1.0), (30000.0, 0.5), (-1e9, 1e-3), (0.0, 1e-9), (5.0, 1e9)]:
        model.normalization = Normalization([mean] * 3, [std] * 3, ["a", "b", "c"])
        M, B, S = preprocess.raw_i16_constants(model)
        assert np.all(np.abs(M.astype(np.int64)) * 32768 + np.abs(B.astype(np.int64)) < 2**31)
        assert np.all((S >= 0) & (S <= 30))


def test_predict_is_numpys_argmax_with_its_margin(tmp_path):
    model = _sensor_model(seed=5, frame_stack=1)
    h = model.head  # class 2 a copy of class 1: they tie on every input, and argmax takes the first
    h.weight[2], h.bias[2], h.weight_scale[2] = h.weight[1], h.bias[1], h.weight_scale[1]
    model.derive_multipliers().validate()
    exe = _compile(model, tmp_path)
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (300, 10, model.input_size)).astype(np.int8)
    sim = hostsim.run_harness(exe, model, x)
    assert np.any([len(set(row)) < len(row) for row in sim.logits.tolist()]), "no tie was exercised"
    np.testing.assert_array_equal(sim.predicted, sim.logits.argmax(1))
    top2 = np.sort(sim.logits.astype(np.int32), 1)[:, -2:]
    np.testing.assert_array_equal(sim.margin, top2[:, 1] - top2[:, 0])


def test_class_names_reach_c_as_the_same_bytes(sensor, tmp_path):
    model, _ = sensor
    render.write_sources(model, "pre", tmp_path / "src")
    main = tmp_path / "names.c"
    main.write_text('#include <stdio.h>\n#include "pre.h"\nint main(void) {\n    int k;\n'
                    '    for (k = 0; k < PRE_NUM_CLASSES; ++k) { fputs(PRE_CLASS_NAMES[k], stdout); putchar(0); }\n'
                    '    return 0;\n}\n')
    exe = tmp_path / "names"
    subprocess.run(["gcc", *hostsim.WARNINGS, "-I", str(tmp_path / "src"), str(main), str(tmp_path / "src" / "pre.c"),
                    "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, check=True).stdout
    assert out.split(b"\0")[:-1] == [s.encode("utf-8") for s in model.labels]
    header = (tmp_path / "src" / "pre.h").read_text()
    assert "*/\n" not in header.split("Classes")[1].split("extern")[0][:-4]  # names in comments are made safe


# ------------------------------------------------------------------------------------------------- text
VOCAB = ["<pad>", "<oov>", "好", "的", "a", "b", " ", "é", "😀", "\x00", "\x7f", "\u07ff", "\uffff", "\U0010ffff"]


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    rng = np.random.default_rng(4)
    model = random_model(rng, ModelShape(input_size=8, hidden=8, steps=32, classes=3, vocab=len(VOCAB)))
    model.text = TextEncoding(list(VOCAB), 20)
    model.validate()
    return model, _compile(model, tmp_path_factory.mktemp("text"), "txt")


def test_utf8_of_valid_text_is_the_training_encoding(text):
    from kd2mcu.train.datasets import encode_text

    model, exe = text
    rng = np.random.default_rng(5)
    alphabet = VOCAB[2:] + ["x", "中", "\U0001f600", "\ud7ff", "\ue000"]
    texts = ["".join(rng.choice(alphabet, rng.integers(1, 40))) for _ in range(300)]
    ids, lengths = encode_text(texts, VOCAB, 20)
    sim = hostsim.run_utf8(exe, model, [t.encode("utf-8") for t in texts])
    for n, t in enumerate(texts):
        mine = preprocess.encode_utf8(model, t.encode("utf-8"))
        np.testing.assert_array_equal(mine, ids[n, :lengths[n]])
        np.testing.assert_array_equal(sim.tokens[n], mine)
    np.testing.assert_array_equal(sim.logits, reference.run(model, ids.astype(np.int32), lengths)["logits"])


def test_decoding_replaces_errors_as_python_does():
    rng = np.random.default_rng(6)
    for _ in range(3000):
        data = bytes(rng.integers(0, 256, rng.integers(1, 12)).astype(np.uint8))
        expected = [-1 if ch == "\ufffd" else ord(ch) for ch in data.decode("utf-8", errors="replace")]
        if "\ufffd".encode() not in data:
            assert preprocess.decode_utf8(data) == expected, data


def test_invalid_utf8_fuzz_under_sanitizers(text):
    """100,000 byte strings, most of them invalid UTF-8, through the sanitized C: same ids as Python."""
    model, exe = text
    rng = np.random.default_rng(7)
    valid = "好的ab é😀\U0010ffff".encode("utf-8")
    special = [b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe0\x80", b"\xf0\x8f", b"\x80", b"\xff", b"\xc2",
               b"\xe4\xbd", b"\xf0\x9f\x98"]
    texts = []
    for k in range(100_000):
        kind = k % 3
        if kind == 0:
            data = bytes(rng.integers(0, 256, rng.integers(1, 30)).astype(np.uint8))
        elif kind == 1:
            data = bytearray(valid * int(rng.integers(1, 4)))
            for _ in range(int(rng.integers(1, 4))):
                data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
            data = bytes(data[:int(rng.integers(1, len(data) + 1))])
        else:
            data = b"".join(rng.choice(special + [valid[:3], b"a"], rng.integers(1, 12)))
        texts.append(data)
    sim = hostsim.run_utf8(exe, model, texts)
    assert "runtime error" not in sim.stderr and "Sanitizer" not in sim.stderr
    assert np.all(sim.rc == 0)
    for n, data in enumerate(texts):
        np.testing.assert_array_equal(sim.tokens[n], preprocess.encode_utf8(model, data), err_msg=repr(data))
    assert max(len(t) for t in sim.tokens) == 20  # cut to the trained length
