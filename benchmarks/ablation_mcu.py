"""What each speed idea of the DSP path buys: S1-S4 built as by default, then with one idea switched
off in the generated C, run in QEMU (stm32f405, -O2) and checked bit for bit each time.

  64-bit requantization  kd2mcu_rq_fast falls back to the spec's general form (SMULL, 64-bit rounding)
  512 B activation LUT   the spec's table and formulas instead of the (base, slope) tables
  C loops, no asm        the matrix-vector loops as C with the SMLAD intrinsic, compiled by gcc
  portable C             no DSP instruction at all (KD2MCU_PORTABLE)
  compact layout         int8 weights unpacked with SXTB16 (kd2mcu build --layout compact)

Run: .venv/bin/python benchmarks/ablation_mcu.py [--sizes S1,S2,S3,S4]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_mcu import SIZES  # noqa: E402


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    if old not in text:
        raise RuntimeError(f"{path.name}: {old!r} not found; the ablation no longer matches the generated C")
    path.write_text(text.replace(old, new))


def _generic_rq(model_dir: Path) -> None:
    _edit(model_dir / "kd2mcu_int8.h", "    const int32_t left = shift > 0 ? shift : 0;\n    const int32_t right = shift > 0 ? 0 : -shift;\n    const int32_t v = acc",
          "    const int32_t left = shift > 0 ? shift : 0;\n    const int32_t right = shift > 0 ? 0 : -shift;\n"
          "    if (left >= 0) {\n        return kd2mcu_rq(acc, mult, shift);\n    }\n    const int32_t v = acc")


def _small_tables(model_dir: Path) -> None:
    _edit(model_dir / "kd2mcu_model.c", '#include "kd2mcu_int8.h"', '#define KD2MCU_SMALL_TABLES\n#include "kd2mcu_int8.h"')


def _c_loops(model_dir: Path) -> None:
    _edit(model_dir / "kd2mcu_int8.h", "#define KD2MCU_DSP_ASM 1", "#define KD2MCU_DSP_ASM 0")


VARIANTS = [("default (fast layout, DSP)", "fast", None, ""), ("64-bit requantization", "fast", _generic_rq, ""), ("512 B activation LUT", "fast", _small_tables, ""),
            ("C loops, no asm", "fast", _c_loops, ""), ("portable C", "fast", None, "-DKD2MCU_PORTABLE"),
            ("compact layout", "compact", None, "")]


def measure(key: str, layout: str, edit, cflags: str, samples: int = 2) -> tuple[float, bool]:
    from kd2mcu.commands.build import write_build
    from kd2mcu.quant import reference
    from kd2mcu.quant.random_model import ModelShape, random_model
    from kd2mcu.targets import firmware
    from kd2mcu.targets.hostsim import compare
    from kd2mcu.targets.qemu import run_in_qemu

    I, H, T, _, _ = SIZES[key]
    board = firmware.load_board("stm32f405")
    rng = np.random.default_rng(1)
    model = random_model(rng, ModelShape(input_size=I, hidden=H, steps=T, classes=4))
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "b"
        write_build(model, {"name": "kd2mcu_model", "layout": layout}, d, True, "kd2mcu_model", board)
        if edit is not None:
            edit(d / "firmware" / "model")
        x = rng.integers(-128, 128, size=(samples, T, I)).astype(np.int8)
        lengths = np.full(samples, T)
        sim, instr, _, _ = run_in_qemu(d / "firmware", model, board, x, lengths, "-O2", extra_cflags=cflags)
        mism, _ = compare(reference.run(model, x, lengths), sim)
    return float(np.mean(instr)), mism == 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="S1,S2,S3,S4")
    args = ap.parse_args()
    keys = args.sizes.split(",")
    rows = []
    base = {k: measure(k, "fast", None, "")[0] for k in keys}
    for label, layout, edit, cflags in VARIANTS:
        row = [label]
        for k in keys:
            n, exact = (base[k], True) if edit is None and not cflags and layout == "fast" else \
                measure(k, layout, edit, cflags)
            row.append(f"{n:,.0f} ({n / base[k] - 1:+.1%})" + ("" if exact else " NOT BIT-EXACT"))
        rows.append(row)
    head = ["build"] + [f"{k} {SIZES[k][0]}/{SIZES[k][1]}/{SIZES[k][2]}" for k in keys]
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    print("Instructions per inference (stm32f405 in QEMU, -O2) with one idea switched off, and the change "
          "against the default build; every build checked bit for bit.")
    for r in [head, ["-" * w for w in widths]] + rows:
        print("  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths))))


if __name__ == "__main__":
    main()
