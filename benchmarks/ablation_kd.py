"""Ablation: the same TinyLSTM trained with the teacher (distillation) and without it (hard labels
only, same epochs), on bundled datasets, several seeds each. Prints test accuracy, mean and spread.

The teacher is trained once per dataset (its outputs are cached, keyed by data and teacher settings);
the student seed changes the data's validation carve-out, the student's initialization and batch order.

Run: .venv/bin/python benchmarks/ablation_kd.py [--datasets basic_motions,japanese_vowels] [--seeds 0,1,2]
     [--set distill.alpha=0.9 ...]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Per-dataset settings on top of the defaults (a text set needs fewer epochs on 2 cores).
DATASET_SETTINGS = {
    "basic_motions": [],
    "japanese_vowels": [],
    "chinese_reviews": ["data.subset=6000", "teacher.epochs=10", "distill.warmup_epochs=2", "distill.epochs=8",
                        "distill.batch_size=32"],
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="basic_motions,japanese_vowels,chinese_reviews")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--set", dest="settings", action="append", default=[], help="section.key=value for every run")
    args = ap.parse_args()

    from kd2mcu.train.run import resolve_config, train

    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for name in args.datasets.split(","):
        kd, base, teacher, secs = [], [], [], []
        for seed in seeds:
            settings = ["qat.enabled=false"] + DATASET_SETTINGS.get(name, []) + args.settings  # float students
            cfg = resolve_config(None, dataset=name, seed=seed, baseline=True, settings=tuple(settings))
            t0 = time.time()
            with tempfile.TemporaryDirectory() as tmp:
                m = train(cfg, Path(tmp) / "run", quiet=True)
            secs.append(time.time() - t0)
            kd.append(m["student_accuracy"])
            base.append(m["baseline_accuracy"])
            teacher.append(m["teacher_accuracy"])
            print(f"  {name} seed {seed}: teacher {m['teacher_accuracy']:.3f}  KD {m['student_accuracy']:.3f}  "
                  f"no-KD {m['baseline_accuracy']:.3f}  ({secs[-1]:.0f} s)", flush=True)
        kd, base = np.array(kd), np.array(base)
        rows.append([name, f"{np.mean(teacher):.3f}", f"{kd.mean():.3f} ± {kd.std():.3f}",
                     f"{base.mean():.3f} ± {base.std():.3f}", f"{(kd - base).mean():+.3f}",
                     f"{int(np.sum(kd > base))}/{int(np.sum(kd == base))}/{int(np.sum(kd < base))}",
                     f"{np.mean(secs):.0f}"])
    head = ["dataset", "teacher", "student KD (mean ± std)", "student no-KD (mean ± std)", "KD - no-KD",
            "KD better/same/worse", "s/seed"]
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    print(f"\ntest accuracy over seeds {seeds} (std: population standard deviation over seeds)")
    for r in [head, ["-" * w for w in widths]] + rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))


if __name__ == "__main__":
    main()
