"""A memory-system-aware Cortex-M cycle model for any firmware ELF, from a QEMU execution trace.

QEMU runs the ELF with the TCG plugin ``memtrace.c`` (built here on first use against QEMU 7.2's
``qemu-plugin.h``, which ``scripts/setup.sh`` extracts from Debian's qemu source package), which records,
between an instruction at ``--start`` and one at ``--end``, every executed instruction's address and
every memory access's address and size. Each instruction is charged its Cortex-M4 cost by instruction
class (``benchmarks/m4_cycles.py``: the Cortex-M4 TRM's timings, zero wait states), then the stalls of
the memory system of ``--board`` are added:

- **Instruction fetch** from flash through the flash accelerator: code is fetched in lines of
  ``line`` bytes (128 bits on the F405: RM0090 section 3.5.2, "ART accelerator"); a line in the
  instruction cache (``icache`` lines, modelled fully associative with LRU replacement: the reference
  manual gives the size, not the organisation) costs nothing; the next sequential line costs nothing if
  the prefetch buffer had the ``ws + 1`` cycles a flash read takes while the previous line executed,
  else the cycles still missing; any other line stalls ``ws`` cycles (``ws`` = wait states at the
  board's clock: RM0090 Table 10, 5 at 168 MHz and 2.7-3.6 V).
- **Data reads** from flash (constants and weights): a line in the data cache (``dcache`` lines, LRU)
  costs nothing, any other stalls ``ws`` cycles and is filled (the ART has no data prefetch).
- Reads from SRAM, CCM, TCM and peripherals, and all writes, stall nothing (zero-wait SRAM; writes are
  buffered).
Not modelled: contention between instruction and data fetches on the flash interface, the Cortex-M4's
own 3-word prefetch queue, bus matrix arbitration, and interrupts (the region has none).

The L476 is modelled the same way with its ART's geometry (RM0351 section 3.3: 4 wait states at 80 MHz,
instruction cache 32 lines and data cache 8 lines of 4 x 64 bits). The F746 (RM0385) runs code from
flash over AXI through its 4 KB L1 caches (32-byte lines, modelled as 128 lines each) with 7 wait
states at 216 MHz: a coarse model (no ART on the ITCM path, no line-fill burst timing).

Zero-wait and with-wait cycles are reported side by side. The tool takes any ELF: another kernel
(CMSIS-NN's ``arm_lstm_unidirectional_s8``, built elsewhere) runs through the same model with
``--start arm_lstm_unidirectional_s8`` (from the function's entry until it returns to any of its
callers) or explicit ``--start ADDR --end ADDR``.

Run: .venv/bin/python benchmarks/cycle_model/cycle_model.py ELF --start SYMBOL [--end SYMBOL|ADDR ...]
     [--board stm32f405] [--machine netduinoplus2] [--count N] [--json]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import m4_cycles  # noqa: E402  (the instruction-class costs)

ROOT = HERE.parents[1]
PLUGIN_SOURCE = HERE / "memtrace.c"


@dataclass(frozen=True)
class MemorySystem:
    name: str
    clock_hz: int
    ws: int  # flash wait states at that clock
    line: int  # bytes per cache / prefetch line
    icache: int  # instruction cache lines
    dcache: int  # data cache lines
    prefetch: bool
    flash: tuple  # (origin, size) ranges that are flash (the boot alias included)
    source: str


BOARDS = {
    "stm32f405": MemorySystem("stm32f405", 168_000_000, 5, 16, 64, 8, True,
                              ((0x0800_0000, 1 << 20), (0x0000_0000, 1 << 20)),
                              "RM0090 3.5.2 (ART: 64 lines of 128 bits I-cache, 8 lines D-cache, prefetch), Table 10"),
    "stm32l476": MemorySystem("stm32l476", 80_000_000, 4, 32, 32, 8, True,
                              ((0x0800_0000, 1 << 20), (0x0000_0000, 1 << 20)),
                              "RM0351 3.3.3-3.3.4 (I-cache 32 lines, D-cache 8 lines of 4 x 64 bits), Table 11"),
    "stm32f746": MemorySystem("stm32f746", 216_000_000, 7, 32, 128, 128, False,
                              ((0x0800_0000, 1 << 20), (0x0020_0000, 1 << 20)),
                              "RM0385 3.3.2 (7 wait states at 216 MHz); Cortex-M7 L1 caches 4 KB each, 32-byte lines"),
}


def include_dir() -> Optional[Path]:
    """Where QEMU 7.2's qemu-plugin.h is: $KD2MCU_QEMU_PLUGIN_INCLUDE, or what scripts/setup.sh extracted."""
    for d in (os.environ.get("KD2MCU_QEMU_PLUGIN_INCLUDE"), ROOT / ".venv" / "qemu-plugin"):
        if d and (Path(d) / "qemu-plugin.h").is_file():
            return Path(d)
    return None


def plugin() -> Path:
    """The memtrace plugin, built once per source and header into ~/.cache/kd2mcu."""
    inc = include_dir()
    if inc is None:
        raise SystemExit("cycle_model: QEMU's qemu-plugin.h not found: run scripts/setup.sh as root (it extracts it "
                         "from Debian's qemu source package) or set KD2MCU_QEMU_PLUGIN_INCLUDE")
    key = hashlib.sha256(PLUGIN_SOURCE.read_bytes() + (inc / "qemu-plugin.h").read_bytes()).hexdigest()[:16]
    out = Path.home() / ".cache" / "kd2mcu" / f"memtrace-{key}.so"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-I", str(inc),
                        str(PLUGIN_SOURCE), "-o", str(tmp)], check=True)
        os.replace(tmp, out)
    return out


def _symbols(elf: Path) -> dict:
    out = subprocess.run(["arm-none-eabi-nm", "--defined-only", str(elf)], capture_output=True, text=True,
                         check=True).stdout
    return {p[2]: int(p[0], 16) & ~1 for p in (ln.split() for ln in out.splitlines()) if len(p) == 3}


def _address(elf: Path, what: str) -> int:
    if re.fullmatch(r"(0x)?[0-9a-fA-F]+", what) and what not in _symbols(elf):
        return int(what, 16)
    try:
        return _symbols(elf)[what]
    except KeyError:
        raise SystemExit(f"cycle_model: {what} is neither an address nor a symbol of {elf}") from None


def return_sites(elf: Path, function: str) -> list[int]:
    """The addresses right after every BL/BLX to ``function``: where a call of it returns."""
    target = _address(elf, function)
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", str(elf)], capture_output=True, text=True, check=True).stdout
    sites = []
    for line in dis.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\s+((?:[0-9a-f]{4} ?)+)\s+blx?\s+([0-9a-f]+)", line)
        if m and int(m.group(3), 16) == target:
            sites.append(int(m.group(1), 16) + len(m.group(2).replace(" ", "")) // 2)
    if not sites:
        raise SystemExit(f"cycle_model: no call of {function} in {elf}; give --end")
    return sites


def trace(elf: Path, machine: str, start: int, ends: list[int], count: int, timeout: float = 900.0):
    """(executed instructions with their memory accesses, disassembly by address) of ``count`` regions."""
    qemu = shutil.which("qemu-system-arm")
    if qemu is None:
        raise SystemExit("cycle_model: qemu-system-arm not found")
    with tempfile.TemporaryDirectory(prefix="kd2mcu-memtrace-") as tmp:
        out, dis = Path(tmp) / "trace.bin", Path(tmp) / "disas.txt"
        args = ",".join([f"{plugin()}", f"out={out}", f"disas={dis}", f"start={start:x}", f"count={count}",
                         *(f"end={e:x}" for e in ends)])
        subprocess.run([qemu, "-M", machine, "-nographic", "-monitor", "none", "-serial", "none",
                        "-semihosting-config", "enable=on,target=native", "-plugin", args, "-kernel", str(elf)],
                       capture_output=True, timeout=timeout, check=False)
        records = np.fromfile(out, "<u4").reshape(-1, 2) if out.is_file() else np.zeros((0, 2), np.uint32)
        table = {}
        for line in dis.read_text().splitlines():
            pc, size, text = line.split(" ", 2)
            mnem, _, ops = text.partition(" ")
            table[int(pc, 16)] = (int(size), mnem, ops.strip())
    return records, table


class LRU:
    def __init__(self, lines: int):
        self.lines, self.d = lines, OrderedDict()

    def hit(self, line: int) -> bool:
        """Whether ``line`` is cached; it becomes the most recent either way."""
        if line in self.d:
            self.d.move_to_end(line)
            return True
        self.d[line] = True
        if len(self.d) > self.lines:
            self.d.popitem(last=False)
        return False


def model(records: np.ndarray, table: dict, mem: MemorySystem, regions: int) -> dict:
    """Charge the trace: zero-wait cycles by instruction class, plus the memory system's stalls."""
    def in_flash(a):
        return any(o <= a < o + s for o, s in mem.flash)

    icache, dcache = LRU(mem.icache), LRU(mem.dcache)
    kinds, addrs = records[:, 0], records[:, 1].astype(np.int64)
    insn_rows = np.flatnonzero((kinds & 0xFF) == 0)
    base = fetch_stall = data_stall = 0
    data_reads = data_misses = fetch_lines = fetch_misses = 0
    after_mem = False
    line_now, since_line = None, 0
    for j, row in enumerate(insn_rows):
        pc = int(addrs[row])
        size, mnem, ops = table[pc]
        nxt = int(addrs[insn_rows[j + 1]]) if j + 1 < len(insn_rows) else pc + size
        c = m4_cycles.cost(mnem, ops, nxt != pc + size, after_mem)
        after_mem = m4_cycles._is_single_mem(mnem)
        base += c
        if in_flash(pc):  # instruction fetch, by line
            line = pc // mem.line
            if line != line_now:
                fetch_lines += 1
                cached = icache.hit(line)
                if not cached:
                    if mem.prefetch and line_now is not None and line == line_now + 1:
                        fetch_stall += max(0, mem.ws + 1 - since_line)
                    else:
                        fetch_stall += mem.ws
                        fetch_misses += 1
                line_now, since_line = line, 0
        stop = insn_rows[j + 1] if j + 1 < len(insn_rows) else len(records)
        for r in range(row + 1, stop):  # this instruction's memory accesses
            if (kinds[r] & 0xFF) == 1 and in_flash(int(addrs[r])):
                data_reads += 1
                if not dcache.hit(int(addrs[r]) // mem.line):
                    data_stall += mem.ws
                    data_misses += 1
        since_line += c
    n = len(insn_rows)
    per = max(regions, 1)
    return {"board": mem.name, "clock_hz": mem.clock_hz, "wait_states": mem.ws, "regions": regions,
            "instructions": n / per, "zero_wait_cycles": base / per,
            "with_wait_cycles": (base + fetch_stall + data_stall) / per,
            "fetch_stall_cycles": fetch_stall / per, "data_stall_cycles": data_stall / per,
            "flash_data_reads": data_reads / per, "flash_data_misses": data_misses / per,
            "icache_line_misses": fetch_misses / per, "fetched_lines": fetch_lines / per,
            "ms_with_wait": (base + fetch_stall + data_stall) / per / mem.clock_hz * 1e3, "assumptions": mem.source}


def measure(elf: Path, start: str, ends: Optional[list[str]], board: str, machine: str, count: int = 1) -> dict:
    elf = Path(elf)
    start_pc = _address(elf, start)
    end_pcs = [_address(elf, e) for e in ends] if ends else return_sites(elf, start)
    records, table = trace(elf, machine, start_pc, end_pcs, count)
    if not len(records):
        raise SystemExit(f"cycle_model: the region from {start} never ran in {elf}")
    return model(records, table, BOARDS[board], count)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("elf", type=Path)
    ap.add_argument("--start", required=True, help="symbol or hex address where the region begins")
    ap.add_argument("--end", action="append", help="symbol or hex address where it ends (default: every return "
                                                  "site of the --start function)")
    ap.add_argument("--board", default="stm32f405", choices=sorted(BOARDS))
    ap.add_argument("--machine", default="netduinoplus2", help="the QEMU machine that runs the ELF")
    ap.add_argument("--count", type=int, default=1, help="regions to trace (results are per region)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    r = measure(a.elf, a.start, a.end, a.board, a.machine, a.count)
    if a.json:
        print(json.dumps(r))
        return
    for k, v in r.items():
        print(f"{k:>20}  {v:,.1f}" if isinstance(v, float) else f"{k:>20}  {v}")


if __name__ == "__main__":
    main()
