"""``kd2mcu validate DIR --port PORT``: the board firmware's serial runner, checked bit for bit.

Builds the board firmware of the build folder (the part's full clock, the serial runner of
``kd2mcu.targets.serial_link``; it programs nothing: ``kd2mcu flash DIR`` does), streams every input
vector to the board over the port, and compares every logit, hidden and cell value with the Python
reference; reports mismatches, accuracy and the cycles the board measured. ``--qemu`` runs the same
board firmware in qemu-system-arm with the emulated STM32's USART on a pty, and talks to it through
the very same code path: what CI checks without a board.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

import click
import numpy as np

from kd2mcu.codegen.buildfolder import MODEL_FILE, VALIDATE_FILE, find_build, read_build_info
from kd2mcu.commands.emulate import board_inputs
from kd2mcu.errors import UserError
from kd2mcu.outputs import write_file_atomically
from kd2mcu.quant import reference
from kd2mcu.quant.intmodel import IntModel
from kd2mcu.targets.firmware import DEFAULT_BOARD, FIRMWARE_DIR, load_board, make
from kd2mcu.targets.hostsim import SimResult, compare
from kd2mcu.targets.serial_link import Link, check_board

# QEMU's STM32F2/F4 machines connect USART1, USART2, ... to -serial 0, 1, ...
QEMU_USARTS = {"0x40011000u": 0, "0x40004400u": 1, "0x40004800u": 2}
QEMU_MACHINES = ("netduinoplus2", "netduino2")


def validate(build_dir, port: Optional[str] = None, baud: int = 115200, inputs=None, timeout: float = 10.0,
             qemu: bool = False, opt: str = "-Os") -> dict:
    d = find_build(build_dir)
    model = IntModel.load(d / MODEL_FILE)
    board = load_board(read_build_info(d).get("target", DEFAULT_BOARD))
    project = d / FIRMWARE_DIR
    if not (project / "Makefile").is_file():
        raise UserError(f"{d} has no firmware project: rebuild with kd2mcu build ... --target {board.name}")
    if (port is None) == (not qemu):
        raise UserError("give either --port PORT (a board running this build's firmware) or --qemu")
    _, x_q, lengths, y, clipped = board_inputs(model, inputs, project)
    N = len(x_q)
    # QEMU has no CCM: a build with its weights there runs in QEMU linked with the emulator's memory map
    in_ccm = read_build_info(d).get("weights") == "ram" and "fast_ram_origin" in board.memory
    elf = make(project, emulate=False, opt=opt, emulator_memory=qemu and in_ccm)
    if qemu:
        with _qemu_pty(board, elf) as pty:
            info, sim, ticks = _stream(pty, baud, timeout, model, x_q, lengths)
    else:
        info, sim, ticks = _stream(port, baud, timeout, model, x_q, lengths)
    mismatches, first = compare(reference.run(model, x_q, lengths), sim)
    result = {
        "build": str(d), "target": board.name, "port": "qemu (pty)" if qemu else port, "samples": N,
        "mismatches": mismatches, "first_mismatch": None if first is None else str(first),
        "firmware": str(elf), "core_hz": info.core_hz, "timer": info.timer,
        "ticks_per_inference": float(ticks.mean()), "ticks_max": int(ticks.max(initial=0)),
        "steps_per_inference": float(lengths.mean()),
    }
    if qemu:
        hz = float(board.emulator["systick_hz"])
        result["timing_note"] = (f"emulated: QEMU models no STM32 clock tree (the PLL did not lock, the board reported "
                                 f"{info.core_hz / 1e6:g} MHz) and its SysTick counts {hz / 1e6:g} MHz ticks under "
                                 "-icount shift=0: instructions = ticks x "
                                 f"{1e9 / hz:.3f}, not a board's cycles")
        result["instructions_per_inference"] = float(ticks.mean()) * 1e9 / hz
    else:
        result["cycles_per_inference"] = float(ticks.mean())  # DWT and SysTick both count core clock cycles
        result["ms_per_inference"] = float(ticks.mean()) / info.core_hz * 1e3 if info.core_hz else None
        result["ms_max"] = float(ticks.max(initial=0)) / info.core_hz * 1e3 if info.core_hz else None
    if y is not None:
        result["accuracy"] = float(np.mean(sim.logits.argmax(1) == y))
    result.update(clipped)
    try:
        write_file_atomically(d / VALIDATE_FILE, lambda tmp: tmp.write_text(json.dumps(result, indent=2) + "\n"))
    except UserError as exc:
        click.echo(f"kd2mcu: warning: {exc} (kd2mcu report will not show these cycles)", err=True)
    return result


def _stream(port: str, baud: int, timeout: float, model: IntModel, x_q, lengths):
    N, S, C = len(x_q), sum(model.state_sizes()), model.num_classes
    rc, logits = np.zeros(N, np.int32), np.zeros((N, C), np.int8)
    h, c, ticks = np.zeros((N, S), np.int8), np.zeros((N, S), np.int16), np.zeros(N, np.int64)
    with Link(port, baud, timeout) as link:
        info = link.hello()
        check_board(info, model, port)
        from tqdm import tqdm

        for n in tqdm(range(N), desc="validate", unit="sample", leave=False, disable=N <= 50, dynamic_ncols=True):
            rc[n], logits[n], h[n], c[n], ticks[n] = link.infer(model, x_q[n], int(lengths[n]))
    return info, SimResult(rc, logits, h, c), ticks


class _qemu_pty:
    """qemu-system-arm running the board firmware, its STM32 USART on a pty: the pty's path."""

    def __init__(self, board, elf: Path):
        machine = board.emulator["machine"]
        index = QEMU_USARTS.get(str(board.usart.get("USART_BASE", "")))
        if machine not in QEMU_MACHINES or index is None:
            raise UserError(f"--qemu: QEMU has no model of the {board.name}'s USART (the emulator stands in with "
                            f"{machine}); validate on the board with --port, or build for stm32f405 or stm32f205")
        qemu = shutil.which("qemu-system-arm")
        if qemu is None:
            raise UserError("qemu-system-arm not found: install it (apt-get install qemu-system-arm)")
        self.cmd = [qemu, "-M", machine, "-nographic", "-monitor", "none", *sum((["-serial", "null"]
                    for _ in range(index)), []), "-serial", "pty", "-icount", "shift=0", "-kernel", str(elf)]

    def __enter__(self) -> str:
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                     text=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            self.log.seek(0)
            m = re.search(r"char device redirected to (/dev/pts/\d+)", self.log.read())
            if m:
                return m.group(1)
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.__exit__()
        self.log.seek(0)
        raise UserError(f"QEMU did not start the board firmware: {self.log.read().strip()[:300] or 'no output'}")

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()
        self.log.close()
