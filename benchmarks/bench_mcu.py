"""Benchmark on the emulated Cortex-M4: the LSTM sizes S1-S4 of the speed issue, built for the
stm32f405 with arm-none-eabi-gcc (-mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16) and
run in QEMU's netduinoplus2, every output compared bit for bit with the Python reference.

Instructions: SysTick at 168 MHz under -icount shift=0 (1 instruction = 1 ns of virtual time), so
instructions = ticks x 5.952; the count covers the whole kd2mcu_model_run call (LSTM and head),
state starting at zero. Cycles: an estimate for a zero-wait-state Cortex-M4, from QEMU's execution
trace of one inference and the TRM's cost per instruction class (see benchmarks/m4_cycles.py).

The first table is the default build (fast layout, DSP path, -O2). The second shows the options:
-Os, the compact int8 layout, the portable C path (what a Cortex-M3 or M0+ runs), and block-sparse
models (50% and 75% of the blocks of 4 inputs x 4 gates zero, as [prune] sparsity leaves them), with
their instructions and flash as a share of the same dense model's.

CMSIS-NN: exact instruction counts of arm_lstm_unidirectional_s8 (CMSIS-NN 99f736a, the same compiler,
flags and QEMU, counted by a TCG plugin outside this project, on the models this benchmark draws).

Accuracy (--accuracy, about 15 minutes): kd2mcu train with the defaults and with [prune] sparsity = 0.5 on
BasicMotions and JapaneseVowels, 3 seeds each (benchmarks/accuracy_panel.py's runs): int8 test accuracy in
the host simulator, dense against pruned, and the block sparsity the pruned students reached.

Run: .venv/bin/python benchmarks/bench_mcu.py [--samples 3] [--sizes S1,S2,S3,S4] [--no-options] [--accuracy]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# size: (inputs, hidden, steps, CMSIS-NN's exact instructions per inference)
SIZES = {"S1": (6, 32, 100, 2_668_765), "S2": (12, 64, 29, 1_971_204), "S3": (64, 128, 50, 12_291_267),
         "S4": (3, 8, 50, 301_602)}
CODE_TARGET = 8192  # bytes of model code (no weights) for S3 at -O2
# (label, layout, optimization, portable C path, share of zero blocks)
DEFAULT = ("fast, DSP, -O2", "fast", "-O2", False, 0.0)
OPTIONS = [("fast, DSP, -Os", "fast", "-Os", False, 0.0), ("compact, DSP, -O2", "compact", "-O2", False, 0.0),
           ("compact, DSP, -Os", "compact", "-Os", False, 0.0), ("fast, portable C, -O2", "fast", "-O2", True, 0.0),
           ("fast, DSP, 50% sparse", "fast", "-O2", False, 0.5), ("fast, DSP, 75% sparse", "fast", "-O2", False, 0.75),
           ("compact, DSP, 50% sparse", "compact", "-O2", False, 0.5),
           ("compact, DSP, 75% sparse", "compact", "-O2", False, 0.75),
           ("fast, portable C, 50% sparse", "fast", "-O2", True, 0.5)]


def _table(head, rows):
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    return "\n".join("  ".join(str(c).rjust(w) for c, w in zip(r, widths))
                     for r in [head, ["-" * w for w in widths]] + rows)


def measure(key, variant, samples):
    import m4_cycles

    from kd2mcu.codegen.render import PORTABLE_CFLAGS
    from kd2mcu.commands.build import write_build
    from kd2mcu.quant import reference
    from kd2mcu.quant.random_model import ModelShape, random_model, zero_blocks
    from kd2mcu.targets import firmware
    from kd2mcu.targets.footprint import footprint, macs
    from kd2mcu.targets.hostsim import compare
    from kd2mcu.targets.qemu import run_in_qemu

    _, layout, opt, portable, sparsity = variant
    I, H, T, _ = SIZES[key]
    board = firmware.load_board("stm32f405")
    rng = np.random.default_rng(1)
    model = random_model(rng, ModelShape(input_size=I, hidden=H, steps=T, classes=4))
    if sparsity:
        zero_blocks(model, sparsity, np.random.default_rng(2))
    cflags = PORTABLE_CFLAGS if portable else ""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "b"
        write_build(model, {"name": "kd2mcu_model", "layout": layout}, d, True, "kd2mcu_model", board)
        x = rng.integers(-128, 128, size=(samples, T, I)).astype(np.int8)
        lengths = np.full(samples, T)
        sim, instr, _, _ = run_in_qemu(d / "firmware", model, board, x, lengths, opt, extra_cflags=cflags)
        mism, first = compare(reference.run(model, x, lengths), sim)
        fp = footprint(d, opt, portable)
        cyc = m4_cycles.estimate(d / "firmware", model, board, x[:1], lengths[:1], opt, "kd2mcu_model_run", cflags)
    n = float(np.mean(instr))
    if abs(cyc["instructions"] - instr[0]) > 0.01 * instr[0] + 20:  # the trace must see what SysTick counted
        raise RuntimeError(f"{key}: traced {cyc['instructions']:,.0f} instructions, SysTick {instr[0]:,.0f}")
    return {"n": n, "macs": macs(model)["macs_per_step"] * T, "T": T, "cycles": cyc["cycles"],
            "code": fp["flash_code_bytes"], "weights": fp["flash_weight_bytes"], "ram": fp["ram_total_bytes"],
            "flash": fp["flash_total_bytes"],
            "stack": fp["ram_stack_bytes"], "exact": "yes" if mism == 0 else f"NO ({first})"}


def pruned_accuracy(seeds=(0, 1, 2), sparsity: float = 0.5) -> None:
    """Dense against pruned students, int8 test accuracy (host simulator), on the two bundled sensor sets."""
    import accuracy_panel

    rows = []
    for name in ("basic_motions", "japanese_vowels"):
        dense = [accuracy_panel.run_one(name, seed) for seed in seeds]
        pruned = [accuracy_panel.run_one(name, seed, settings=[f"prune.sparsity={sparsity}"]) for seed in seeds]

        def cell(runs, key="int8_hostsim_accuracy"):
            v = [100 * r[key] for r in runs]
            return f"{np.mean(v):.1f} ({min(v):.1f}-{max(v):.1f})"
        gap = 100 * np.mean([p["int8_hostsim_accuracy"] - d["int8_hostsim_accuracy"] for d, p in zip(dense, pruned)])
        sparsity_reached = np.mean([p["block_sparsity"] for p in pruned])
        rows.append([name, cell(dense), cell(pruned), f"{gap:+.1f}", f"{sparsity_reached:.2f}",
                     "yes" if gap >= -1.0 else "NO"])
    print(f"\nPruned students ([prune] sparsity = {sparsity}), int8 test accuracy %, host simulator, mean (min-max) "
          f"over seeds {list(seeds)}; target: within 1 point of dense")
    print(_table(["dataset", "dense", "pruned", "pruned - dense", "block sparsity", "met"], rows))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--sizes", default="S1,S2,S3,S4")
    ap.add_argument("--no-options", action="store_true", help="Only the default build.")
    ap.add_argument("--accuracy", action="store_true", help="Also train dense and pruned students (about 15 min).")
    args = ap.parse_args()
    keys = args.sizes.split(",")
    for k in keys:
        if k not in SIZES:
            ap.error(f"unknown size {k}: choose from {', '.join(SIZES)}")

    rows, option_rows = [], []
    for key in keys:
        I, H, T, cmsis_asm = SIZES[key]
        m = measure(key, DEFAULT, args.samples)
        code = f"{m['code']:,}" + (f" (<= {CODE_TARGET:,})" if key == "S3" else "")
        rows.append([key, f"{I}/{H}/{T}", f"{m['n']:,.0f}", f"{m['n'] / T:,.0f}", f"{m['n'] / m['macs']:.2f}",
                     f"{m['cycles']:,.0f}", f"{m['cycles'] / m['n']:.2f}", code, f"{m['weights']:,}",
                     f"{m['flash']:,}", f"{m['ram']:,}", f"{cmsis_asm:,}", f"{m['n'] / cmsis_asm:.2f}", f"{cmsis_asm / 2:,.0f}",
                     "yes" if m["n"] <= cmsis_asm / 2 else "NO", m["exact"]])
        if not args.no_options:
            dense = {}
            for variant in OPTIONS:
                o = measure(key, variant, args.samples)
                same = (variant[1], variant[3])  # the dense build of the same layout and path
                if not variant[4] and variant[2] == "-O2":
                    dense[same] = o
                base = dense.get(same, m) if variant[4] else None
                option_rows.append([key, variant[0], f"{o['n']:,.0f}", f"{o['n'] / m['macs']:.2f}",
                                    f"{o['cycles']:,.0f}", f"{o['code']:,}", f"{o['weights']:,}", f"{o['flash']:,}",
                                    f"{o['ram']:,}", f"{o['n'] / cmsis_asm:.2f}",
                                    f"{o['n'] / base['n']:.2f}" if base else "", f"{o['flash'] / base['flash']:.2f}"
                                    if base else "", o["exact"]])
    print(f"stm32f405 (QEMU netduinoplus2), arm-none-eabi-gcc, {args.samples} random sequences per size. "
          "Default build: fast layout, DSP path, -O2.")
    print("instr: SysTick under -icount shift=0, whole run call (LSTM + head), state from zero. "
          "cycles: zero-wait-state Cortex-M4 estimate (m4_cycles.py).")
    print("code B: the model's functions; weights B: its arrays; flash B: code and all constants (weights, "
          "activation tables); RAM B: state, static buffers and stack of the run call.")
    print("CMSIS-NN: arm_lstm_unidirectional_s8 (99f736a), exact instruction counts, same compiler, flags and emulator.")
    print(_table(["size", "I/H/T", "instr/inference", "instr/step", "instr/MAC", "est. cycles", "cycles/instr",
                  "code B", "weights B", "flash B", "RAM B", "CMSIS-NN instr", "ratio", "target (1/2)", "met", "bit-exact"],
                 rows))
    if option_rows:
        print("\nOptions (kd2mcu build --layout compact; -Os; KD2MCU_PORTABLE = the path for cores without DSP):")
        print(_table(["size", "build", "instr/inference", "instr/MAC", "est. cycles", "code B", "weights B", "flash B",
                      "RAM B", "ratio to CMSIS-NN", "instr / dense", "flash / dense", "bit-exact"], option_rows))
    if args.accuracy:
        pruned_accuracy()


if __name__ == "__main__":
    main()
