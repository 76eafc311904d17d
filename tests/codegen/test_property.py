"""Property tests: random integer models x many inputs, generated C (host sim, the portable path)
vs Python reference, for the fast and the compact weight layout.

Zero mismatching bits at -O0 and -O2, and no sanitizer report under -fsanitize=address,undefined.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import require_gcc, write_build

from kd2mcu.quant import reference
from kd2mcu.quant.random_model import ModelShape, random_inputs, random_model
from kd2mcu.targets import hostsim

N_MODELS = 32
N_INPUTS = 200


def _shapes():
    rng = np.random.default_rng(2026)
    shapes = []
    for k in range(N_MODELS):
        shapes.append(ModelShape(
            input_size=int(rng.integers(1, 33)), hidden=int(rng.integers(1, 65)),
            steps=int(rng.integers(1, 121)), classes=int(rng.integers(2, 11)),
            layers=1 + (k % 3 == 2), bidirectional=bool(k % 2),
            vocab=int(rng.integers(2, 300)) if k % 4 in (1, 2) else None,
            regime="large" if k % 5 in (0, 3) else "small", reverse=k % 8 == 4))
    # the corners of the ranges
    shapes[0] = ModelShape(input_size=1, hidden=1, steps=1, classes=2, regime="large")
    shapes[1] = ModelShape(input_size=32, hidden=64, steps=120, classes=10, layers=2, bidirectional=True,
                           regime="large")
    return shapes


SHAPES = _shapes()


def test_the_generator_covers_the_ranges():
    assert len(SHAPES) >= 30
    assert {s.bidirectional for s in SHAPES} == {True, False}
    assert {s.layers for s in SHAPES} == {1, 2}
    assert {s.vocab is None for s in SHAPES} == {True, False}
    assert {s.regime for s in SHAPES} == {"small", "large"}
    assert any(s.reverse and not s.bidirectional for s in SHAPES)
    assert min(s.input_size for s in SHAPES) == 1 and max(s.input_size for s in SHAPES) == 32
    assert min(s.hidden for s in SHAPES) == 1 and max(s.hidden for s in SHAPES) == 64
    assert min(s.steps for s in SHAPES) == 1 and max(s.steps for s in SHAPES) == 120


@pytest.mark.slow
@pytest.mark.parametrize("index", range(N_MODELS))
def test_host_sim_matches_reference(index, tmp_path):
    require_gcc()
    shape = SHAPES[index]
    rng = np.random.default_rng(1000 + index)
    model = random_model(rng, shape)
    fast = write_build(model, tmp_path / "fast")
    compact = write_build(model, tmp_path / "compact", layout="compact")
    x, lengths = random_inputs(rng, model, N_INPUTS, shape.steps)
    ref = reference.run(model, x, lengths)
    for build, opt, sanitize in ((fast, "-O0", False), (fast, "-O2", False), (fast, "-O1", True),
                                 (compact, "-O1", True)):
        exe = hostsim.compile_harness(build / "src", "kd2mcu_model", opt=opt, sanitize=sanitize)
        sim = hostsim.run_harness(exe, model, x, lengths)
        mismatches, first = hostsim.compare(ref, sim)
        assert mismatches == 0, f"{build.name} {opt} sanitize={sanitize}: {first}"
        assert "runtime error" not in sim.stderr and "Sanitizer" not in sim.stderr, sim.stderr
        if model.streaming:
            streamed = hostsim.run_harness(exe, model, x, lengths, stream=True)
            mismatches, first = hostsim.compare(ref, streamed)
            assert mismatches == 0, f"streaming {opt}: {first}"
    # The models must exercise the arithmetic, not sit at one constant output.
    assert len(np.unique(ref["logits"])) > 1 or model.num_classes == 1
