"""--weights split: the activation tables and the first units' weights in the array copied to RAM, the rest
in one the firmware always reads from flash; the same bits wherever the split falls."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import require_gcc

from kd2mcu.codegen import render
from kd2mcu.quant.random_model import ModelShape, random_inputs, random_model, zero_blocks
from kd2mcu.targets import hostsim

SHAPE = ModelShape(input_size=5, hidden=12, steps=10, layers=2, bidirectional=True)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("layout", ["fast", "compact"])
def test_split_weights_keep_the_bits_wherever_the_split_falls(layout, sparse, tmp_path):
    require_gcc()
    rng = np.random.default_rng(41)
    model = random_model(rng, SHAPE)
    if sparse:
        zero_blocks(model, 0.5, rng)
    total = render.weight_bytes(model, layout)
    fixed = render.split_bytes(model, layout, 0)[0]  # tables, head and indices: no unit fits
    unit = render.split_bytes(model, layout, None)[0] - fixed
    assert render.split_bytes(model, layout, None) == (total, 0) and render.split_bytes(model, layout, 0) == (fixed, unit)
    x, lengths = random_inputs(rng, model, 24, SHAPE.steps)
    in_flash = []
    for room in (0, fixed + unit // 10, fixed + unit // 2, total - 1):
        ram, flash = render.split_bytes(model, layout, room)
        assert ram + flash == total and (ram <= room or room == 0)
        src = tmp_path / f"src{room}"
        render.write_sources(model, "sp", src, layout, room)
        in_flash.append((src / "sp.c").read_text().count("_W_FLASH["))  # directions with units left in flash
        exe = hostsim.compile_harness(src, "sp", sanitize=True)
        _, mismatches, first = hostsim.check(exe, model, x, lengths)
        assert mismatches == 0, (room, first)
    assert in_flash[0] == 4 and in_flash[-1] == 1 and in_flash == sorted(in_flash, reverse=True), in_flash


def test_a_split_keeps_a_strict_prefix_of_units_in_ram():
    model = random_model(np.random.default_rng(42), SHAPE)
    fixed = render.split_bytes(model, "fast", 0)[0]
    unit = 4 * render.context(model, "m", "fast")["layers"][0]["unit_words"]
    ctx = render.context(model, "m", "fast", fixed + unit + unit // 2)  # room for one unit and half the next
    units = [d["ram_units"] for layer in ctx["layers"] for d in layer["directions"]]
    assert units == [1, 0, 0, 0]
    assert render.context(model, "m", "fast")["layers"][1]["directions"][1]["ram_units"] == 12
