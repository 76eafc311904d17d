"""The team's reference vectors (../shared/spec/vectors, outputs of CMSIS-NN's int8 LSTM kernel):
the Python reference and the generated C must reproduce every hidden state and the final cell state."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import VECTORS, require_gcc, require_shared, write_build

from kd2mcu.quant.intmodel import GATES, Direction, Gate, Head, IntModel, LSTMLayer, QParams
from kd2mcu.quant.reference import DirectionParams, lstm_direction
from kd2mcu.targets import hostsim


def _cases():
    if not VECTORS.is_dir():
        return ["absent"]
    return sorted(p.stem for p in VECTORS.glob("*.npz"))


def _load(name):
    require_shared()
    return dict(np.load(VECTORS / f"{name}.npz"))


def _params(d) -> DirectionParams:
    return DirectionParams(
        np.stack([d[f"Wx_{g}"] for g in GATES]), np.stack([d[f"Wh_{g}"] for g in GATES]),
        np.stack([d[f"b_{g}"] for g in GATES]),
        [(int(d[f"Mx_{g}"]), int(d[f"Sx_{g}"])) for g in GATES], [(int(d[f"Mh_{g}"]), int(d[f"Sh_{g}"])) for g in GATES],
        int(d["z_x"]), int(d["z_h"]), int(d["P"]), int(d["clip"]),
        (int(d["M_ig"]), int(d["S_ig"])), (int(d["M_h"]), int(d["S_h"])))


def _model(d) -> IntModel:
    """A one-layer integer model carrying the vector's integers verbatim (the head is a dummy)."""
    gates = {g: Gate(d[f"Wx_{g}"], d[f"Wh_{g}"], d[f"b_{g}"], 1.0, 1.0, (int(d[f"Mx_{g}"]), int(d[f"Sx_{g}"])),
                     (int(d[f"Mh_{g}"]), int(d[f"Sh_{g}"]))) for g in GATES}
    in_q, hid_q = QParams(1.0, int(d["z_x"])), QParams(1.0, int(d["z_h"]))
    H = d["Wx_f"].shape[0]
    layer = LSTMLayer(in_q, hid_q, int(d["P"]), [Direction(gates)], int(d["clip"]),
                      (int(d["M_ig"]), int(d["S_ig"])), (int(d["M_h"]), int(d["S_h"])))
    head = Head(np.zeros((2, H), np.int8), np.ones(2), np.zeros(2, np.int32), hid_q, QParams(1.0, 0),
                np.array([2**30, 2**30]), np.array([0, 0]))
    return IntModel(in_q, [layer], head, int(d["x"].shape[0])).validate()


def test_vectors_are_all_listed():
    require_shared()
    index = json.loads((VECTORS / "index.json").read_text())
    assert sorted(e["name"] for e in index) == _cases()
    assert len(_cases()) >= 27


@pytest.mark.parametrize("name", _cases())
def test_reference_reproduces_vector(name):
    d = _load(name)
    x = d["x"][None]
    y, h, c = lstm_direction(_params(d), x, np.array([x.shape[1]]), False, d["h0"][None], d["c0"][None])
    np.testing.assert_array_equal(y[0], d["expected_h"])
    np.testing.assert_array_equal(h[0], d["expected_h"][-1])
    np.testing.assert_array_equal(c[0], d["expected_c"])


@pytest.mark.parametrize("name", _cases())
def test_generated_c_reproduces_vector(name, tmp_path):
    d = _load(name)
    require_gcc()
    model = _model(d)
    build = write_build(model, tmp_path / "build")
    exe = hostsim.compile_harness(build / "src", "kd2mcu_model", opt="-O2")
    x = d["x"][None]
    sim = hostsim.run_harness(exe, model, x, stream=True, h0=d["h0"][None], c0=d["c0"][None])
    assert sim.rc[0] == 0
    np.testing.assert_array_equal(sim.step_h[0], d["expected_h"])
    np.testing.assert_array_equal(sim.c[0], d["expected_c"])
