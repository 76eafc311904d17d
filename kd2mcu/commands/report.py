"""``kd2mcu report DIR``: a build's footprint on its target and measured speed
(``kd2mcu.targets.footprint``), or a training run's accuracies side by side."""
from __future__ import annotations

from pathlib import Path

from kd2mcu.codegen.buildfolder import find_build
from kd2mcu.errors import UserError
from kd2mcu.outputs import read_json
from kd2mcu.targets.footprint import footprint


def report(build_dir) -> dict:
    return footprint(find_build(build_dir))


ACCURACY_ROWS = [("teacher", "teacher_accuracy"), ("float student (distilled)", "student_accuracy"),
                 ("same student without the teacher", "baseline_accuracy"),
                 ("int8, post-training quantization of the float student", "ptq_int8_accuracy"),
                 ("QAT student (its forward imitates the int8 kernel)", "qat_accuracy"),
                 ("int8 after QAT (integer reference = generated C)", "int8_accuracy"),
                 ("int8 host simulator (the generated C, gcc, checked bit for bit)", "int8_hostsim_accuracy")]


def run_report(run: Path) -> dict:
    """A training run's accuracies side by side (metrics.json), on its held-out test split."""
    m = read_json(Path(run) / "metrics.json", "train the run again")
    if not isinstance(m, dict) or not all(k in m for k in ("dataset", "samples", "student_params")):
        raise UserError(f"{Path(run) / 'metrics.json'} is damaged (not what kd2mcu train writes): train the run again")
    return m


def format_run_report(m: dict) -> str:
    lines = [f"{m['dataset']}: test accuracy on {m['samples']['test']} held-out samples"]
    rows = [(label, m[key]) for label, key in ACCURACY_ROWS if m.get(key) is not None]
    width = max(len(label) for label, _ in rows)
    lines += [f"  {label:<{width}}  {value:7.2%}" for label, value in rows]
    if "qat_int8_argmax_agreement" in m:
        lines.append(f"  QAT forward vs integer reference: argmax agreement {m['qat_int8_argmax_agreement']:.2%}, "
                     f"max |logit difference| {m['qat_int8_max_abs_logit_difference']:g}")
    lines.append(f"  parameters: student {m['student_params']:,}, teacher {m['teacher_params'] or 0:,}")
    return "\n".join(lines)
