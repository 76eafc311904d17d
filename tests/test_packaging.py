"""A built wheel carries templates/, firmware/ and host_sim/, and an installed copy finds them."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    pytest.importorskip("setuptools")
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(out), str(ROOT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    (whl,) = out.glob("kd2mcu-*.whl")
    return whl


def test_wheel_contains_the_non_python_parts(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("kd2mcu/templates/model.c.j2", "kd2mcu/templates/model.h.j2", "kd2mcu/templates/kd2mcu_int8.h.j2",
                     "kd2mcu/host_sim/harness.c", "kd2mcu/firmware/README.md", "kd2mcu/firmware/Makefile",
                     "kd2mcu/firmware/boards/stm32f405.json", "kd2mcu/firmware/src/startup.c",
                     "kd2mcu/templates/firmware_main.c.j2", "kd2mcu/data/sigmoid_lut_u16.txt",
                     "kd2mcu/cli.py"):
        assert required in names, required
    assert not any(n.startswith(("tests/", "templates/", "host_sim/")) for n in names)


def test_installed_wheel_generates_code_away_from_the_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    script = (
        "import kd2mcu, numpy as np\n"
        "from kd2mcu.resources import resource_dir\n"
        "from kd2mcu.quant.random_model import random_model, ModelShape\n"
        "from kd2mcu.codegen import render\n"
        "assert str(resource_dir('templates')).startswith(%r), resource_dir('templates')\n"
        "assert (resource_dir('host_sim') / 'harness.c').is_file()\n"
        "files = render.render(random_model(np.random.default_rng(0), ModelShape()), 'm')\n"
        "print(sorted(files))\n" % str(site))
    env = dict(os.environ, PYTHONPATH=str(site))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "'m.c', 'm.h'" in proc.stdout
