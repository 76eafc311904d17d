"""--inputs data.csv for sim and emulate, in the layout and raw units kd2mcu train reads: the same bits as
the .npz of the same samples, the raw path checked too, class names mapped, wrong files refused."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from clitools import assert_user_error, kd2mcu
from conftest import require_arm, require_gcc, write_build

from kd2mcu.quant.intmodel import Normalization
from kd2mcu.quant.random_model import ModelShape, random_model

FEATURES = ["ax", "ay", "gyro z"]
CLASSES = ["walk", "run", "sit", "jump"]


def _model(frame_stack=1):
    rng = np.random.default_rng(31)
    model = random_model(rng, ModelShape(input_size=3 * frame_stack, hidden=8, steps=30, classes=4))
    model.frame_stack = frame_stack
    model.normalization = Normalization([120.0, -40.0, 3.5], [30.0, 12.5, 0.75], list(FEATURES))
    model.labels = list(CLASSES)
    return model.validate()


def _samples(n=24, seed=5):
    """Raw samples in the model's units (float32-exact decimal text in the CSV), labels as class names."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 31, n)
    raw = [np.float32(rng.normal([120.0, -40.0, 3.5], [45.0, 20.0, 1.0], (k, 3))) for k in lengths]
    y = rng.integers(0, 4, n)
    return raw, lengths, y


def _write_csv(path, raw, y, columns=FEATURES, names=True, label=True):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sample", *(["label"] if label else []), *columns])
        for n, seq in enumerate(raw):
            for row in seq:
                lab = [CLASSES[y[n]] if names else int(y[n])] if label else []
                w.writerow([f"rec{n}", *lab, *(repr(float(v)) for v in row)])
    return path


def _write_npz(path, model, raw, lengths, y):
    """The same samples standardized as training does (float64 arithmetic, then float32), raw kept."""
    T = int(lengths.max())
    mean, std = np.array(model.normalization.mean), np.array(model.normalization.std)
    x_raw = np.tile(np.float32(mean), (len(raw), T, 1))
    for n, seq in enumerate(raw):
        x_raw[n, :len(seq)] = seq
    x = ((x_raw.astype(np.float64) - mean) / std).astype(np.float32)
    x[np.arange(T)[None, :] >= lengths[:, None]] = 0
    np.savez(path, x=x, x_raw=x_raw, y=y, lengths=lengths)
    return path


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("csv")
    model = _model()
    write_build(model, tmp / "b")
    return tmp, model


def test_sim_reads_csv_as_the_npz_of_the_same_samples(build):
    require_gcc()
    tmp, model = build
    raw, lengths, y = _samples()
    _write_csv(tmp / "d.csv", raw, y)
    _write_npz(tmp / "d.npz", model, raw, lengths, y)
    proc = kd2mcu("sim", tmp / "b", "--inputs", tmp / "d.csv", "--json", "--save", tmp / "csv_out.npz")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["samples"] == 24 and r["mismatches"] == 0
    assert r["raw_inputs"].startswith("float") and r["raw_mismatches"] == 0 and r["raw_input_mismatches"] == 0
    assert kd2mcu("sim", tmp / "b", "--inputs", tmp / "d.npz", "--save", tmp / "npz_out.npz").returncode == 0
    a, b = np.load(tmp / "csv_out.npz"), np.load(tmp / "npz_out.npz")
    assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
    logits = np.load(tmp / "csv_out.npz")["logits"]
    assert r["accuracy"] == pytest.approx(float(np.mean(logits.argmax(1) == y)))  # names mapped to the classes


def test_csv_with_numbers_or_no_labels(build):
    require_gcc()
    tmp, _ = build
    raw, _, y = _samples(8, seed=6)
    r = json.loads(kd2mcu("sim", tmp / "b", "--inputs", _write_csv(tmp / "n.csv", raw, y, names=False),
                          "--json").stdout)
    assert r["samples"] == 8 and r["mismatches"] == 0 and "accuracy" in r
    r = json.loads(kd2mcu("sim", tmp / "b", "--inputs", _write_csv(tmp / "u.csv", raw, y, label=False),
                          "--json").stdout)
    assert r["samples"] == 8 and r["mismatches"] == 0 and "accuracy" not in r


def test_frame_stacked_models_stack_csv_rows(tmp_path):
    require_gcc()
    model = _model(frame_stack=2)
    write_build(model, tmp_path / "b")
    raw, lengths, y = _samples(10, seed=7)
    proc = kd2mcu("sim", tmp_path / "b", "--inputs", _write_csv(tmp_path / "d.csv", raw, y), "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["samples"] == 10 and r["mismatches"] == 0 and r["raw_mismatches"] == 0


def test_emulate_reads_csv(build):
    require_arm()
    tmp, _ = build
    raw, _, y = _samples(6, seed=8)
    proc = kd2mcu("emulate", tmp / "b", "--inputs", _write_csv(tmp / "e.csv", raw, y), "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["samples"] == 6 and r["mismatches"] == 0 and r["raw_mismatches"] == 0


def test_bad_csv_inputs_are_one_line(build, tmp_path):
    tmp, _ = build
    raw, _, y = _samples(4, seed=9)
    wrong = _write_csv(tmp_path / "cols.csv", raw, y, columns=["ay", "ax", "gyro z"])
    assert_user_error(kd2mcu("sim", tmp / "b", "--inputs", wrong), "feature columns ay, ax, gyro z",
                      "ax, ay, gyro z", "in that order")
    few = _write_csv(tmp_path / "few.csv", [s[:, :2] for s in raw], y, columns=["ax", "ay"])
    assert_user_error(kd2mcu("sim", tmp / "b", "--inputs", few), "feature columns ax, ay")
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("sample,label,ax,ay,gyro z\nr1,swim,1,2,3\n")
    assert_user_error(kd2mcu("sim", tmp / "b", "--inputs", unknown), "'swim' is not a class", "walk, run, sit, jump")
    big = tmp_path / "big.csv"
    big.write_text("sample,label,ax,ay,gyro z\nr1,walk,1e300,2,3\n")
    assert_user_error(kd2mcu("sim", tmp / "b", "--inputs", big), "beyond float32")
    token = random_model(np.random.default_rng(3), ModelShape(input_size=4, hidden=6, steps=10, classes=2, vocab=20))
    write_build(token, tmp_path / "tb")
    assert_user_error(kd2mcu("sim", tmp_path / "tb", "--inputs", wrong), "token ids")
