"""The build folder that ``kd2mcu build`` writes (atomically, through ``kd2mcu.outputs``):

- ``model.json``: the integer model, the only contract between Python and C;
- ``build.json``: what was built from what, for which board, and the quantization report;
- ``src/``: the generated C sources (``NAME.c``, ``NAME.h``, ``kd2mcu_int8.h``);
- ``firmware/``: the STM32 firmware project (``kd2mcu.targets.firmware``);
- ``emulate.json``: the last ``kd2mcu emulate``'s measurements, read by ``kd2mcu report``.
"""
from __future__ import annotations

import json
from pathlib import Path

from kd2mcu.codegen.render import KERNEL_HEADER
from kd2mcu.errors import UserError

MODEL_FILE = "model.json"
BUILD_FILE = "build.json"
SRC_DIR = "src"
EMULATE_FILE = "emulate.json"


def find_build(folder) -> Path:
    d = Path(folder)
    if not (d / MODEL_FILE).is_file():
        raise UserError(f"{folder} is not a kd2mcu build folder (no {MODEL_FILE}): run kd2mcu build first")
    return d


def read_build_info(d: Path) -> dict:
    p = d / BUILD_FILE
    if not p.is_file():
        return {}
    return json.loads(p.read_text())


def model_name(build_dir: Path) -> str:
    """The C name the build's sources were generated under (``NAME.c``, ``NAME_run``, ...)."""
    name = read_build_info(build_dir).get("name")
    if name:
        return name
    headers = [p.stem for p in (build_dir / SRC_DIR).glob("*.h") if p.name != KERNEL_HEADER]
    if len(headers) != 1:
        raise UserError(f"{build_dir}/{SRC_DIR}: cannot tell the model's name; rebuild with kd2mcu build")
    return headers[0]
