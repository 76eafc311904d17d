"""Which weight layout is fastest on a product? The sizes S1-S4 of benchmarks/bench_mcu.py, built in the
fast and compact layouts (dense, with the weights in flash or copied to RAM, or split between the F405's
CCM and flash where they do not fit it, and with 50% of the blocks pruned), run through the memory-system
model of cycle_model.py for the STM32F405 at 168 MHz (5 wait states, ART) and the STM32L476 at 80 MHz
(4 wait states): zero-wait and with-wait cycles per inference side by side, and the layout with the
fewest with-wait cycles.

Run: .venv/bin/python benchmarks/cycle_model/layouts.py [--sizes S1,S2,S3,S4]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_mcu import SIZES, _table  # noqa: E402
from cycle_model import measure  # noqa: E402

from kd2mcu.errors import UserError  # noqa: E402

# CMSIS-NN 99f736a's arm_lstm_unidirectional_s8 (int8 weights in flash; -DCMSIS_NN_USE_REQUANTIZE_INLINE_ASSEMBLY,
# which gives the exact instruction counts of bench_mcu.SIZES), built outside this project with the same
# compiler and flags on the same models and run through cycle_model.py on the stm32f405: with-wait cycles.
CMSIS_NN_F405_WITH_WAIT = {"S1": 3_785_551, "S2": 2_856_319, "S3": 18_577_833, "S4": 461_645}


def build(key: str, layout: str, sparsity: float, board_name: str, tmp: Path, weights: str = "flash") -> Path:
    from kd2mcu.commands.build import write_build
    from kd2mcu.quant.random_model import ModelShape, random_model, zero_blocks
    from kd2mcu.targets import firmware

    I, H, T, _ = SIZES[key]
    model = random_model(np.random.default_rng(1), ModelShape(input_size=I, hidden=H, steps=T, classes=4))
    if sparsity:
        zero_blocks(model, sparsity, np.random.default_rng(2))
    board = firmware.load_board(board_name)
    d = tmp / f"{key}-{layout}-{sparsity}-{board_name}-{weights}"
    write_build(model, {"name": "kd2mcu_model", "layout": layout, "weights": weights}, d, True, "kd2mcu_model", board)
    x = np.random.default_rng(3).integers(-128, 128, size=(1, T, I)).astype(np.int8)
    firmware.set_vectors(model, d / "firmware", x, np.array([T]))
    return firmware.make(d / "firmware", emulate=True, opt="-O2")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="S1,S2,S3,S4")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.sizes.split(","):
            for board, machine in (("stm32f405", "netduinoplus2"), ("stm32l476", "netduinoplus2")):
                best = None
                in_ram = set()  # layouts whose weights all fit the RAM: split would be the same build
                for layout, sparsity, weights in (("fast", 0.0, "flash"), ("compact", 0.0, "flash"),
                                                  ("fast", 0.0, "ram"), ("compact", 0.0, "ram"),
                                                  ("fast", 0.0, "split"), ("compact", 0.0, "split"),
                                                  ("fast", 0.5, "flash"), ("compact", 0.5, "flash")):
                    if weights == "split" and (layout in in_ram or board != "stm32f405"):
                        continue  # split only where the weights do not all fit the F405's CCM
                    label = f"{layout}{', 50% sparse' if sparsity else ''}" + \
                        {"flash": "", "ram": ", weights in RAM", "split": ", split RAM/flash"}[weights]
                    try:
                        elf = build(key, layout, sparsity, board, Path(tmp), weights)
                    except UserError as exc:  # --weights ram: the weights do not fit
                        rows.append([key, board, label, str(exc).split(": ", 1)[1][:60], "", "", "", "", "", "", ""])
                        continue
                    if weights == "ram":
                        in_ram.add(layout)
                    r = measure(elf, "kd2mcu_model_run", None, board, machine)
                    if not sparsity and (best is None or r["with_wait_cycles"] < best[1]):
                        best = (label, r["with_wait_cycles"])
                    rows.append([key, board, label, f"{r['instructions']:,.0f}", f"{r['zero_wait_cycles']:,.0f}",
                                 f"{r['with_wait_cycles']:,.0f}", f"{r['with_wait_cycles'] / r['zero_wait_cycles']:.2f}",
                                 f"{r['data_stall_cycles']:,.0f}", f"{r['fetch_stall_cycles']:,.0f}",
                                 f"{r['ms_with_wait']:.3f}",
                                 f"{r['with_wait_cycles'] / CMSIS_NN_F405_WITH_WAIT[key]:.2f}"
                                 if board == "stm32f405" and key in CMSIS_NN_F405_WITH_WAIT else ""])
                rows.append([key, board, f"fastest dense: {best[0]}", "", "", "", "", "", "", "", ""])
    print("Cycles per inference, the memory-system model of benchmarks/cycle_model/cycle_model.py (whole "
          "kd2mcu_model_run, DSP path, -O2, one random sequence); stalls: data = flash reads missing the data "
          "cache, fetch = instruction lines neither cached nor prefetched in time.")
    print(_table(["size", "board", "layout", "instructions", "zero-wait cycles", "with-wait cycles", "ratio",
                  "data stalls", "fetch stalls", "ms", "x CMSIS-NN"], rows))
    print("x CMSIS-NN: with-wait cycles over those of CMSIS-NN's arm_lstm_unidirectional_s8 on the same model "
          "and board, measured outside this project (CMSIS_NN_F405_WITH_WAIT; issue target: at most 0.35 dense)")


if __name__ == "__main__":
    main()
