"""`kd2mcu build model.onnx --calib ...` end to end, its quality on trained models, and its refusals.

Quality: on LSTM classifiers trained with PyTorch and exported to ONNX, the int8 model's dequantized
logits (from the host simulator, bit-exact with the reference) are compared with onnxruntime's float
logits on held-out data: relative L2 error and argmax agreement, which must be at least 95%.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from clitools import assert_user_error, kd2mcu, snapshot
from conftest import require_gcc
from test_onnx_import import export_onnx, make_torch_classifier

torch = pytest.importorskip("torch")


def train(module, x, y, epochs, lr=1e-2, batch=32, seed=0):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y)
    module.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), batch):
            idx = perm[i:i + batch]
            loss = torch.nn.functional.cross_entropy(module(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            opt.step()
    return module.eval()


def sine_task(n, steps=50, features=3, seed=0):
    """Four classes of noisy multichannel oscillations that differ in frequency and phase pattern."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, size=n)
    t = np.arange(steps)[None, :, None]
    freq = (0.05 + 0.04 * y)[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, features))
    x = np.sin(2 * np.pi * freq * t + phase) * rng.uniform(0.5, 2.0, size=(n, 1, 1))
    x = x + rng.normal(0, 0.3, size=x.shape)
    return x.astype(np.float32), y


def token_task(n, steps=30, vocab=40, seed=0):
    """Token sequences whose class is the token band (of 3) that occurs most often."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    band = rng.integers(0, vocab, size=(n, steps))
    bias = (vocab // 3) * y[:, None] + rng.integers(0, vocab // 3, size=(n, steps))
    x = np.where(rng.random((n, steps)) < 0.45, bias, band)
    return x.astype(np.int64), y


def basic_motions():
    datasets = pytest.importorskip("aeon.datasets")
    xtr, ytr = datasets.load_basic_motions(split="train")
    xte, yte = datasets.load_basic_motions(split="test")
    labels = sorted(set(ytr))
    f = lambda x: np.ascontiguousarray(np.transpose(x, (0, 2, 1))).astype(np.float32)
    xtr, xte = f(xtr), f(xte)
    mean, std = xtr.mean(axis=(0, 1)), xtr.std(axis=(0, 1)) + 1e-6
    enc = lambda v: np.array([labels.index(s) for s in v])
    return (xtr - mean) / std, enc(ytr), (xte - mean) / std, enc(yte)


def _quality(tmp_path, module, xtr, xte, example):
    """Build with PTQ on the training split, simulate the held-out split, compare with onnxruntime."""
    from kd2mcu.quant.onnx_import import run_onnxruntime

    export_onnx(module, example, tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", x=xtr)
    np.savez(tmp_path / "test.npz", x=xte)
    proc = kd2mcu("build", tmp_path / "m.onnx", "--calib", tmp_path / "calib.npz", "--out", tmp_path / "b")
    assert proc.returncode == 0, proc.stderr
    proc = kd2mcu("sim", tmp_path / "b", "--inputs", tmp_path / "test.npz", "--json", "--save", tmp_path / "q.npz")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["mismatches"] == 0
    deq = np.load(tmp_path / "q.npz")["logits"].astype(np.float64)
    ref = run_onnxruntime(tmp_path / "m.onnx", xte).astype(np.float64)
    rel_l2 = float(np.linalg.norm(deq - ref) / np.linalg.norm(ref))
    agreement = float(np.mean(deq.argmax(1) == ref.argmax(1)))
    info = json.loads((tmp_path / "b" / "build.json").read_text())
    print(f"held-out: relative L2 {rel_l2:.4f}, argmax agreement {agreement:.2%}; "
          f"calibration report {info['quantization']}")
    return rel_l2, agreement


def _basic_motions_case():
    xtr, ytr, xte, yte = basic_motions()
    return xtr, ytr, xte, yte, make_torch_classifier(6, 32, 1, False, 4, seed=0), dict(epochs=60, batch=8)


def _bidirectional_case():
    (xtr, ytr), (xte, yte) = sine_task(600, seed=1), sine_task(300, seed=2)
    return xtr, ytr, xte, yte, make_torch_classifier(3, 16, 2, True, 4, seed=1), dict(epochs=12)


def _token_case():
    (xtr, ytr), (xte, yte) = token_task(600, seed=3), token_task(300, seed=4)
    return xtr, ytr, xte, yte, make_torch_classifier(8, 24, 1, False, 3, embedding_vocab=40, seed=2), dict(epochs=15)


QUALITY_CASES = {"basic_motions_lstm32": _basic_motions_case, "sine_bidirectional_2layer": _bidirectional_case,
                 "tokens_embedding_lstm24": _token_case}


@pytest.mark.slow
@pytest.mark.parametrize("case", QUALITY_CASES)
def test_quality_of_trained_models(case, tmp_path):
    """BasicMotions (real data, shipped with aeon), a 2-layer bidirectional model, a token model."""
    require_gcc()
    xtr, ytr, xte, yte, module, fit = QUALITY_CASES[case]()
    module = train(module, xtr, ytr, **fit)
    float_acc = float((module(torch.from_numpy(xte)).argmax(1).numpy() == yte).mean())
    assert float_acc >= 0.8  # the float model really is trained
    rel_l2, agreement = _quality(tmp_path, module, xtr, xte, torch.from_numpy(xtr[:1]))
    assert agreement >= 0.95
    assert rel_l2 < 0.15


def test_same_onnx_builds_byte_identical_sources(tmp_path):
    xtr, _ = sine_task(40, steps=12)
    export_onnx(make_torch_classifier(3, 8, 1, True, 4), torch.from_numpy(xtr[:1]), tmp_path / "m.onnx")
    np.savez(tmp_path / "c.npz", x=xtr)
    for out in ("a", "b"):
        proc = kd2mcu("build", tmp_path / "m.onnx", "--calib", tmp_path / "c.npz", "--out", tmp_path / out)
        assert proc.returncode == 0, proc.stderr
    for f in sorted((tmp_path / "a" / "src").iterdir()):
        assert f.read_bytes() == (tmp_path / "b" / "src" / f.name).read_bytes(), f.name
    assert (tmp_path / "a" / "model.json").read_bytes() == (tmp_path / "b" / "model.json").read_bytes()


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    import onnx
    from onnx import numpy_helper

    tmp = tmp_path_factory.mktemp("onnx")
    x, _ = sine_task(20, steps=10, features=6)
    export_onnx(make_torch_classifier(6, 8, 1, False, 3), torch.from_numpy(x[:1]), tmp / "good.onnx")
    np.savez(tmp / "calib.npz", x=x)
    # NaN weight
    m = onnx.load(tmp / "good.onnx")
    init = m.graph.initializer[0]
    arr = numpy_helper.to_array(init).copy()
    arr.flat[0] = np.nan
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(m, tmp / "nan.onnx")
    # an op kd2mcu does not support: a GRU
    gru = torch.nn.GRU(6, 8, batch_first=True)

    class GruNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gru, self.fc = gru, torch.nn.Linear(8, 3)

        def forward(self, v):
            _, h = self.gru(v)
            return self.fc(h[-1])

    export_onnx(GruNet().eval(), torch.from_numpy(x[:1]), tmp / "gru.onnx")
    (tmp / "corrupt.onnx").write_bytes(np.random.default_rng(0).bytes(3000))
    return tmp


def test_build_refusals_are_one_line_and_change_nothing(onnx_files, tmp_path):
    t = onnx_files
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    before = snapshot(out)
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 10, 6), np.float32))
    np.savez(tmp_path / "wrong.npz", x=np.zeros((4, 10, 5), np.float32))
    cases = [
        (["build", t / "corrupt.onnx", "--calib", t / "calib.npz"], ["corrupt.onnx", "not a valid ONNX"]),
        (["build", t / "gru.onnx", "--calib", t / "calib.npz"], ["GRU", "not supported"]),
        (["build", t / "nan.onnx", "--calib", t / "calib.npz"], ["NaN"]),
        (["build", t / "good.onnx"], ["--calib"]),
        (["build", t / "good.onnx", "--calib", tmp_path / "missing.npz"], ["missing.npz", "no such file"]),
        (["build", t / "good.onnx", "--calib", tmp_path / "empty.npz"], ["empty"]),
        (["build", t / "good.onnx", "--calib", tmp_path / "wrong.npz"], ["5"]),
        (["build", tmp_path / "nope.onnx", "--calib", t / "calib.npz"], ["nope.onnx"]),
        (["build", t / "good.onnx", "--calib", t / "calib.npz", "--name", "int"], ["reserved"]),
    ]
    for args, words in cases:
        assert_user_error(kd2mcu(*args, "--out", out, "--force"), *words)
        assert snapshot(out) == before, args
    assert_user_error(kd2mcu("build", t / "good.onnx", "--calib", t / "calib.npz", "--out", out), "not empty")
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", "empty.npz", "wrong.npz"])


@pytest.mark.parametrize("direction", ["reverse", "bidirectional"])
def test_hand_built_graph_builds_and_simulates(direction, tmp_path):
    """A hand-made ONNX LSTM (here direction=reverse or bidirectional) goes through build and sim."""
    require_gcc()
    from test_onnx_import import random_data, simple_graph

    path = simple_graph(direction, F=3, H=6, C=3).save(tmp_path / "m.onnx")
    x = random_data(64, 15, 3)
    np.savez(tmp_path / "d.npz", x=x, lengths=np.random.default_rng(0).integers(1, 16, 64))
    proc = kd2mcu("build", path, "--calib", tmp_path / "d.npz", "--out", tmp_path / "b")
    assert proc.returncode == 0, proc.stderr
    model = json.loads((tmp_path / "b" / "model.json").read_text())
    assert model["layers"][0]["reverse"] == (direction == "reverse")
    proc = kd2mcu("sim", tmp_path / "b", "--inputs", tmp_path / "d.npz", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["mismatches"] == 0, proc.stdout + proc.stderr
    assert json.loads((tmp_path / "b" / "build.json").read_text())["quantization"]["argmax_agreement"] >= 0.9
