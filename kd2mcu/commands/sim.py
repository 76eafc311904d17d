"""``kd2mcu sim``: the generated C, compiled for the host, against the Python integer reference."""
from __future__ import annotations

from typing import Optional

import numpy as np

from kd2mcu.codegen.buildfolder import MODEL_FILE, SRC_DIR, find_build, model_name
from kd2mcu.commands.build import check_labels_fit, clipping, fit_frames, quantize_data
from kd2mcu.dataio import load_npz
from kd2mcu.errors import UserError
from kd2mcu.quant import reference
from kd2mcu.quant.intmodel import IntModel
from kd2mcu.targets import hostsim


def simulate(build_dir, inputs, opt: str = "-O2", sanitize: bool = False, cc: Optional[str] = None) -> dict:
    d = find_build(build_dir)
    model = IntModel.load(d / MODEL_FILE)
    data = fit_frames(model, load_npz(inputs, "--inputs"))
    if data.steps > model.max_steps:
        raise UserError(f"--inputs {inputs}: sequences have {data.steps} steps but the model was built for at most "
                        f"{model.max_steps}; rebuild with --max-steps {data.steps}")
    x_q = quantize_data(model, data)
    check_labels_fit(model, data)
    exe = hostsim.compile_harness(d / SRC_DIR, model_name(d), opt=opt, sanitize=sanitize, cc=cc)
    sim, mismatches, first = hostsim.check(exe, model, x_q, data.lengths)
    result = {
        "build": str(d), "inputs": str(inputs), "samples": data.n, "mismatches": mismatches,
        "first_mismatch": None if first is None else str(first), "compiler_flags": opt + (" +sanitizers" if sanitize else ""),
    }
    result.update(clipping(model, data) or {})
    if data.y is not None:
        result["accuracy"] = float(np.mean(sim.logits.argmax(1) == data.y))
    result["_logits"] = sim.logits
    result["_dequantized"] = reference.dequantize_logits(model, sim.logits)
    return result
