"""The build folder that ``kd2mcu build`` writes (atomically, through ``kd2mcu.outputs``):

- ``model.json``: the integer model, the only contract between Python and C;
- ``build.json``: what was built from what, for which board, and the quantization report;
- ``src/``: the generated C sources (``NAME.c``, ``NAME.h``, ``kd2mcu_int8.h``);
- ``firmware/``: the STM32 firmware project (``kd2mcu.targets.firmware``);
- ``emulate.json``: the last ``kd2mcu emulate``'s measurements, read by ``kd2mcu report``.
"""
from __future__ import annotations

import re
from pathlib import Path

from kd2mcu.codegen.render import KERNEL_HEADER
from kd2mcu.errors import UserError
from kd2mcu.outputs import read_json

MODEL_FILE = "model.json"
BUILD_FILE = "build.json"
SRC_DIR = "src"
EMULATE_FILE = "emulate.json"


def find_build(folder) -> Path:
    d = Path(folder)
    if (d / "student.onnx").is_file() and not (d / SRC_DIR).is_dir():
        raise UserError(f"{folder} is a training run, not a build folder: build it first "
                        f"(kd2mcu build {folder} --out BUILD), then give BUILD")
    if not (d / MODEL_FILE).is_file():
        raise UserError(f"{folder} is not a kd2mcu build folder (no {MODEL_FILE}): run kd2mcu build first")
    return d


def read_build_info(d: Path) -> dict:
    p = Path(d) / BUILD_FILE
    if not p.is_file():
        return {}
    info = read_json(p, "rebuild the folder with kd2mcu build")
    if not isinstance(info, dict):
        raise UserError(f"{p} is damaged (not a JSON object): rebuild the folder with kd2mcu build")
    return info


VALIDATE_FILE = "validate.json"


def _read_measurements(d: Path, file: str, command: str, key: str):
    """The JSON a command wrote into the build folder (None when it has not run), checked by one numeric key."""
    p = Path(d) / file
    if not p.is_file():
        return None
    info = read_json(p, f"run kd2mcu {command} again")
    if not isinstance(info, dict) or not isinstance(info.get(key, 0), (int, float)):
        raise UserError(f"{p} is damaged (not what kd2mcu {command} writes): run kd2mcu {command} again")
    return info


def read_validate_info(d: Path):
    """The last ``kd2mcu validate``'s measurements, or None."""
    return _read_measurements(d, VALIDATE_FILE, "validate", "ticks_per_inference")


def read_emulate_info(d: Path):
    """The last ``kd2mcu emulate``'s measurements, or None."""
    return _read_measurements(d, EMULATE_FILE, "emulate", "instructions_per_inference")


def model_name(build_dir: Path) -> str:
    """The C name the build's sources were generated under (``NAME.c``, ``NAME_run``, ...)."""
    name = read_build_info(build_dir).get("name")
    if name:  # it reaches the compiler's command line (-DKD_SIM_NAME=...): a C identifier or nothing
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,31}", name):
            raise UserError(f"{Path(build_dir) / BUILD_FILE} is damaged (name {str(name)[:40]!r} is not a C "
                            "identifier): rebuild the folder with kd2mcu build")
        return name
    headers = [p.stem for p in (build_dir / SRC_DIR).glob("*.h") if p.name != KERNEL_HEADER]
    if len(headers) != 1:
        raise UserError(f"{build_dir}/{SRC_DIR}: cannot tell the model's name; rebuild with kd2mcu build")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,31}", headers[0]):
        raise UserError(f"{build_dir}/{SRC_DIR}/{headers[0][:40]}.h: not a model header kd2mcu wrote (its name is "
                        "not a C identifier); rebuild with kd2mcu build")
    return headers[0]
