"""``kd2mcu flash``: program a board with st-flash, OpenOCD or STM32CubeProgrammer, and verify."""
from __future__ import annotations

import shlex
import shutil
import subprocess

from kd2mcu.codegen.buildfolder import find_build, read_build_info
from kd2mcu.errors import UserError
from kd2mcu.targets.firmware import DEFAULT_BOARD, FIRMWARE_DIR, load_board, make
from kd2mcu.targets.probes import PROBES, flash_command


def flash(build_dir, probe: str, dry_run: bool, opt: str = "-Os") -> str:
    d = find_build(build_dir)
    board = load_board(read_build_info(d).get("target", DEFAULT_BOARD))
    project = d / FIRMWARE_DIR
    if not (project / "Makefile").is_file():
        raise UserError(f"{d} has no firmware project: rebuild with kd2mcu build ... --target {board.name}")
    image_dir = project / "build" / "board"
    cmd = flash_command(probe, board, image_dir)
    if dry_run:  # build what the command names, so that it can be run as printed; program nothing
        if shutil.which("arm-none-eabi-gcc") is None:
            return (f"{shlex.join(cmd)}\n# not built: arm-none-eabi-gcc is not on PATH (apt-get install "
                    "gcc-arm-none-eabi); kd2mcu flash without --dry-run builds the image before programming")
        make(project, emulate=False, opt=opt)
        return f"{shlex.join(cmd)}\n# built {image_dir} (firmware.elf, .bin, .hex); nothing was programmed"
    tool, how = PROBES[probe]
    if shutil.which(tool) is None:
        raise UserError(f"{tool} not found on PATH: {how}")
    make(project, emulate=False, opt=opt)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        raise UserError(f"{tool} did not finish within 300 s: is the board connected and powered?") from None
    if proc.returncode != 0:
        said = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        raise UserError(f"{tool} could not program the {board.name} (exit {proc.returncode}: "
                        f"{said[-1] if said else 'no output'}); check that the board is connected over USB, "
                        "powered, and not held by another program")
    return shlex.join(cmd)
