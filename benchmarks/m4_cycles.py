"""Estimated Cortex-M4 cycles of the model code, from an execution trace in QEMU and a cost model.

QEMU runs the firmware with ``-d in_asm,exec,nochain``: every translated block's instructions are
logged once, and every execution of a block once more. Each executed instruction inside the model's
functions (symbols starting with the model name) is charged by instruction class, after the
Cortex-M4 TRM's table of instruction timings (zero wait states):

  ALU, MOV, shifts, MUL/MLA, SMLAD, SMMULR, SSAT, SXTB16, IT ........ 1
  LDR/STR (one register) ............................................. 2, or 1 right after another one
                                                                           (neighbouring loads/stores pipeline)
  LDRD/STRD .......................................................... 3
  LDM/STM/PUSH/POP of N registers .................................... 1 + N (POP into pc: + P)
  branch taken (B, BL, BX, CBZ, ...) ................................. 1 + P, P = 2 (the TRM's 1-3)
  branch not taken ................................................... 1
  SDIV/UDIV .......................................................... 7 (the TRM's 2-12)

Flash wait states (5 at 168 MHz on an STM32F405, mostly hidden by its ART prefetch and cache) are
not modelled: the figure is for zero-wait-state memory.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

BRANCH_REFILL = 2
_IN_LINE = re.compile(r"^0x([0-9a-f]+):\s+([0-9a-f]+(?: [0-9a-f]+)?)\s+(\S+)\s*(.*)$")
_EXEC_LINE = re.compile(r"^Trace \d+: 0x[0-9a-f]+ \[[0-9a-f]+/([0-9a-f]+)/")


def _registers(operands: str) -> int:
    m = re.search(r"\{([^}]*)\}", operands)
    if not m:
        return 1
    n = 0
    for part in m.group(1).split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-")
            n += int(b.strip()[1:]) - int(a.strip()[1:]) + 1
        elif part:
            n += 1
    return n


def _base(mnemonic: str) -> str:
    m = mnemonic.lower().split(".")[0]
    # strip condition codes of conditional instructions inside IT blocks (addge, rsblt, ...)
    for cc in ("eq", "ne", "cs", "cc", "hs", "lo", "mi", "pl", "vs", "vc", "hi", "ls", "ge", "lt", "gt", "le", "al"):
        if m.endswith(cc) and m[:-2] in _KNOWN:
            return m[:-2]
    return m


_KNOWN = {"add", "adds", "sub", "subs", "rsb", "rsbs", "mov", "movs", "addw", "subw", "mvn", "lsl", "lsls", "asr",
          "asrs", "lsr", "lsrs", "and", "ands", "orr", "orrs", "eor", "eors", "b", "bx", "ldr", "str", "ldrh", "strh",
          "ldrb", "strb", "cmp", "cmn", "bic", "mul", "mla", "ssat", "sbfx", "ubfx", "it", "uxth", "sxth"}


def cost(mnemonic: str, operands: str, taken: bool, after_single_mem: bool) -> int:
    m = _base(mnemonic)
    if m.startswith(("ldrd", "strd")):
        return 3
    if m.startswith(("ldm", "stm", "push", "pop")):
        n = _registers(operands)
        return 1 + n + (BRANCH_REFILL if m.startswith(("pop", "ldm")) and "pc" in operands else 0)
    if m.startswith(("ldr", "str")):
        return 1 if after_single_mem else 2
    if m in ("sdiv", "udiv"):
        return 7
    if m.startswith(("b", "cb")) and m not in ("bic", "bics", "bfi", "bfc") or (m.startswith("mov") and "pc" in operands.split(",")[0]):
        return 1 + BRANCH_REFILL if taken else 1
    return 1


def _is_single_mem(mnemonic: str) -> bool:
    m = _base(mnemonic)
    return m.startswith(("ldr", "str")) and not m.startswith(("ldrd", "strd", "ldm", "stm"))


def model_ranges(elf: Path, prefix: str) -> list[tuple[int, int]]:
    out = subprocess.run(["arm-none-eabi-nm", "-S", "--defined-only", str(elf)], capture_output=True, text=True,
                         check=True).stdout
    ranges = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in "tT" and parts[3].startswith(prefix):
            start, size = int(parts[0], 16) & ~1, int(parts[1], 16)
            ranges.append((start, start + size))
    return sorted(ranges)


def trace_cycles(qemu_cmd: list[str], elf: Path, prefix: str, inferences: int, timeout: float = 900.0) -> dict:
    """Run ``qemu_cmd`` (which boots ``elf``) with execution tracing and charge the model's instructions."""
    ranges = model_ranges(elf, prefix)
    starts = np.array([r[0] for r in ranges])
    ends = np.array([r[1] for r in ranges])

    def inside(pc: int) -> bool:
        k = np.searchsorted(starts, pc, side="right") - 1
        return k >= 0 and pc < ends[k]

    with tempfile.TemporaryDirectory(prefix="kd2mcu-trace-") as tmp:
        log = Path(tmp) / "trace.log"
        cmd = [c for c in qemu_cmd]
        cmd[1:1] = ["-d", "in_asm,exec,nochain", "-D", str(log)]
        subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        blocks: dict[int, list] = {}
        executed: Counter = Counter()
        transitions: Counter = Counter()
        current = None
        prev_pc = None
        with open(log) as f:
            for line in f:
                if line.startswith("Trace "):
                    m = _EXEC_LINE.match(line)
                    if m:
                        pc = int(m.group(1), 16)
                        executed[pc] += 1
                        if prev_pc is not None:
                            transitions[(prev_pc, pc)] += 1
                        prev_pc = pc
                    current = None
                elif line.startswith("IN:"):
                    current = []
                elif current is not None:
                    m = _IN_LINE.match(line.strip())
                    if m:
                        pc = int(m.group(1), 16)
                        size = len(m.group(2).replace(" ", "")) // 2
                        if not current:
                            blocks[pc] = current
                        current.append((pc, size, m.group(3), m.group(4)))
                    elif not line.strip():
                        current = None
    cycles = 0
    instructions = 0
    classes: Counter = Counter()
    for (src, dst), n in transitions.items():
        block = blocks.get(src)
        if not block:
            continue
        last_pc, last_size = block[-1][0], block[-1][1]
        taken_last = dst != last_pc + last_size
        after = False
        for k, (pc, size, mnem, ops) in enumerate(block):
            c = cost(mnem, ops, taken_last and k == len(block) - 1, after)
            after = _is_single_mem(mnem)
            if inside(pc):
                cycles += c * n
                instructions += n
                classes[_base(mnem)] += n
    return {"cycles": cycles / inferences, "instructions": instructions / inferences,
            "cycles_per_instruction": cycles / max(instructions, 1),
            "top_classes": classes.most_common(8)}


def estimate(project: Path, model, board, x_q, lengths, opt: str, prefix: str, extra_cflags: str = "") -> dict:
    """Build the firmware for ``x_q`` and estimate the model's cycles per inference."""
    from kd2mcu.emulate import qemu_command, set_vectors
    from kd2mcu.firmware import make

    with tempfile.TemporaryDirectory(prefix="kd2mcu-cycles-") as tmp:
        work = Path(tmp) / "firmware"
        shutil.copytree(project, work, ignore=shutil.ignore_patterns("build"))
        set_vectors(model, work, x_q, lengths)
        elf = make(work, emulate=True, opt=opt, extra_cflags=extra_cflags)
        return trace_cycles(qemu_command(board.emulator["machine"], elf), elf, prefix, len(x_q))
