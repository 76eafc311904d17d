"""Shared test helpers: where ../shared is, and a build folder made from an integer model."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# tests/quant's ONNX and training helpers (test_onnx_import, test_build_onnx) are imported by other groups too,
# whichever folder pytest collects first.
sys.path.insert(0, str(Path(__file__).resolve().parent / "quant"))
SHARED = ROOT.parent / "shared"
VECTORS = SHARED / "spec" / "vectors"


def require_shared():
    if not VECTORS.is_dir():
        pytest.skip(f"{VECTORS} is absent: the reference vectors live only on the team's machines")


def require_gcc():
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed (scripts/setup.sh installs it)")


def require_arm():
    """The ARM toolchain and QEMU: skip (saying why) on a machine without them, but fail in CI,
    where scripts/setup.sh installs them, so the emulator tests really run there."""
    missing = [t for t in ("arm-none-eabi-gcc", "arm-none-eabi-size", "arm-none-eabi-nm", "qemu-system-arm", "make")
               if shutil.which(t) is None]
    if missing:
        why = f"{', '.join(missing)} not installed (scripts/setup.sh installs them as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)


def write_build(model, folder: Path, name: str = "kd2mcu_model", layout: str = "fast") -> Path:
    """A build folder (model.json + src/) for an integer model, as `kd2mcu build model.json` writes."""
    from kd2mcu.commands import build

    build.write_build(model, {"name": name, "layout": layout}, folder, force=True, name=name)
    return folder


def save_inputs(model, x, lengths, path: Path) -> Path:
    """An .npz for --inputs holding the int8 test inputs x: token ids as they are, features as floats
    that quantize exactly back to x."""
    import numpy as np

    if model.is_token_model:
        np.savez(path, x=x.astype(np.int64), lengths=lengths)
    else:
        np.savez(path, x=(x.astype(np.float32) - model.input.zero_point) * np.float32(model.input.scale),
                 lengths=lengths)
    return path
