"""``kd2mcu export-onnx``: a training run's float student (or its teacher) as a standard ONNX file."""
from __future__ import annotations

from pathlib import Path

from kd2mcu.errors import UserError
from kd2mcu.outputs import check_output_file, read_json, write_file_atomically


def export_run(run: Path, output: Path, teacher: bool = False, force: bool = False) -> str:
    """Write the ONNX file atomically; return a one-line description of what was written."""
    run, output = Path(run), Path(output)
    if output.suffix != ".onnx":
        raise UserError(f"{output}: the output file name must end in .onnx")
    if not (run / "student.pt").is_file():
        raise UserError(f"{run} is not a kd2mcu training run (no student.pt): run kd2mcu train first")
    check_output_file(output, force, [p for p in run.iterdir() if p.is_file()], option="OUTPUT")
    said = []
    write_file_atomically(output, lambda tmp: said.append(_export(run, tmp, teacher)))
    return f"wrote {output}: {said[0]}"


def _export(run: Path, tmp: Path, teacher: bool) -> str:
    if teacher:
        from kd2mcu.train.teacher import export_onnx, load_transformer

        weights = run / "teacher.pt"
        meta = read_json(run / "teacher.json", "train the run again") if (run / "teacher.json").is_file() else {}
        members = str(meta.get("kind", "none")).split("+")
        if "transformer" not in members or not weights.is_file():
            raise UserError(f"{run}: its teacher is not a transformer trained by kd2mcu "
                            f"({meta.get('kind', 'none')}); only such a teacher can be exported")
        import numpy as np

        with np.load(run / "calib.npz") as f:
            example = f["x"][:2]
        export_onnx(load_transformer(weights), example, meta["aligned_layers"], tmp)
        what = "the teacher" if members == ["transformer"] else f"the transformer member of the teacher ({meta['kind']})"
        return f"{what}, inputs x and lengths, outputs logits and hidden states"
    from kd2mcu.train.student import example_input, export_onnx, load

    student = load(run / "student.pt")
    export_onnx(student, example_input(student), tmp)
    layers = student.shape["layers"]
    return f"the float student, {layers} LSTM node{'s' if layers > 1 else ''} and a linear head"
