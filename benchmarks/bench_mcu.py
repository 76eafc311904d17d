"""Benchmark on the emulated Cortex-M4: the LSTM sizes S1-S4 of the speed issue, built for the
stm32f405 with arm-none-eabi-gcc (-mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16) and
run in QEMU's netduinoplus2. Prints instructions per inference, per step and per MAC, code, weight
and RAM bytes, and CMSIS-NN's arm_lstm_unidirectional_s8 figures beside them.

Instructions: SysTick at 168 MHz under -icount shift=0 (1 instruction = 1 ns of virtual time), so
instructions = ticks x 5.952; the count covers the whole kd2mcu_model_run call (LSTM and head).

Run: .venv/bin/python benchmarks/bench_mcu.py [--opt -O2] [--samples 3]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# size: (inputs, hidden, steps, CMSIS-NN instructions per inference: C path, with inline-asm requantization)
SIZES = {"S1": (6, 32, 100, 2_828_189, 2_503_001), "S2": (12, 64, 29, 2_035_107, 1_888_008),
         "S3": (64, 128, 50, 12_507_501, 12_002_567), "S4": (3, 8, 50, 325_759, 283_562)}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--opt", default="-O2")
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--sizes", default="S1,S2,S3,S4")
    args = ap.parse_args()

    from kd2mcu import firmware, reference
    from kd2mcu.build import _write
    from kd2mcu.emulate import run_in_qemu
    from kd2mcu.hostsim import compare
    from kd2mcu.random_model import ModelShape, random_model
    from kd2mcu.report import footprint, macs

    board = firmware.load_board("stm32f405")
    rows = []
    for key in args.sizes.split(","):
        I, H, T, cmsis_c, cmsis_asm = SIZES[key]
        rng = np.random.default_rng(1)
        model = random_model(rng, ModelShape(input_size=I, hidden=H, steps=T, classes=4))
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp) / "b"
            _write(model, {"name": "kd2mcu_model"}, d, True, "kd2mcu_model", board)
            x = rng.integers(-128, 128, size=(args.samples, T, I)).astype(np.int8)
            lengths = np.full(args.samples, T)
            sim, instr, source, sizes = run_in_qemu(d / "firmware", model, board, x, lengths, args.opt)
            mism, first = compare(reference.run(model, x, lengths), sim)
            fp = footprint(d, args.opt)
        n = float(np.mean(instr))
        m = macs(model)
        rows.append([key, f"{I}/{H}/{T}", f"{n:,.0f}", f"{n / T:,.0f}", f"{n / (m['macs_per_step'] * T):.2f}",
                     f"{fp['flash_code_bytes']:,}", f"{fp['flash_weight_bytes']:,}", f"{fp['ram_total_bytes']:,}",
                     f"{cmsis_asm:,}", f"{n / cmsis_asm:.2f}", f"{cmsis_asm / 2:,.0f}",
                     "yes" if mism == 0 else f"NO ({first})"])
    head = ["size", "I/H/T", "instr/inference", "instr/step", "instr/MAC", "code B", "weights B", "RAM B",
            "CMSIS-NN instr", "ratio", "target (1/2)", "bit-exact"]
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    print(f"stm32f405 (QEMU netduinoplus2), arm-none-eabi-gcc {args.opt}, {args.samples} sequences each, "
          "instructions from SysTick under -icount shift=0, whole run call (LSTM + head)")
    for r in [head, ["-" * w for w in widths]] + rows:
        print("  ".join(str(c).rjust(w) for c, w in zip(r, widths)))


if __name__ == "__main__":
    main()
