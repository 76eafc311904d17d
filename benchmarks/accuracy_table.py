"""Accuracy table: for each bundled dataset, `kd2mcu train` with the default configuration (one seed),
then `kd2mcu build RUN` and `kd2mcu sim` on the held-out test split. Prints teacher, float student,
post-training-quantized int8 (PTQ) and QAT int8 accuracy measured by the gcc host simulator, with the
QAT forward's agreement with the integer reference.

Run: .venv/bin/python benchmarks/accuracy_table.py [--datasets basic_motions,japanese_vowels] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Per-dataset settings on top of the defaults (the text set trains on a subset, in fewer epochs, on 2 cores).
DATASET_SETTINGS = {
    "basic_motions": [],
    "japanese_vowels": [],
    "chinese_reviews": ["data.subset=6000", "teacher.epochs=10", "distill.warmup_epochs=2", "distill.epochs=8",
                        "distill.batch_size=32", "qat.epochs=3"],
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="basic_motions,japanese_vowels,chinese_reviews")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from kd2mcu.commands.build import build_from_run
    from kd2mcu.commands.sim import simulate
    from kd2mcu.train.run import resolve_config, train

    rows = []
    for name in args.datasets.split(","):
        cfg = resolve_config(None, dataset=name, seed=args.seed, settings=tuple(DATASET_SETTINGS.get(name, [])))
        t0 = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            run, build = Path(tmp) / "run", Path(tmp) / "build"
            m = train(cfg, run, quiet=True)
            build_from_run(run, build, False, "kd2mcu_model")
            sim = simulate(build, run / "test.npz")
        pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
        rows.append([name, str(m["samples"]["test"]), pct(m["teacher_accuracy"]), pct(m["student_accuracy"]),
                     pct(m["ptq_int8_accuracy"]), pct(sim["accuracy"]),
                     f"{100 * (sim['accuracy'] - m['student_accuracy']):+.1f}",
                     f"{100 * (sim['accuracy'] - m['ptq_int8_accuracy']):+.1f}",
                     f"{100 * m['qat_int8_argmax_agreement']:.1f}", str(sim["mismatches"]), f"{time.time() - t0:.0f}"])
        print(f"  {name}: done", json.dumps({k: m[k] for k in ("teacher_accuracy", "student_accuracy",
                                                                "ptq_int8_accuracy", "int8_accuracy")}), flush=True)
    head = ["dataset", "test N", "teacher %", "float student %", "PTQ int8 %", "QAT int8 (host sim) %",
            "QAT - float", "QAT - PTQ", "QAT/int agree %", "sim mismatches", "s"]
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    print(f"\nheld-out test accuracy, default configuration, seed {args.seed} (targets: QAT int8 within 1.0 point of "
          "the float student, never below PTQ)")
    for r in [head, ["-" * w for w in widths]] + rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))


if __name__ == "__main__":
    main()
