"""QEMU as a target: the firmware project, cross-compiled with its test vectors baked into flash, run
in qemu-system-arm; the outputs it prints over semihosting parsed back.

Timing: QEMU's DWT cycle counter reads zero, so the firmware times each inference with SysTick on the
core clock; under ``-icount shift=0`` every instruction advances QEMU's virtual clock by exactly 1 ns,
so instructions ~= ticks * 1e9 / SysTick frequency (seen within 0.3% of exact counts; the resolution
is one tick, about 6 instructions at 168 MHz).
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from kd2mcu.errors import UserError
from kd2mcu.interrupt import raise_from_now_on
from kd2mcu.quant.intmodel import IntModel
from kd2mcu.targets.firmware import elf_size, make, set_vectors
from kd2mcu.targets.hostsim import SimResult

BATCH_INPUT_BYTES = 256 * 1024  # test-vector data per firmware image


def qemu_command(machine: str, elf: Path) -> list[str]:
    qemu = shutil.which("qemu-system-arm")
    if qemu is None:
        raise UserError("qemu-system-arm not found: install it (apt-get install qemu-system-arm; scripts/setup.sh "
                        "does it as root)")
    return [qemu, "-M", machine, "-nographic", "-monitor", "none", "-serial", "none",
            "-semihosting-config", "enable=on,target=native", "-icount", "shift=0", "-kernel", str(elf)]


def parse_output(text: str, model: IntModel, count: int, raw: bool = False) -> tuple[SimResult, np.ndarray, str]:
    """The firmware's lines -> (outputs, timer ticks per sample net of the timer's own cost, timer source);
    ``raw``: each line ends in the hash of the int8 inputs the firmware quantized (``SimResult.x_q``)."""
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
    hashes = np.zeros(count, np.uint32)
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
        if raw:
            hashes[n] = int(row[7], 16)
    return SimResult(rc, logits, h, c, x_q=list(hashes) if raw else None), ticks, source


def input_hash(x_q: np.ndarray) -> int:
    """FNV-1a (32 bits) of int8 inputs in memory order: what the firmware prints for raw test vectors."""
    h = 2166136261
    for b in np.asarray(x_q, np.int8).view(np.uint8).ravel().tolist():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


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
                timeout: float = 600.0, extra_cflags: str = "", raw=None):
    """Run int8 inputs through a copy of the firmware project in QEMU, in batches that fit in flash.
    ``raw`` ("float" or "i16"): x_q holds raw samples, quantized by the firmware with the model's own
    pre-processing; ("utf8"): x_q holds UTF-8 bytes [N, longest] and lengths their counts, encoded by
    NAME_encode_utf8; the outputs' ``x_q`` then holds the hash of what it made, per sample (``input_hash``
    of the int8 inputs, or of the int32 token ids' bytes).

    Returns (outputs, instructions per sample, timer source, arm-none-eabi-size of the first image).
    """
    stride = 1 if model.is_token_model or raw == "utf8" else model.input_size
    item = {"float": 4, "i16": 2, "utf8": 1}.get(raw, 4 if model.is_token_model else 1)
    parts, tick_parts, source, sizes = [], [], "", None
    raise_from_now_on()  # a Ctrl-C from here on must unwind, to remove the work folder
    with tempfile.TemporaryDirectory(prefix="kd2mcu-emulate-") as tmp:
        work = Path(tmp) / "firmware"
        shutil.copytree(project, work, ignore=shutil.ignore_patterns("build"))
        for sl in _batches(lengths, stride, item):
            set_vectors(model, work, x_q[sl], lengths[sl], raw)
            elf = make(work, emulate=True, opt=opt, extra_cflags=extra_cflags)
            sizes = sizes or elf_size(elf)
            try:
                proc = subprocess.run(qemu_command(board.emulator["machine"], elf), capture_output=True, text=True,
                                      timeout=timeout)
            except subprocess.TimeoutExpired:
                raise UserError(f"QEMU did not finish within {timeout:.0f} s") from None
            res, ticks, source = parse_output(proc.stdout + proc.stderr, model, sl.stop - sl.start, raw is not None)
            parts.append(res)
            tick_parts.append(ticks)
    sim = SimResult(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("rc", "logits", "h", "c")))
    if raw is not None:
        sim.x_q = [v for p in parts for v in p.x_q]
    ticks = np.concatenate(tick_parts).astype(np.float64)
    instructions = ticks * (1e9 / float(board.emulator["systick_hz"])) if source == "systick" else ticks
    return sim, instructions, source, sizes
