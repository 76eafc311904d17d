"""Block-sparse models: the generator stores and computes only the surviving blocks, with the same bits
as the reference computing them dense; the pruning schedule and masks of training."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import require_arm, require_gcc, save_inputs, write_build

from kd2mcu.codegen import render
from kd2mcu.quant.random_model import ModelShape, random_inputs, random_model, zero_blocks
from kd2mcu.targets import hostsim
from kd2mcu.train import prune
from kd2mcu.train.student import TinyLSTM

SHAPES = {
    "uni": ModelShape(input_size=6, hidden=16, steps=20),
    "odd": ModelShape(input_size=7, hidden=13, steps=12),  # partial last groups
    "bi2": ModelShape(input_size=5, hidden=12, steps=10, layers=2, bidirectional=True),
    "tokens": ModelShape(input_size=8, hidden=8, steps=10, vocab=30),
}


@pytest.mark.parametrize("layout", ["fast", "compact"])
@pytest.mark.parametrize("kind", SHAPES)
def test_sparse_c_is_bit_exact_on_the_host(kind, layout, tmp_path):
    require_gcc()
    rng = np.random.default_rng(31)
    model = zero_blocks(random_model(rng, SHAPES[kind]), 0.6, rng)
    files = render.write_sources(model, "sp", tmp_path / "src", layout)
    assert "Block-sparse" in (tmp_path / "src" / "sp.c").read_text()
    exe = hostsim.compile_harness(tmp_path / "src", "sp", sanitize=True)
    x, lengths = random_inputs(rng, model, 40, SHAPES[kind].steps)
    _, mismatches, first = hostsim.check(exe, model, x, lengths)
    assert mismatches == 0, first
    assert files


def test_dense_models_stay_dense_and_byte_identical(tmp_path):
    model = random_model(np.random.default_rng(32), SHAPES["uni"])
    a = render.render(model, "m")
    assert "Block-sparse" not in a["m.c"]
    zero_blocks(model, 0.1, np.random.default_rng(1))  # below SPARSE_MIN: still the dense loops
    assert "Block-sparse" not in render.render(model, "m")["m.c"]
    zero_blocks(model, 0.5, np.random.default_rng(2))
    assert render.render(model, "m") == render.render(model, "m")


@pytest.mark.parametrize("portable", [False, True])
def test_sparse_firmware_is_bit_exact_in_qemu_and_smaller(portable, tmp_path):
    require_arm()
    from kd2mcu.commands.emulate import emulate
    from kd2mcu.targets.footprint import footprint

    rng = np.random.default_rng(33)
    dense = random_model(rng, ModelShape(input_size=16, hidden=32, steps=20))
    sparse = zero_blocks(random_model(np.random.default_rng(33), ModelShape(input_size=16, hidden=32, steps=20)),
                         0.5, np.random.default_rng(3))
    x, lengths = random_inputs(np.random.default_rng(4), dense, 12, 20)
    out = {}
    for name, model in (("dense", dense), ("sparse", sparse)):
        write_build(model, tmp_path / name)
        save_inputs(model, x, lengths, tmp_path / f"{name}.npz")
        r = emulate(tmp_path / name, tmp_path / f"{name}.npz", portable=portable)
        assert r["mismatches"] == 0
        out[name] = (r["instructions_per_inference"], footprint(tmp_path / name, portable=portable)["flash_weight_bytes"])
    assert out["sparse"][0] < 0.85 * out["dense"][0], out
    # the fast layout stores per unit 4 biases and 2 run heads, per surviving block 8 weight words and its number
    d = sparse.layers[0].directions[0]
    kx, kh = render.sparse_blocks(*(np.stack([d.gates[n].wx if m == "x" else d.gates[n].wh for n in "figo"], axis=1)
                                    for m in "xh"))
    kept = int(kx.sum() + kh.sum())
    assert kept == 192
    stored = render.weight_bytes(sparse) - render.TABLE_BYTES["fast"]  # without the activation tables
    assert stored == 4 * (32 * (4 + 2) + 9 * kept) + 4 * 32 + 4 * 4
    assert 0 <= stored - out["sparse"][1] <= 16, out  # the head's biases may become immediates


def test_block_masks_follow_the_kernels_blocks():
    torch.manual_seed(0)
    w = torch.randn(4 * 5, 10)  # H = 5 units, 10 inputs: groups of 4, 4 and 2
    mask = prune.block_mask(w, 0.4)
    blocks = mask.reshape(4, 5, 10)
    for u in range(5):
        for q, cols in enumerate((slice(0, 4), slice(4, 8), slice(8, 10))):
            vals = blocks[:, u, cols]
            assert torch.all(vals == vals.flatten()[0]), (u, q)  # a block is kept or pruned whole, all 4 gates
    assert int((prune.block_norms(w * mask) == 0).sum()) == round(0.4 * 15)
    assert prune.ramp(0, 10, 0.5, 0.1, 0.6) == 0.0 and prune.ramp(9, 10, 0.5, 0.1, 0.6) == 0.5
    assert 0 < prune.ramp(3, 10, 0.5, 0.1, 0.6) < 0.5


def test_pruner_keeps_the_target_through_training_steps():
    torch.manual_seed(1)
    student = TinyLSTM(input_size=6, hidden=8, num_classes=3, layers=2, bidirectional=True)
    pruner = prune.Pruner(student, {"sparsity": 0.5, "start": 0.0, "end": 0.5}, epochs=4)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    x, lengths = torch.randn(5, 7, 6), torch.full((5,), 7)
    for epoch in range(4):
        loss = student(x, lengths)[0].pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        pruner.after_step(epoch)
    pruner.finalize()
    assert abs(prune.achieved(student) - 0.5) < 0.05
