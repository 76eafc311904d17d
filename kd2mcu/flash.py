"""``kd2mcu flash``: program a board with st-flash, OpenOCD or STM32CubeProgrammer, and verify."""
from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

from .buildfolder import find_build, read_build_info
from .errors import UserError
from .firmware import DEFAULT_BOARD, FIRMWARE_DIR, Board, load_board, make

# probe -> (executable, where to get it)
PROBES = {
    "stlink": ("st-flash", "apt-get install stlink-tools"),
    "openocd": ("openocd", "apt-get install openocd"),
    "cubeprog": ("STM32_Programmer_CLI", "install STM32CubeProgrammer from st.com and put its bin/ on PATH"),
}


def flash_command(probe: str, board: Board, image_dir: Path) -> list[str]:
    """The exact command that programs and verifies ``image_dir/firmware.{bin,elf,hex}``."""
    if probe == "stlink":  # st-flash reads the flash back after writing ("Flash written and verified")
        return ["st-flash", "--reset", "write", str(image_dir / "firmware.bin"), board.flash_address]
    if probe == "openocd":
        return ["openocd", "-f", "interface/stlink.cfg", "-f", board.openocd_target,
                "-c", f"program {image_dir / 'firmware.elf'} verify reset exit"]
    if probe == "cubeprog":
        return ["STM32_Programmer_CLI", "-c", "port=SWD", "-w", str(image_dir / "firmware.hex"), "-v", "-rst"]
    raise UserError(f"unknown probe {probe!r}: use stlink, openocd or cubeprog")


def flash(build_dir, probe: str, dry_run: bool, opt: str = "-Os") -> str:
    d = find_build(build_dir)
    board = load_board(read_build_info(d).get("target", DEFAULT_BOARD))
    project = d / FIRMWARE_DIR
    if not (project / "Makefile").is_file():
        raise UserError(f"{d} has no firmware project: rebuild with kd2mcu build ... --target {board.name}")
    cmd = flash_command(probe, board, project / "build" / "board")
    if dry_run:
        return shlex.join(cmd)
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
