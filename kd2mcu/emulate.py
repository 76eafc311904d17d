"""``kd2mcu emulate``: the firmware, cross-compiled, run in qemu-system-arm and checked bit for bit.

The samples are baked into the firmware's flash (in batches that fit), the firmware prints every
output over semihosting, and each is compared with the Python reference. Timing: QEMU's DWT cycle
counter reads zero, so the firmware times each inference with SysTick on the core clock; under
``-icount shift=0`` every instruction advances QEMU's virtual clock by exactly 1 ns, so
instructions ~= ticks * 1e9 / SysTick frequency (seen within 0.3% of exact counts; the resolution
is one tick, about 6 instructions at 168 MHz).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from . import reference
from .build import quantize_data
from .buildfolder import MODEL_FILE, find_build, read_build_info
from .dataio import load_npz
from .errors import UserError
from .firmware import (DEFAULT_BOARD, FIRMWARE_DIR, VECTORS_FILE, elf_size, kernel_path, load_board, make,
                       set_vectors)
from .hostsim import SimResult, compare
from .intmodel import IntModel

EMULATE_FILE = "emulate.json"
BATCH_INPUT_BYTES = 256 * 1024  # test-vector data per firmware image


PORTABLE_CFLAGS = "-DKD2MCU_PORTABLE"


def qemu_command(machine: str, elf: Path) -> list[str]:
    qemu = shutil.which("qemu-system-arm")
    if qemu is None:
        raise UserError("qemu-system-arm not found: install it (apt-get install qemu-system-arm; scripts/setup.sh "
                        "does it as root)")
    return [qemu, "-M", machine, "-nographic", "-monitor", "none", "-serial", "none",
            "-semihosting-config", "enable=on,target=native", "-icount", "shift=0", "-kernel", str(elf)]


def parse_output(text: str, model: IntModel, count: int) -> tuple[SimResult, np.ndarray, str]:
    """The firmware's lines -> (outputs, timer ticks per sample net of the timer's own cost, timer source)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    begin = [ln for ln in lines if ln.startswith("KD2MCU BEGIN")]
    if not begin or "KD2MCU END" not in lines:
        raise UserError(f"the firmware did not run to the end in QEMU (output: {' | '.join(lines[-3:]) or 'none'})")
    _, _, n_str, source, overhead = begin[0].split()
    S, C = sum(model.state_sizes()), model.num_classes
    rc = np.zeros(count, np.int32)
    logits = np.zeros((count, C), np.int8)
    h = np.zeros((count, S), np.int8)
    c = np.zeros((count, S), np.int16)
    ticks = np.zeros(count, np.int64)
    rows = [ln.split() for ln in lines if ln.startswith("S ")]
    if int(n_str) != count or len(rows) != count:
        raise UserError(f"the firmware reported {len(rows)} of {count} samples")
    for row in rows:
        n = int(row[1])
        rc[n] = np.int32(np.uint32(int(row[2], 16)).view(np.int32))
        logits[n] = np.frombuffer(bytes.fromhex(row[3]), np.uint8).view(np.int8) if C else []
        h[n] = np.frombuffer(bytes.fromhex(row[4]), np.uint8).view(np.int8)
        c[n] = np.frombuffer(bytes.fromhex(row[5]), ">u2").astype(np.uint16).view(np.int16)
        ticks[n] = int(row[6]) - int(overhead)
    return SimResult(rc, logits, h, c), ticks, source


def _batches(lengths: np.ndarray, stride: int, item_bytes: int) -> list[slice]:
    out, start, size = [], 0, 0
    for n, steps in enumerate(lengths):
        b = int(steps) * stride * item_bytes
        if n > start and size + b > BATCH_INPUT_BYTES:
            out.append(slice(start, n))
            start, size = n, 0
        size += b
    out.append(slice(start, len(lengths)))
    return out


def run_in_qemu(project: Path, model: IntModel, board, x_q: np.ndarray, lengths: np.ndarray, opt: str = "-O2",
                timeout: float = 600.0, extra_cflags: str = ""):
    """Run int8 inputs through a copy of the firmware project in QEMU, in batches that fit in flash.

    Returns (outputs, instructions per sample, timer source, arm-none-eabi-size of the first image).
    """
    stride = 1 if model.is_token_model else model.input_size
    parts, tick_parts, source, sizes = [], [], "", None
    with tempfile.TemporaryDirectory(prefix="kd2mcu-emulate-") as tmp:
        work = Path(tmp) / "firmware"
        shutil.copytree(project, work, ignore=shutil.ignore_patterns("build"))
        for sl in _batches(lengths, stride, 4 if model.is_token_model else 1):
            set_vectors(model, work, x_q[sl], lengths[sl])
            elf = make(work, emulate=True, opt=opt, extra_cflags=extra_cflags)
            sizes = sizes or elf_size(elf)
            try:
                proc = subprocess.run(qemu_command(board.emulator["machine"], elf), capture_output=True, text=True,
                                      timeout=timeout)
            except subprocess.TimeoutExpired:
                raise UserError(f"QEMU did not finish within {timeout:.0f} s") from None
            res, ticks, source = parse_output(proc.stdout + proc.stderr, model, sl.stop - sl.start)
            parts.append(res)
            tick_parts.append(ticks)
    sim = SimResult(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("rc", "logits", "h", "c")))
    ticks = np.concatenate(tick_parts).astype(np.float64)
    instructions = ticks * (1e9 / float(board.emulator["systick_hz"])) if source == "systick" else ticks
    return sim, instructions, source, sizes


def emulate(build_dir, inputs=None, opt: str = "-O2", timeout: float = 600.0, portable: bool = False) -> dict:
    """Run the build's firmware in QEMU on ``inputs`` (or its baked-in vectors) and compare every output
    with the Python reference. ``portable``: compile the portable C path instead of the DSP path."""
    d = find_build(build_dir)
    model = IntModel.load(d / MODEL_FILE)
    info = read_build_info(d)
    board = load_board(info.get("target", DEFAULT_BOARD))
    project = d / FIRMWARE_DIR
    if not (project / "Makefile").is_file():
        raise UserError(f"{d} has no firmware project: rebuild with kd2mcu build ... --target {board.name}")
    if inputs is not None:
        data = load_npz(inputs, "--inputs")
        if data.steps > model.max_steps:
            raise UserError(f"--inputs {inputs}: sequences have {data.steps} steps but the model was built for at "
                            f"most {model.max_steps}; rebuild with --max-steps {data.steps}")
        x_q, lengths, y = quantize_data(model, data), data.lengths, data.y
    else:
        with np.load(project / VECTORS_FILE) as f:
            x_q, lengths, y = f["x_q"], f["lengths"], None
    N = len(x_q)
    lengths = np.full(N, x_q.shape[1], np.int64) if lengths is None else np.asarray(lengths, np.int64)
    ref = reference.run(model, x_q, lengths)
    sim, instructions, source, sizes = run_in_qemu(project, model, board, x_q, lengths, opt, timeout,
                                                   extra_cflags=PORTABLE_CFLAGS if portable else "")
    mismatches, first = compare(ref, sim)
    hz = float(board.emulator["systick_hz"])
    per_inference = float(instructions.mean())
    total_steps = float(lengths.mean())
    result = {
        "build": str(d), "target": board.name, "machine": board.emulator["machine"], "samples": N,
        "mismatches": mismatches, "first_mismatch": None if first is None else str(first),
        "compiler_flags": " ".join(board.cpu_flags) + f" {opt}" + (f" {PORTABLE_CFLAGS}" if portable else ""),
        "portable": portable,
        "kernel_path": kernel_path(board, portable),
        "instructions_per_inference": round(per_inference),
        "instructions_per_step": round(per_inference / max(total_steps, 1.0), 1),
        "measured_by": (f"SysTick at {hz / 1e6:g} MHz under qemu -icount shift=0 (1 instruction = 1 ns): "
                        f"instructions = ticks x {1e9 / hz:.3f}, resolution one tick" if source == "systick"
                        else "DWT cycle counter"),
        "flash_bytes": sizes["flash_bytes"], "ram_bytes": sizes["ram_bytes"],
        "size_note": "whole test firmware (arm-none-eabi-size: text+data, data+bss), test vectors included",
    }
    if y is not None:
        result["accuracy"] = float(np.mean(sim.logits.argmax(1) == y))
    tmp_path = d / f".{EMULATE_FILE}.tmp-{os.getpid()}"
    tmp_path.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp_path, d / EMULATE_FILE)
    return result
