"""The build folder, written atomically: everything goes to a staging folder beside it first and
replaces the old folder only when complete, so a failed build never leaves a half-written one and
never touches an existing folder that was not meant to be replaced.

Layout: ``model.json`` (the integer model), ``build.json`` (what was built from what, and the
quantization report), ``src/`` (the generated C sources).
"""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError

MODEL_FILE = "model.json"
BUILD_FILE = "build.json"
SRC_DIR = "src"


def check_output(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder: choose a folder path")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(f"--out {out} exists and is not empty: pass --force to replace it, or choose another folder")


@contextmanager
def staged_folder(out: Path, force: bool):
    """Yield a staging folder; on success it becomes ``out`` (replacing it only with ``force``)."""
    out = Path(out)
    check_output(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.staging-{os.getpid()}"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir()
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.rename(out, old)
        os.rename(stage, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(stage, out)


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


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
