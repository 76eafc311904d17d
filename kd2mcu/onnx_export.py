"""``kd2mcu export-onnx``: a training run's float student (or its teacher) as a standard ONNX file."""
from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import UserError


def export_run(run: Path, output: Path, teacher: bool = False) -> str:
    """Write the ONNX file atomically; return a one-line description of what was written."""
    run, output = Path(run), Path(output)
    if output.suffix != ".onnx":
        raise UserError(f"{output}: the output file name must end in .onnx")
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}.onnx")
    output.parent.mkdir(parents=True, exist_ok=True)
    if teacher:
        from .teacher import export_onnx, load_transformer

        weights = run / "teacher.pt"
        if not weights.is_file():
            raise UserError(f"{run} has no transformer teacher (teacher.pt): only a teacher trained by kd2mcu "
                            "can be exported")
        import numpy as np

        meta = json.loads((run / "teacher.json").read_text())
        with np.load(run / "calib.npz") as f:
            example = f["x"][:2]
        export_onnx(load_transformer(weights), example, meta["aligned_layers"], tmp)
        what = f"the teacher ({meta['description']}), inputs x and lengths, outputs logits and hidden states"
    else:
        from .student import example_input, export_onnx, load

        checkpoint = run / "student.pt"
        if not checkpoint.is_file():
            raise UserError(f"{run} is not a kd2mcu training run (no student.pt): run kd2mcu train first")
        student = load(checkpoint)
        export_onnx(student, example_input(student), tmp)
        layers = student.shape["layers"]
        what = f"the float student, {layers} LSTM node{'s' if layers > 1 else ''} and a linear head"
    os.replace(tmp, output)
    return f"wrote {output}: {what}"
