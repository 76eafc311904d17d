"""Benchmark: `kd2mcu build` time and host-simulator throughput for a 6-input, 32-hidden, 100-step
LSTM classifier, beside onnxruntime's float throughput on the same model. Prints a table.

Run: .venv/bin/python benchmarks/bench_core.py [--samples 2000]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_onnx(path: Path, x: np.ndarray) -> None:
    import torch

    torch.manual_seed(0)

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(6, 32, batch_first=True)
            self.head = torch.nn.Linear(32, 4)

        def forward(self, v):
            _, (h, _) = self.lstm(v)
            return self.head(h[-1])

    torch.onnx.export(Classifier().eval(), (torch.from_numpy(x[:1]),), str(path), dynamo=False,
                      input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "batch"}})


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=int, default=2000)
    args = ap.parse_args()

    warnings.filterwarnings("ignore")
    import onnxruntime as ort

    from kd2mcu.commands.build import quantize_data
    from kd2mcu.dataio import load_npz
    from kd2mcu.quant import reference
    from kd2mcu.quant.intmodel import IntModel
    from kd2mcu.targets import hostsim

    rng = np.random.default_rng(0)
    x = np.cumsum(rng.normal(0, 0.3, size=(args.samples, 100, 6)), axis=1).astype(np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_onnx(tmp / "m.onnx", x)
        np.savez(tmp / "calib.npz", x=x[:256])
        np.savez(tmp / "data.npz", x=x)
        kd2mcu = [sys.executable, "-m", "kd2mcu.cli"]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        t0 = time.perf_counter()
        subprocess.run([*kd2mcu, "build", str(tmp / "m.onnx"), "--calib", str(tmp / "calib.npz"), "--out",
                        str(tmp / "b")], check=True, env=env, capture_output=True)
        build_s = time.perf_counter() - t0
        rows.append(("kd2mcu build (ONNX import, calibration on 256, codegen; whole CLI)", f"{build_s:.2f} s", ""))

        model = IntModel.load(tmp / "b" / "model.json")
        data = load_npz(tmp / "data.npz")
        x_q = quantize_data(model, data)
        t0 = time.perf_counter()
        exe = hostsim.compile_harness(tmp / "b" / "src", "kd2mcu_model", opt="-O2")
        rows.append(("gcc -O2 compile of the host simulator", f"{time.perf_counter() - t0:.2f} s", ""))
        hostsim.run_harness(exe, model, x_q[:10])
        t0 = time.perf_counter()
        hostsim.run_harness(exe, model, x_q)
        sim_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        reference.run(model, x_q)
        ref_s = time.perf_counter() - t0

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 3
        sess = ort.InferenceSession(str(tmp / "m.onnx"), opts, providers=["CPUExecutionProvider"])
        sess.run(None, {"x": x[:10]})
        t0 = time.perf_counter()
        for i in range(args.samples):
            sess.run(None, {"x": x[i:i + 1]})
        ort1_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        sess.run(None, {"x": x})
        ortb_s = time.perf_counter() - t0

    n = args.samples
    rows += [
        ("host sim, int8 C at -O2 (1 thread, incl. process start and file I/O)", f"{n / sim_s:,.0f} inf/s", ""),
        ("Python integer reference (numpy, batched)", f"{n / ref_s:,.0f} inf/s", ""),
        ("onnxruntime float, one sample per call (1 thread)", f"{n / ort1_s:,.0f} inf/s", ""),
        ("onnxruntime float, whole batch in one call (1 thread)", f"{n / ortb_s:,.0f} inf/s", ""),
    ]
    print(f"model: LSTM 6 -> 32 (unidirectional), 100 steps, 4 classes; {n} samples")
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  value")
    print(f"{'-' * width}  ----------")
    for name, value, _ in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
