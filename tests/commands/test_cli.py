"""The command line: build from an integer model, sim with --json/--save, and clear refusals."""
from __future__ import annotations

import json

import numpy as np
import pytest
from clitools import assert_user_error, kd2mcu, snapshot
from conftest import require_gcc, write_build

from kd2mcu.quant.intmodel import IntModel
from kd2mcu.quant.random_model import ModelShape, random_model


@pytest.fixture(scope="module")
def feature_build(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("features")
    rng = np.random.default_rng(21)
    model = random_model(rng, ModelShape(input_size=5, hidden=12, steps=40, classes=3, bidirectional=True))
    write_build(model, tmp / "build")
    x = rng.normal(0, 1, size=(64, 40, 5)).astype(np.float32)
    lengths = rng.integers(1, 41, size=64)
    y = rng.integers(0, 3, size=64)
    np.savez(tmp / "data.npz", x=x, y=y, lengths=lengths)
    return tmp, model


def test_every_command_has_help():
    for args in ([], ["build"], ["sim"], ["emulate"], ["flash"], ["report"]):
        proc = kd2mcu(*args, "--help")
        assert proc.returncode == 0 and "Usage:" in proc.stdout, args


def test_sim_json_and_save(feature_build, tmp_path):
    require_gcc()
    tmp, model = feature_build
    proc = kd2mcu("sim", tmp / "build", "--inputs", tmp / "data.npz", "--json", "--save", tmp_path / "out.npz")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["samples"] == 64 and result["mismatches"] == 0 and result["first_mismatch"] is None
    saved = np.load(tmp_path / "out.npz")
    assert saved["q"].dtype == np.int8 and saved["q"].shape == (64, 3)
    assert saved["logits"].dtype == np.float32
    np.testing.assert_allclose(saved["logits"],
                               (saved["q"].astype(np.float32) - model.head.output.zero_point) * model.head.output.scale,
                               rtol=1e-6)
    y = np.load(tmp / "data.npz")["y"]
    assert result["accuracy"] == pytest.approx(float(np.mean(saved["q"].argmax(1) == y)))
    text = kd2mcu("sim", tmp / "build", "--inputs", tmp / "data.npz")
    assert text.returncode == 0 and "64 samples, 0 mismatching" in text.stdout


def test_sim_reports_the_first_mismatch(feature_build, tmp_path):
    """A C source that differs from model.json by one weight must fail, naming sample, tensor, index."""
    require_gcc()
    tmp, _ = feature_build
    import shutil

    shutil.copytree(tmp / "build", tmp_path / "build")
    c_file = tmp_path / "build" / "src" / "kd2mcu_model.c"
    text = c_file.read_text()
    start = text.index("L0F_W[")
    start = text.index("{\n", start) + 6
    first = text[start:text.index(",", start)]  # the first unit's forget-gate bias
    c_file.write_text(text[:start] + str(int(first) + 300000) + text[start + len(first):])
    proc = kd2mcu("sim", tmp_path / "build", "--inputs", tmp / "data.npz")
    assert proc.returncode == 1
    assert "first mismatch: sample" in proc.stdout and "reference" in proc.stdout and "C " in proc.stdout


def test_build_from_model_json_and_force(feature_build, tmp_path):
    tmp, model = feature_build
    out = tmp_path / "again"
    proc = kd2mcu("build", tmp / "build" / "model.json", "--out", out, "--name", "har")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (out / "src").iterdir()) == ["har.c", "har.h", "kd2mcu_int8.h"]
    assert IntModel.load(out / "model.json").to_json() == model.to_json()
    before = snapshot(out)
    assert_user_error(kd2mcu("build", tmp / "build" / "model.json", "--out", out), "not empty", "--force")
    assert snapshot(out) == before
    proc = kd2mcu("build", tmp / "build" / "model.json", "--out", out, "--force")
    assert proc.returncode == 0 and (out / "src" / "kd2mcu_model.c").is_file()
    assert not (out / "src" / "har.c").exists()  # replaced whole, not merged
    assert not list(tmp_path.glob(".again.*"))  # no staging leftovers


def test_sim_refuses_bad_inputs(feature_build, tmp_path):
    tmp, _ = feature_build
    build = tmp / "build"
    before = snapshot(build)
    cases = {
        "missing.npz": (None, ["no such file"]),
        "nox.npz": (dict(y=np.zeros(3, int)), ["no array 'x'"]),
        "nan.npz": (dict(x=np.full((2, 5, 5), np.nan, np.float32)), ["NaN"]),
        "features.npz": (dict(x=np.zeros((2, 5, 4), np.float32)), ["4 features", "expects 5"]),
        "long.npz": (dict(x=np.zeros((2, 41, 5), np.float32)), ["41 steps", "--max-steps"]),
        "labels.npz": (dict(x=np.zeros((2, 5, 5), np.float32), y=np.zeros(3, int)), ["2 samples", "y has 3"]),
        "float_labels.npz": (dict(x=np.zeros((2, 5, 5), np.float32), y=np.zeros(2)), ["integer labels"]),
        "lengths.npz": (dict(x=np.zeros((2, 5, 5), np.float32), lengths=np.array([0, 9])), ["lengths"]),
        "empty.npz": (dict(x=np.zeros((0, 5, 5), np.float32)), ["empty"]),
        "tokens.npz": (dict(x=np.zeros((2, 5), np.int64)), ["token ids"]),
    }
    for fname, (arrays, words) in cases.items():
        if arrays is not None:
            np.savez(tmp_path / fname, **arrays)
        assert_user_error(kd2mcu("sim", build, "--inputs", tmp_path / fname), *words)
    (tmp_path / "garbage.npz").write_bytes(b"not a zip file at all")
    assert_user_error(kd2mcu("sim", build, "--inputs", tmp_path / "garbage.npz"), "not a readable")
    assert_user_error(kd2mcu("sim", tmp_path, "--inputs", tmp / "data.npz"), "not a kd2mcu build folder")
    assert_user_error(kd2mcu("sim", build, "--inputs", tmp / "data.npz", "--opt", "-O9"), "--opt")
    assert snapshot(build) == before


def test_token_model_end_to_end(tmp_path):
    require_gcc()
    rng = np.random.default_rng(4)
    model = random_model(rng, ModelShape(input_size=6, hidden=10, steps=25, vocab=40, classes=5))
    write_build(model, tmp_path / "b")
    np.savez(tmp_path / "tok.npz", x=rng.integers(0, 40, size=(50, 25)), lengths=rng.integers(1, 26, 50))
    proc = kd2mcu("sim", tmp_path / "b", "--inputs", tmp_path / "tok.npz", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["mismatches"] == 0
    np.savez(tmp_path / "oov.npz", x=np.full((2, 25), 40))
    assert_user_error(kd2mcu("sim", tmp_path / "b", "--inputs", tmp_path / "oov.npz"), "0..39")


def test_corrupt_model_json_is_refused(feature_build, tmp_path):
    tmp, _ = feature_build
    d = json.loads((tmp / "build" / "model.json").read_text())
    d["layers"][0]["directions"][0]["gates"]["f"]["input_mult"][0] += 1
    (tmp_path / "edited.json").write_text(json.dumps(d))
    assert_user_error(kd2mcu("build", tmp_path / "edited.json", "--out", tmp_path / "o"), "multipliers")
    (tmp_path / "bad.json").write_text("{ not json")
    assert_user_error(kd2mcu("build", tmp_path / "bad.json", "--out", tmp_path / "o"), "not valid JSON")
    assert not (tmp_path / "o").exists()
