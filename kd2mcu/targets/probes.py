"""The programming probes a board is flashed through: st-flash, OpenOCD (ST-LINK interface) and
STM32CubeProgrammer; the exact command each is run with to program and verify an image."""
from __future__ import annotations

from pathlib import Path

from kd2mcu.errors import UserError
from kd2mcu.targets.firmware import Board

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
        elf = image_dir / "firmware.elf"
        return ["openocd", "-f", "interface/stlink.cfg", "-f", board.openocd_target,
                "-c", f"program {tcl_word(elf)} verify reset exit"]
    if probe == "cubeprog":
        return ["STM32_Programmer_CLI", "-c", "port=SWD", "-w", str(image_dir / "firmware.hex"), "-v", "-rst"]
    raise UserError(f"unknown probe {probe!r}: use stlink, openocd or cubeprog")


TCL_SPECIAL = set('[]{}$\\";#')


def tcl_word(path: Path) -> str:
    """``path`` as one literal Tcl word. OpenOCD evaluates ``-c`` as Tcl, where ``[...]`` runs a command
    and ``$`` substitutes a variable, so a path holding such characters (or spaces) is refused rather than
    quoted: OpenOCD's own ``program`` procedure may evaluate its argument a second time."""
    text = str(Path(path).resolve())
    bad = sorted({ch for ch in text if ch in TCL_SPECIAL or not ch.isprintable() or ch.isspace()})
    if bad:
        shown = " ".join(repr(ch) for ch in bad)
        raise UserError(f"the firmware path {text!r} holds {shown}, which OpenOCD's Tcl would evaluate: move the "
                        "build folder to a path without spaces or [ ] { } $ \\ \" ; #, or use --probe stlink")
    return text
