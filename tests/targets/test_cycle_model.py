"""The memory-system cycle model (benchmarks/cycle_model/): its QEMU plugin sees exactly what SysTick
counts, its zero-wait figure is m4_cycles.py's, and its caches charge what they should."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from conftest import ROOT, require_arm, write_build

sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "benchmarks" / "cycle_model"))

import cycle_model  # noqa: E402

from kd2mcu.quant.random_model import ModelShape, random_model  # noqa: E402


def require_plugin_header():
    require_arm()
    if cycle_model.include_dir() is None:
        why = "QEMU's qemu-plugin.h is missing (scripts/setup.sh as root extracts it)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)


def test_the_trace_counts_what_systick_counts(tmp_path):
    require_plugin_header()
    import m4_cycles

    from kd2mcu.commands.emulate import emulate
    from kd2mcu.targets import firmware

    model = random_model(np.random.default_rng(41), ModelShape(input_size=6, hidden=16, steps=30))
    write_build(model, tmp_path / "b")
    x = np.random.default_rng(1).integers(-128, 128, (1, 30, 6)).astype(np.int8)
    firmware.set_vectors(model, tmp_path / "b" / "firmware", x, np.array([30]))
    r = emulate(tmp_path / "b", None, opt="-O2")  # in a copy of the project, with the same vectors
    elf = firmware.make(tmp_path / "b" / "firmware", emulate=True, opt="-O2")
    c = cycle_model.measure(elf, "kd2mcu_model_run", None, "stm32f405", "netduinoplus2")
    assert abs(c["instructions"] - r["instructions_per_inference"]) <= 0.01 * c["instructions"] + 20
    est = m4_cycles.trace_cycles(["qemu-system-arm", "-M", "netduinoplus2", "-nographic", "-monitor", "none",
                                  "-serial", "none", "-semihosting-config", "enable=on,target=native",
                                  "-kernel", str(elf)], elf, "kd2mcu_model_run", 1)
    assert c["zero_wait_cycles"] == pytest.approx(est["cycles"], rel=0.01)
    assert c["with_wait_cycles"] > c["zero_wait_cycles"] and c["data_stall_cycles"] > 0


def _records(pcs_and_loads):
    rows = []
    for pc, loads in pcs_and_loads:
        rows.append((0, pc))
        rows += [(1 | (4 << 8), a) for a in loads]
    return np.array(rows, np.uint32)


def test_the_data_cache_charges_one_miss_per_line():
    mem = cycle_model.BOARDS["stm32f405"]
    table = {0x2000_0000: (4, "ldr", "r0, [r1], #4"), 0x2000_0004: (2, "b", "0x20000000")}
    # 64 word loads streaming through flash: one miss per 16-byte line; then the same from SRAM: none
    flash = [(0x2000_0000 if k % 2 == 0 else 0x2000_0004, [0x0800_1000 + 4 * (k // 2)] if k % 2 == 0 else [])
             for k in range(128)]
    r = cycle_model.model(_records(flash), table, mem, 1)
    assert r["flash_data_reads"] == 64 and r["flash_data_misses"] == 16 and r["data_stall_cycles"] == 16 * mem.ws
    sram = [(pc, [0x2000_1000 + (a[0] - 0x0800_1000)] if a else []) for pc, a in flash]
    r = cycle_model.model(_records(sram), table, mem, 1)
    assert r["data_stall_cycles"] == 0 and r["fetch_stall_cycles"] == 0  # code in SRAM, data in SRAM


def test_instruction_fetch_misses_then_hits_the_cache():
    mem = cycle_model.BOARDS["stm32f405"]
    table = {0x0800_0000 + 16 * k: (2, "nop", "") for k in range(4)}
    table[0x0800_0040] = (2, "b", "0x8000000")
    loop = [(0x0800_0000 + 16 * k, []) for k in range(4)] + [(0x0800_0040, [])]
    r = cycle_model.model(_records(loop * 10), table, mem, 1)
    assert r["icache_line_misses"] == 1  # the first line; the next ones come sequentially, then all are cached
    assert 0 < r["fetch_stall_cycles"] <= mem.ws + 4 * (mem.ws + 1)
