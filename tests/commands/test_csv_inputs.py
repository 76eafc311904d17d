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

FEATURES = ["ax", "pressure Pa", "gyro z"]
CLASSES = ["walk", "run", "sit", "jump"]
MEAN, STD = [120.0, 101325.0, 3.5], [30.0, 0.01, 0.75]  # pressure: a large offset, a tiny spread


def _model(frame_stack=1):
    rng = np.random.default_rng(31)
    model = random_model(rng, ModelShape(input_size=3 * frame_stack, hidden=8, steps=30, classes=4))
    model.frame_stack = frame_stack
    model.normalization = Normalization(list(MEAN), list(STD), list(FEATURES))
    model.labels = list(CLASSES)
    return model.validate()


def _samples(n=24, seed=5):
    """Raw samples in the model's units, written with 4 decimals (not float32-exact: the pressure column's
    float32 steps are 0.0078 Pa, nearly a std), labels as class names."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 31, n)
    raw = [np.round(rng.normal(MEAN, np.array(STD) * 1.5, (k, 3)), 4) for k in lengths]
    y = rng.integers(0, 4, n)
    return raw, lengths, y


def _write_csv(path, raw, y, columns=FEATURES, names=True, label=True):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sample", *(["label"] if label else []), *columns])
        for n, seq in enumerate(raw):
            for row in seq:
                lab = [CLASSES[y[n]] if names else int(y[n])] if label else []
                w.writerow([f"rec{n}", *lab, *(f"{v:.4f}" for v in row)])
    return path


def _write_npz(path, model, csv_path, y):
    """The same file as training reads and standardizes it (kd2mcu.train.datasets: float64 values,
    normalize), the raw values as float32."""
    from kd2mcu.dataio import read_csv
    from kd2mcu.train.datasets import _pad, normalize

    items, _ = read_csv(csv_path, "--data")
    values, lengths = _pad(items, max(len(i) for i in items), (3,), np.float64)
    norm = {"mean": model.normalization.mean, "std": model.normalization.std}
    x_raw = values.astype(np.float32)
    x_raw[np.arange(values.shape[1])[None, :] >= lengths[:, None]] = np.float32(MEAN)
    np.savez(path, x=normalize(values, lengths, norm), x_raw=x_raw, y=y, lengths=lengths)
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
    _write_npz(tmp / "d.npz", model, tmp / "d.csv", y)
    proc = kd2mcu("sim", tmp / "b", "--inputs", tmp / "d.csv", "--json", "--save", tmp / "csv_out.npz")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["samples"] == 24 and r["mismatches"] == 0
    assert r["raw_inputs"].startswith("float") and r["raw_mismatches"] == 0 and r["raw_input_mismatches"] == 0
    assert kd2mcu("sim", tmp / "b", "--inputs", tmp / "d.npz", "--save", tmp / "npz_out.npz").returncode == 0
    a, b = np.load(tmp / "csv_out.npz"), np.load(tmp / "npz_out.npz")
    assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
    from kd2mcu.commands.build import load_inputs

    (data, q_csv), (_, q_npz) = load_inputs(model, tmp / "d.csv"), load_inputs(model, tmp / "d.npz")
    np.testing.assert_array_equal(q_csv, q_npz)  # the int8 inputs themselves, not only the outputs
    mean, std = np.array(MEAN), np.array(STD)
    float32_first = ((data.x_raw.astype(np.float64) - mean) / std).astype(np.float32)  # parsed as float32 first
    float32_first[np.arange(data.steps)[None, :] >= data.lengths[:, None]] = 0
    assert not np.array_equal(float32_first, data.x)  # the samples tell the two apart
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
    wrong = _write_csv(tmp_path / "cols.csv", raw, y, columns=["pressure Pa", "ax", "gyro z"])
    assert_user_error(kd2mcu("sim", tmp / "b", "--inputs", wrong), "feature columns pressure Pa, ax, gyro z",
                      "ax, pressure Pa, gyro z", "in that order")
    few = _write_csv(tmp_path / "few.csv", [s[:, :2] for s in raw], y, columns=["ax", "pressure Pa"])
    assert_user_error(kd2mcu("sim", tmp / "b", "--inputs", few), "feature columns ax, pressure Pa")
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("sample,label,ax,pressure Pa,gyro z\nr1,swim,1,2,3\n")
    assert_user_error(kd2mcu("sim", tmp / "b", "--inputs", unknown), "'swim' is not a class", "walk, run, sit, jump")
    twice = tmp_path / "twice.csv"
    twice.write_text("sample,label,ax,pressure Pa,gyro z,sample\nr1,walk,1,2,3,r2\n")
    assert_user_error(kd2mcu("sim", tmp / "b", "--inputs", twice), "column 'sample' twice")
    big = tmp_path / "big.csv"
    big.write_text("sample,label,ax,pressure Pa,gyro z\nr1,walk,1e300,2,3\n")
    assert_user_error(kd2mcu("sim", tmp / "b", "--inputs", big), "beyond float32")
    token = random_model(np.random.default_rng(3), ModelShape(input_size=4, hidden=6, steps=10, classes=2, vocab=20))
    write_build(token, tmp_path / "tb")
    assert_user_error(kd2mcu("sim", tmp_path / "tb", "--inputs", wrong), "token ids")
