"""``kd2mcu sim``: the generated C, compiled for the host, against the Python integer reference."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from . import hostsim, reference
from .build import quantize_data
from .buildfolder import MODEL_FILE, SRC_DIR, find_build, read_build_info
from .codegen import KERNEL_HEADER
from .dataio import load_npz
from .errors import UserError
from .intmodel import IntModel


def model_name(build_dir: Path) -> str:
    name = read_build_info(build_dir).get("name")
    if name:
        return name
    headers = [p.stem for p in (build_dir / SRC_DIR).glob("*.h") if p.name != KERNEL_HEADER]
    if len(headers) != 1:
        raise UserError(f"{build_dir}/{SRC_DIR}: cannot tell the model's name; rebuild with kd2mcu build")
    return headers[0]


def simulate(build_dir, inputs, opt: str = "-O2", sanitize: bool = False, cc: Optional[str] = None) -> dict:
    d = find_build(build_dir)
    model = IntModel.load(d / MODEL_FILE)
    data = load_npz(inputs, "--inputs")
    if data.steps > model.max_steps:
        raise UserError(f"--inputs {inputs}: sequences have {data.steps} steps but the model was built for at most "
                        f"{model.max_steps}; rebuild with --max-steps {data.steps}")
    x_q = quantize_data(model, data)
    exe = hostsim.compile_harness(d / SRC_DIR, model_name(d), opt=opt, sanitize=sanitize, cc=cc)
    ref = reference.run(model, x_q, data.lengths)
    sim = hostsim.run_harness(exe, model, x_q, data.lengths)
    mismatches, first = hostsim.compare(ref, sim)
    result = {
        "build": str(d), "inputs": str(inputs), "samples": data.n, "mismatches": mismatches,
        "first_mismatch": None if first is None else str(first), "compiler_flags": opt + (" +sanitizers" if sanitize else ""),
    }
    if data.y is not None:
        result["accuracy"] = float(np.mean(sim.logits.argmax(1) == data.y))
    result["_logits"] = sim.logits
    result["_dequantized"] = reference.dequantize_logits(model, sim.logits)
    return result
