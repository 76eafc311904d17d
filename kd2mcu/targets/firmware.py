"""The STM32 firmware project: ``DIR/firmware/``, built with make and arm-none-eabi-gcc.

A board is one file, ``firmware/boards/BOARD.json``: CPU flags, flash and RAM, the USART used for
output on hardware, the QEMU machine that stands in for it, and the OpenOCD target. The project
holds the static support from ``firmware/`` (startup, platform, linker script, Makefile), a copy of
the generated model in ``model/``, and a test ``main.c`` with test vectors in flash.
"""
from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import jinja2
import numpy as np

from kd2mcu import __version__
from kd2mcu.codegen.render import c_array
from kd2mcu.errors import UserError
from kd2mcu.quant.intmodel import IntModel
from kd2mcu.resources import resource_dir

DEFAULT_BOARD = "stm32f405"
FIRMWARE_DIR = "firmware"
STATIC_FILES = ["Makefile", "src/startup.c", "src/platform.c", "src/platform.h", "src/clock.c", "src/clock.h",
                "src/firmware.ld"]
VECTORS_FILE = "vectors.npz"
DEFAULT_VECTORS = 16


@dataclass
class Board:
    name: str
    description: str
    cpu_flags: list
    memory: dict
    usart: dict
    emulator: dict
    openocd_target: str
    flash_address: str
    core_clock_hz: int = 0  # the part's full core clock (the product's), for latency figures
    clock: dict = None  # the PLL, flash and bus settings for that clock (firmware/src/clock.c), as -D flags
    power: dict = None  # run-mode current at that clock with its datasheet source, for energy estimates
    fast_ram_gain: str = ""  # what the cycle model measured for weights in the fast RAM against flash


def memory_bytes(size: str) -> int:
    """A board file's memory size ("1024K", "96K", "2M", "4096") in bytes."""
    m = re.fullmatch(r"(\d+)([KM]?)", str(size))
    if m is None:
        raise RuntimeError(f"a board memory size must look like 1024K, got {size!r}")
    return int(m.group(1)) * {"": 1, "K": 1024, "M": 1024 * 1024}[m.group(2)]


def board_has_dsp(board: Board) -> bool:
    """Whether the generated C takes its DSP path for this board: what arm-none-eabi-gcc predefines for
    the board's CPU flags meets the condition in kd2mcu_int8.h (DSP extension, Thumb-2, M profile,
    GCC 10+). Cortex-M4, M7 and M33 do; M0+, M3 and '+nodsp' parts do not."""
    return _has_dsp(tuple(board.cpu_flags))


def kernel_path(board: Board, portable: bool) -> str:
    """The C path a build for ``board`` runs: the DSP path, or the portable one (forced or for lack of DSP)."""
    return "portable C" if portable or not board_has_dsp(board) else "DSP (SMLAD)"


@functools.lru_cache(maxsize=None)
def _has_dsp(cpu_flags: tuple) -> bool:
    out = subprocess.run([arm_tool("arm-none-eabi-gcc"), *cpu_flags, "-dM", "-E", "-x", "c", "-"], input="",
                         capture_output=True, text=True, check=True).stdout
    macros = dict(line.split(" ", 2)[1:] for line in out.splitlines() if line.count(" ") >= 2)
    return ("__ARM_FEATURE_DSP" in macros and "__thumb2__" in macros and macros.get("__ARM_ARCH_PROFILE") == "77"
            and int(macros.get("__GNUC__", "0")) >= 10)


def boards() -> list[str]:
    return sorted(p.stem for p in (resource_dir("firmware") / "boards").glob("*.json"))


def load_board(name: str) -> Board:
    """A board of the package's ``firmware/boards/``, by name only (never a path)."""
    if not isinstance(name, str) or name not in boards():
        raise UserError(f"unknown target {str(name)[:80]!r}: choose one of {', '.join(boards())}")
    d = json.loads((resource_dir("firmware") / "boards" / f"{name}.json").read_text())
    board = Board(d["name"], d["description"], d["cpu_flags"], d["memory"], d["usart"], d["emulator"],
                  d["openocd_target"], d["flash_address"], int(d.get("core_clock_hz", 0)), dict(d.get("clock", {})), d.get("power"),
                  str(d.get("fast_ram_gain", "")))
    _check_board(board)
    return board


_WORD = re.compile(r"[A-Za-z0-9_.,:/+=-]+")  # flags, addresses, sizes, names: they reach make and the linker
_C_EXPR = re.compile(r"[A-Za-z0-9_ ()<>|&~+*x-]+")  # USART register values: C constant expressions


def _check_board(board: Board) -> None:
    """Board values end up in board.mk (inside '...' in make's shell), memory.ld and tool arguments:
    plain words and C constant expressions only, never a quote, $, backslash or ;."""
    words = [board.name, *board.cpu_flags, board.openocd_target, board.flash_address,
             *map(str, board.memory.values()), *map(str, board.emulator["memory"].values()),
             str(board.emulator["machine"]), *map(str, board.usart.keys())]
    bad = [v for v in words if not _WORD.fullmatch(v)] + \
        [v for v in map(str, board.usart.values()) if not _C_EXPR.fullmatch(v)] + \
        [v for v in map(str, [*(board.clock or {}).keys(), *(board.clock or {}).values()]) if not _WORD.fullmatch(v)]
    if bad:
        raise RuntimeError(f"board file {board.name}.json holds a value kd2mcu will not pass to make: {bad[0]!r}")


def _memory_ld(mem: dict) -> str:
    """MEMORY: FLASH and RAM, and the fast data RAM for --weights ram (``fast_ram_*``: CCM on the F405) as
    WEIGHTS_RAM, which is RAM where the board (or QEMU's model of it) has none."""
    fast = "fast_ram_origin" in mem
    return ("/* Generated by kd2mcu from the board file. */\nMEMORY\n{\n"
            f"    FLASH (rx) : ORIGIN = {mem['flash_origin']}, LENGTH = {mem['flash_size']}\n"
            f"    RAM (rwx) : ORIGIN = {mem['ram_origin']}, LENGTH = {mem['ram_size']}\n" +
            (f"    FAST_RAM (rw) : ORIGIN = {mem['fast_ram_origin']}, LENGTH = {mem['fast_ram_size']}\n" if fast else "") +
            f"}}\nREGION_ALIAS(\"WEIGHTS_RAM\", {'FAST_RAM' if fast else 'RAM'});\n")


WEIGHTS = ("flash", "ram", "split")
AUTO = "auto"


def choose_weights(board: Board, weight_bytes: int, layout: str = "fast") -> tuple[str, str]:
    """``--weights auto``: (flash, ram or split, why). The weights go to the board's core-coupled data RAM
    (``fast_ram_*`` in its file: the STM32F405's 64 KB CCM) when they fit it: no weight read then waits
    for a flash wait state, and that RAM is one an application rarely fills (no DMA reaches the F405's
    CCM). Where they do not fit it, its hottest part goes there (``split``: the activation tables, then the
    first units' weights) and the rest stays in flash. Everywhere else they stay in flash: a board's only
    RAM is the application's (``--weights ram`` or ``split`` still copy them there when asked). The board
    file's ``fast_ram_gain`` says what the memory-system cycle model (benchmarks/cycle_model/layouts.py)
    measured for the move."""
    mem = board.memory
    if "fast_ram_origin" not in mem:
        return "flash", (f"the {board.name}'s board file declares no core-coupled RAM, and its RAM is the "
                         "application's (--weights ram copies them there)")
    name, room = mem.get("fast_ram_name", "fast RAM"), memory_bytes(mem["fast_ram_size"])
    if weight_bytes > room:
        return "split", (f"they take {weight_bytes:,} B, more than the {board.name}'s {name} ({room:,} B): the "
                         f"activation tables and the first units' weights fill it, the rest stays in flash")
    gain = f"; for the fast layout the cycle model measured {board.fast_ram_gain}" \
        if board.fast_ram_gain and layout == "fast" else ""
    return "ram", (f"they fit the {board.name}'s {name}, {weight_bytes:,} of {room:,} B, which reads with no "
                   f"flash wait state{gain}")


def weights_ram_bytes(board: "Board") -> tuple[int, str]:
    """(bytes, name) of the RAM that --weights ram fills on the board: its fast RAM, else its RAM."""
    mem = board.memory
    if "fast_ram_origin" in mem:
        return memory_bytes(mem["fast_ram_size"]), mem.get("fast_ram_name", "fast RAM")
    return memory_bytes(mem["ram_size"]), "RAM"


def _board_mk(board: Board, weights: str = "flash") -> str:
    defines = " ".join(f"-DKD_{k}='{v}'" for k, v in board.usart.items())
    clock = dict(board.clock or {})
    family = clock.pop("FAMILY", None)
    clock_defines = " ".join(([f"-DKD_CLK_{family}"] if family else []) +
                             [f"-DKD_CLK_{k}='{v}'" for k, v in clock.items()])
    return (f"# Generated by kd2mcu from firmware/boards/{board.name}.json\n"
            f"BOARD := {board.name}\nCPU_FLAGS := {' '.join(board.cpu_flags)}\nUSART_DEFINES := {defines}\n"
            f"CLOCK_DEFINES := {clock_defines}\n"
            f"# the model's weights: flash, or copied to RAM at start-up (kd2mcu build --weights ram; split: the part\n"
            f"# the generated C marks KD2MCU_WEIGHTS, the rest stays in flash)\n"
            f"WEIGHTS_DEFINES :={' -DKD2MCU_WEIGHTS_IN_RAM' if weights in ('ram', 'split') else ''}\n")


def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(resource_dir("templates"))),
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True, autoescape=False)


RAW_KINDS = {None: 0, "float": 1, "i16": 2, "utf8": 3}  # KD_TV_RAW in test_vectors.h


def render_vectors(model: IntModel, x_q: np.ndarray, lengths: np.ndarray, raw: Optional[str] = None) -> str:
    """test_vectors.h: int8 inputs (token ids), or with ``raw`` raw samples the firmware quantizes with the
    model's own NAME_quantize_input ("float": float32 stored as their bit patterns, so that every value,
    NaN included, reaches the C exactly) or NAME_quantize_raw_i16 ("i16")."""
    steps = [int(v) for v in lengths]
    stride = 1 if model.is_token_model or raw == "utf8" else model.input_size
    offsets = np.concatenate([[0], np.cumsum(np.array(steps) * stride)[:-1]]).astype(np.int64)
    flat = np.concatenate([np.asarray(x_q[n, :steps[n]]).reshape(-1) for n in range(len(steps))])
    input_type = "int32_t" if model.is_token_model else "int8_t"
    if raw == "float":
        flat, input_type = flat.astype("<f4").view("<u4").astype(np.int64), "uint32_t"
    elif raw == "i16":
        input_type = "int16_t"
    elif raw == "utf8":  # bytes [N, longest] with their counts as lengths
        input_type = "uint8_t"
    return _env().get_template("test_vectors.h.j2").render(
        version=__version__, count=len(steps), steps=c_array(steps), offsets=c_array(offsets),
        total=max(len(flat), 1), inputs=c_array(flat), input_type=input_type, raw=RAW_KINDS[raw],
        max_steps=max(steps + [1]))


def write_project(model: IntModel, name: str, board: Board, src_dir: Path, out: Path,
                  x_q: np.ndarray, lengths: Optional[np.ndarray], weights: str = "flash") -> None:
    """Write the firmware project into ``out`` (DIR/firmware) with these test vectors baked in; ``weights``:
    where the model's weights live (flash, or RAM: copied there at start-up)."""
    fw = resource_dir("firmware")
    for rel in STATIC_FILES:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(fw / rel, out / rel)
    (out / "model").mkdir(parents=True, exist_ok=True)
    for p in sorted(Path(src_dir).iterdir()):
        shutil.copyfile(p, out / "model" / p.name)
    (out / "board.mk").write_text(_board_mk(board, weights))
    for variant, mem in (("board", board.memory), ("emulate", board.emulator["memory"])):
        (out / "ld" / variant).mkdir(parents=True, exist_ok=True)
        (out / "ld" / variant / "memory.ld").write_text(_memory_ld(mem))
    (out / "src" / "main.c").write_text(_env().get_template("firmware_main.c.j2").render(
        version=__version__, name=name, NAME=name.upper(), board=board.name))
    set_vectors(model, out, x_q, lengths)


def set_vectors(model: IntModel, out: Path, x_q: np.ndarray, lengths: Optional[np.ndarray],
                raw: Optional[str] = None) -> None:
    x_q = np.asarray(x_q)
    lengths = np.full(len(x_q), x_q.shape[1], np.int64) if lengths is None else np.asarray(lengths, np.int64)
    (out / "src" / "test_vectors.h").write_text(render_vectors(model, x_q, lengths, raw))
    if raw is None:  # the baked-in vectors emulate reads back (raw batches live only in emulate's copy)
        np.savez(out / VECTORS_FILE, x_q=x_q, lengths=lengths)


def arm_tool(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise UserError(f"{tool} not found: install the ARM toolchain (apt-get install gcc-arm-none-eabi "
                        "libnewlib-arm-none-eabi; scripts/setup.sh does it as root)")
    return path


def make(project: Path, emulate: bool, opt: str = "-Os", extra_cflags: str = "", emulator_memory: bool = False) -> Path:
    """Build the firmware; return the .elf. ``emulator_memory``: the board firmware linked with the emulator's
    memory map (into build/qemu/: QEMU's STM32F405 has no CCM, so weights placed there go to SRAM)."""
    arm_tool("arm-none-eabi-gcc")
    if shutil.which("make") is None:
        raise UserError("make not found: install it (apt-get install make)")
    args = ["make", "-s", "-C", str(project), f"OPT={opt}", f"EMULATE={1 if emulate else 0}"]
    if extra_cflags:
        args.append(f"EXTRA_CFLAGS={extra_cflags}")
    if emulator_memory and not emulate:
        args += ["OUT=build/qemu", "LDDIR=ld/emulate"]
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if "error" in ln.lower()] or \
                (proc.stderr + proc.stdout).splitlines()[-1:] or ["(no output)"]
        raise UserError(f"firmware build failed in {project}: {lines[0]}")
    return project / "build" / ("emulate" if emulate else "qemu" if emulator_memory else "board") / "firmware.elf"


def elf_size(elf: Path) -> dict:
    """text, data, bss of an ELF (arm-none-eabi-size, Berkeley format), with flash and RAM totals."""
    out = subprocess.run([arm_tool("arm-none-eabi-size"), "-B", str(elf)], capture_output=True, text=True,
                         check=True).stdout.splitlines()[1].split()
    text, data, bss = int(out[0]), int(out[1]), int(out[2])
    lines = subprocess.run([arm_tool("arm-none-eabi-nm"), str(elf)], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    where = {parts[2]: int(parts[0], 16) for parts in map(str.split, lines)
             if len(parts) == 3 and parts[2] in ("_sweights", "_eweights")}
    weights = where["_eweights"] - where["_sweights"] if len(where) == 2 else 0
    # weights copied to RAM at start-up (.kd2mcu_weights) count as text for size -B: their load image is
    # flash, and their copy is RAM too
    return {"text": text, "data": data, "bss": bss, "flash_bytes": text + data, "ram_bytes": data + bss + weights,
            "ram_weight_bytes": weights}
