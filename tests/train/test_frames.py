"""Long sequences by frame stacking (k consecutive samples = one LSTM step of k*F inputs), and the label
checks of user data. Frame stacking adds no arithmetic: the integer model records k, the C header
documents it, sim and emulate stack per-sample inputs as training did, and every output stays bit-exact."""
from __future__ import annotations

import json

import numpy as np
import pytest
from clitools import assert_user_error, kd2mcu
from conftest import require_arm, require_gcc, write_build

from kd2mcu.dataio import stack_frames
from kd2mcu.quant import reference
from kd2mcu.quant.intmodel import IntModel
from kd2mcu.quant.random_model import ModelShape, random_model


def test_stack_frames_is_a_row_major_reshape_with_zero_padding():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 10, 2)).astype(np.float32)
    lengths = np.array([10, 7, 1])
    xs, ls = stack_frames(x, lengths, 4)
    assert xs.shape == (3, 3, 8) and ls.tolist() == [3, 2, 1]
    assert np.array_equal(xs[0, :2].reshape(8, 2), x[0, :8])  # oldest sample first
    assert np.array_equal(xs[0, 2, :4], x[0, 8:10].reshape(-1)) and not xs[0, 2, 4:].any()
    assert np.array_equal(xs[1, 1, :6], x[1, 4:7].reshape(-1)) and not xs[1, 1, 6:].any()  # past its length
    assert not xs[2, 0, 2:].any()
    same, lens = stack_frames(x, None, 1)
    assert same is x and lens.tolist() == [10, 10, 10]


def _stacked_model(k: int, seed: int = 0) -> IntModel:
    m = random_model(np.random.default_rng(seed), ModelShape(input_size=2 * k, hidden=6, steps=20, classes=3))
    m.frame_stack = k
    return m.validate()


def test_model_json_keeps_frame_stack_and_refuses_nonsense(tmp_path):
    m = _stacked_model(3)
    again = IntModel.from_dict(json.loads(m.to_json()))
    assert again.frame_stack == 3
    d = json.loads(m.to_json())
    d["frame_stack"] = 4  # 6 inputs are not a multiple of 4
    (tmp_path / "bad.json").write_text(json.dumps(d))
    assert_user_error(kd2mcu("build", tmp_path / "bad.json", "--out", tmp_path / "b"), "frame_stack")
    plain = random_model(np.random.default_rng(1), ModelShape(input_size=3, hidden=4, steps=8))
    assert "frame_stack" not in plain.to_json()  # unchanged model.json for unstacked models


def _per_sample_inputs(m: IntModel, path, n=6, samples=50, seed=2):
    """Float inputs one sample per row ([N, T, F]) of varying lengths, with labels."""
    rng = np.random.default_rng(seed)
    F = m.input_size // m.frame_stack
    x = rng.normal(size=(n, samples, F)).astype(np.float32) * np.float32(40 * m.input.scale)
    lengths = rng.integers(1, samples + 1, size=n)
    lengths[0] = samples
    np.savez(path, x=x, lengths=lengths, y=rng.integers(0, m.num_classes, size=n))
    return x, lengths


def test_stacked_model_in_the_host_simulator_is_bit_exact_on_per_sample_inputs(tmp_path):
    require_gcc()
    m = _stacked_model(3)
    b = write_build(m, tmp_path / "b")
    header = (b / "src" / "kd2mcu_model.h").read_text()
    assert "#define KD2MCU_MODEL_FRAME_STACK 3" in header and "#define KD2MCU_MODEL_SAMPLE_FEATURES 2" in header
    x, lengths = _per_sample_inputs(m, tmp_path / "in.npz")
    proc = kd2mcu("sim", b, "--inputs", tmp_path / "in.npz", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["mismatches"] == 0
    xs, ls = stack_frames(x, lengths, 3)  # the same thing, by hand
    q = reference.run(m, reference.quantize_input(m, xs), ls)["logits"]
    proc = kd2mcu("sim", b, "--inputs", tmp_path / "in.npz", "--save", tmp_path / "q.npz")
    with np.load(tmp_path / "q.npz") as f:
        assert np.array_equal(f["q"], q)


def test_stacked_model_in_qemu_is_bit_exact(tmp_path):
    require_arm()
    m = _stacked_model(4, seed=3)
    b = write_build(m, tmp_path / "b")
    _per_sample_inputs(m, tmp_path / "in.npz", n=5, samples=37)
    proc = kd2mcu("emulate", b, "--inputs", tmp_path / "in.npz", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["mismatches"] == 0


def _csv(path, labels):
    rows = "".join(f"s{k},{lab},{k * 0.1 + j}\n" for k, lab in enumerate(labels) for j in range(3))
    path.write_text("sample,label,a\n" + rows)
    return path


def test_labels_that_skip_a_class_are_refused(tmp_path):
    data = _csv(tmp_path / "d.csv", [1, 2, 3, 4] * 5)
    assert_user_error(kd2mcu("train", "--data", data, "--out", tmp_path / "r"), "no sample has label 0",
                      "renumber")


def test_a_test_label_the_training_file_lacks_is_refused(tmp_path):
    train = _csv(tmp_path / "train.csv", [0, 1] * 6)
    test = _csv(tmp_path / "test.csv", [0, 1, 2])
    assert_user_error(kd2mcu("train", "--data", train, "--test", test, "--out", tmp_path / "r"),
                      "--test", "label 2", "no sample of it")


def test_a_long_series_trains_frame_stacked_and_builds_bit_exact(tmp_path):
    pytest.importorskip("torch")
    require_gcc()
    rng = np.random.default_rng(4)
    t = np.arange(300)
    y = np.tile([0, 1, 2], 16)
    x = np.stack([np.sin(t * (0.02 + 0.03 * c) + rng.uniform(0, 6)) + 0.3 * rng.normal(size=300) for c in y])
    np.savez(tmp_path / "long.npz", x=x[:, :, None].astype(np.float32), y=y)
    quick = ["--set", "teacher.epochs=2", "--set", "distill.warmup_epochs=1", "--set", "distill.epochs=2",
             "--set", "qat.epochs=1", "--quiet"]
    proc = kd2mcu("train", "--data", tmp_path / "long.npz", "--out", tmp_path / "r", *quick)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "r" / "data.json").read_text())
    assert data["frame_stack"] == 5 and data["sample_features"] == 1 and data["max_len"] == 60  # 300 / 5
    assert IntModel.load(tmp_path / "r" / "model.json").frame_stack == 5
    teacher = json.loads((tmp_path / "r" / "teacher.json").read_text())  # the default: auto
    assert teacher["kind"] == "transformer+rocket" and "ensemble, weights 0.33, 0.67" in teacher["description"]
    assert kd2mcu("build", tmp_path / "r", "--out", tmp_path / "b").returncode == 0
    proc = kd2mcu("sim", tmp_path / "b", "--inputs", tmp_path / "r" / "test.npz", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["mismatches"] == 0, proc.stderr


def test_auto_frame_stack_runs_at_most_stack_steps_lstm_steps(tmp_path):
    from kd2mcu.train.datasets import load_task
    rng = np.random.default_rng(5)
    y = np.tile([0, 1], 20)
    np.savez(tmp_path / "long.npz", x=rng.normal(size=(40, 300, 2)).astype(np.float32), y=y)
    for stack_steps, k, steps in ((64, 5, 60), (32, 10, 30), (128, 3, 100)):
        task = load_task(data=tmp_path / "long.npz", frame_stack=0, stack_steps=stack_steps)
        assert (task.frame_stack, task.x_train.shape[1:]) == (k, (steps, 2 * k))
    np.savez(tmp_path / "short.npz", x=rng.normal(size=(40, 128, 2)).astype(np.float32), y=y)
    assert load_task(data=tmp_path / "short.npz", frame_stack=0, stack_steps=32).frame_stack == 1  # up to 128: none
    assert_user_error(kd2mcu("train", "--data", tmp_path / "long.npz", "--out", tmp_path / "r",
                             "--set", "data.stack_steps=4"), "[data] stack_steps must lie in 8..128")
    assert not (tmp_path / "r").exists()
