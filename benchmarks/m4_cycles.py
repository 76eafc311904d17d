"""Estimated Cortex-M4 cycles of the model code, from an execution trace in QEMU and a cost model.

QEMU runs the firmware with ``-d in_asm,exec,nochain``: every translated block's instructions are
logged once, and every execution of a block once more. Each instruction executed from the entry of
the model's run function until the return to its caller is charged by instruction class, after the
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


def _symbol(elf: Path, name: str) -> tuple[int, int]:
    out = subprocess.run(["arm-none-eabi-nm", "-S", "--defined-only", str(elf)], capture_output=True, text=True,
                         check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[3] == name:
            start = int(parts[0], 16) & ~1
            return start, start + int(parts[1], 16)
    raise RuntimeError(f"{name} not found in {elf}")


def trace_cycles(qemu_cmd: list[str], elf: Path, entry: str, inferences: int, timeout: float = 900.0) -> dict:
    """Run ``qemu_cmd`` (which boots ``elf``) with execution tracing and charge every instruction executed
    from the entry of the function ``entry`` until control is back in its caller (helpers, libc and
    interrupts in between included, as the SysTick count includes them)."""
    entry_pc = _symbol(elf, entry)[0]
    with tempfile.TemporaryDirectory(prefix="kd2mcu-trace-") as tmp:
        log = Path(tmp) / "trace.log"
        # No -icount here: with it QEMU re-translates some blocks as single instructions, and the
        # log's blocks are keyed by guest address alone.
        cmd = [c for k, c in enumerate(qemu_cmd) if c != "-icount" and (k == 0 or qemu_cmd[k - 1] != "-icount")]
        cmd[1:1] = ["-d", "in_asm,exec,nochain", "-D", str(log)]
        subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        blocks: dict[int, list] = {}
        sequence: list[int] = []
        current = None
        with open(log) as f:
            for line in f:
                if line.startswith("Trace "):
                    m = _EXEC_LINE.match(line)
                    if m:
                        sequence.append(int(m.group(1), 16))
                    current = None
                elif line.startswith("IN:"):
                    current = []
                elif current is not None:
                    m = _IN_LINE.match(line.strip())
                    if m:
                        pc = int(m.group(1), 16)
                        if not current:
                            blocks[pc] = current
                        current.append((pc, len(m.group(2).replace(" ", "")) // 2, m.group(3), m.group(4)))
                    elif not line.strip():
                        current = None
    transitions: Counter = Counter()
    calls = 0
    k = 0
    while k < len(sequence):
        if sequence[k] != entry_pc or k == 0:
            k += 1
            continue
        # the caller's return address: the instruction after the block that branched here
        caller = blocks[sequence[k - 1]][-1]
        back = caller[0] + caller[1]
        calls += 1
        while k + 1 < len(sequence) and sequence[k + 1] != back:
            transitions[(sequence[k], sequence[k + 1])] += 1
            k += 1
        if k + 1 < len(sequence):
            transitions[(sequence[k], sequence[k + 1])] += 1
        k += 1
    cycles = 0
    instructions = 0
    classes: Counter = Counter()
    for (src, dst), n in transitions.items():
        block = blocks[src]
        last_pc, last_size = block[-1][0], block[-1][1]
        taken_last = dst != last_pc + last_size
        after = False
        for j, (pc, size, mnem, ops) in enumerate(block):
            cycles += cost(mnem, ops, taken_last and j == len(block) - 1, after) * n
            after = _is_single_mem(mnem)
            instructions += n
            classes[_base(mnem)] += n
    if calls != inferences:
        raise RuntimeError(f"traced {calls} calls of {entry}, expected {inferences}")
    return {"cycles": cycles / inferences, "instructions": instructions / inferences,
            "cycles_per_instruction": cycles / max(instructions, 1), "top_classes": classes.most_common(8)}


def estimate(project: Path, model, board, x_q, lengths, opt: str, entry: str, extra_cflags: str = "") -> dict:
    """Build the firmware for ``x_q`` and estimate the model's cycles per inference."""
    from kd2mcu.targets.firmware import make, set_vectors
    from kd2mcu.targets.qemu import qemu_command

    with tempfile.TemporaryDirectory(prefix="kd2mcu-cycles-") as tmp:
        work = Path(tmp) / "firmware"
        shutil.copytree(project, work, ignore=shutil.ignore_patterns("build"))
        set_vectors(model, work, x_q, lengths)
        elf = make(work, emulate=True, opt=opt, extra_cflags=extra_cflags)
        return trace_cycles(qemu_command(board.emulator["machine"], elf), elf, entry, len(x_q))
