"""Where the non-Python parts live: templates/, firmware/ and host_sim/.

In a source checkout (or an editable install) they sit beside the package; in an installed wheel
they are packaged inside it (pyproject.toml maps them to kd2mcu/templates and so on).
"""
from __future__ import annotations

from pathlib import Path

_MARKERS = {"templates": "model.c.j2", "host_sim": "harness.c", "firmware": "README.md"}


def resource_dir(name: str) -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / name, here.parent / name):
        if (candidate / _MARKERS[name]).is_file():
            return candidate
    raise RuntimeError(f"kd2mcu is installed without its {name}/ folder (looked in {here} and {here.parent})")
