"""Accuracy panel: kd2mcu's defaults on public datasets nobody tuned them for, beside a strong reference
measured in the same run on the same split.

Per dataset and seed: the reference (aeon's MiniRocketClassifier for sensor sets; character 1-2-gram
TF-IDF + logistic regression from scikit-learn for text), then `kd2mcu train --baseline` with the
default configuration: the teacher (by default the ensemble of the transformer and rocket on sensor
data, of the transformer and tfidf on text), the distilled float student, the same student trained
without the teacher, and the int8 student measured by the gcc host simulator (bit-exact with the
integer reference, or the run fails); with the wall time of the training. Prints mean and spread
(min..max over seeds), the validation accuracies pooled over the panel (what defaults are chosen on:
never the test split), and writes a bar chart.

Run: .venv/bin/python benchmarks/accuracy_panel.py [--datasets a,b] [--seeds 0,1,2] [--png panel.png]
     [--teacher rocket] [--set distill.transfer=20]  (options measured beside the defaults)
Panel (default): basic_motions, japanese_vowels, arrow_head, osuleaf, pickup_gesture, chinese_reviews.
The reference is seeded too (MiniRocket's kernels; TF-IDF + LR is deterministic).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PANEL = ["basic_motions", "japanese_vowels", "arrow_head", "osuleaf", "pickup_gesture", "chinese_reviews"]
COLUMNS = [("reference", "reference"), ("teacher", "teacher_accuracy"), ("student (KD)", "student_accuracy"),
           ("student, no teacher", "baseline_accuracy"), ("int8 (host sim)", "int8_hostsim_accuracy")]


def reference_accuracy(task, seed: int) -> tuple[str, float]:
    """The reference on the task's own split (train + validation for fitting, test for scoring)."""
    if task.kind == "text":
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        train = task.texts_train + task.texts_val
        y = np.concatenate([task.y_train, task.y_val])
        vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 2), sublinear_tf=True)
        clf = LogisticRegression(C=10.0, max_iter=2000).fit(vec.fit_transform(train), y)
        return "TF-IDF char 1-2 + LR", float(np.mean(clf.predict(vec.transform(task.texts_test)) == task.y_test))
    from aeon.classification.convolution_based import MiniRocketClassifier

    def series(x, lengths):  # kd2mcu's [N, T, k*F] (normalized, maybe frame-stacked) back to [N, F, T]
        F = task.num_features // task.frame_stack
        n, steps, _ = x.shape
        return np.ascontiguousarray(x.reshape(n, steps * task.frame_stack, F).transpose(0, 2, 1))

    x = np.concatenate([series(task.x_train, task.len_train), series(task.x_val, task.len_val)])
    y = np.concatenate([task.y_train, task.y_val])
    clf = MiniRocketClassifier(random_state=seed).fit(x, y)
    return "MiniRocket", float(np.mean(clf.predict(series(task.x_test, task.len_test)) == task.y_test))


def run_one(name: str, seed: int, teacher=None, settings=()) -> dict:
    from kd2mcu.train.run import load_task_for, resolve_config, train

    cfg = resolve_config(None, dataset=name, seed=seed, baseline=True, teacher=teacher, settings=tuple(settings))
    task = load_task_for(cfg)
    ref_name, ref = reference_accuracy(task, seed)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        m = train(cfg, Path(tmp) / "run", quiet=True)
    return dict(m, reference=ref, reference_name=ref_name, train_seconds=time.time() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=",".join(PANEL))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--png", default="accuracy_panel.png")
    ap.add_argument("--json", help="also write every measurement here")
    ap.add_argument("--teacher", help="a teacher kind instead of the default (an option, not the defaults)")
    ap.add_argument("--set", dest="settings", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="a setting on top of the defaults (repeatable), as kd2mcu train --set")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[str, list[dict]] = {}
    for name in args.datasets.split(","):
        for seed in seeds:
            r = run_one(name, seed, args.teacher, args.settings)
            results.setdefault(name, []).append(r)
            print(f"  {name} seed {seed}: " + ", ".join(f"{label} {100 * r[key]:.1f}" for label, key in COLUMNS
                                                      if r.get(key) is not None)
                  + f"; {r['train_seconds']:.0f} s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))

    def cell(runs, key):
        v = [100 * r[key] for r in runs if r.get(key) is not None]
        return f"{np.mean(v):.1f} ({min(v):.1f}-{max(v):.1f})" if v else "n/a"

    head = ["dataset", "reference"] + [label for label, _ in COLUMNS] + ["KD - no teacher", "train s"]
    rows = []
    for name, runs in results.items():
        gain = np.mean([r["student_accuracy"] - r["baseline_accuracy"] for r in runs]) * 100
        rows.append([name, runs[0]["reference_name"]] + [cell(runs, key) for _, key in COLUMNS]
                    + [f"{gain:+.1f}", f"{np.mean([r['train_seconds'] for r in runs]):.0f}"])
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    pooled = {}
    for key in ("teacher_val_accuracy", "int8_val_accuracy"):
        n = [r["samples"]["val"] for runs in results.values() for r in runs if r.get(key) is not None]
        v = [r[key] * r["samples"]["val"] for runs in results.values() for r in runs if r.get(key) is not None]
        pooled[key] = f"{100 * sum(v) / sum(n):.1f}% of {sum(n)}" if n else "n/a"
    what = " ".join(([f"--teacher {args.teacher}"] if args.teacher else []) + [f"--set {s}" for s in args.settings])
    print(f"\nheld-out test accuracy %, mean (min-max) over seeds {seeds}, kd2mcu defaults {what}".rstrip())
    for r in [head, ["-" * w for w in widths]] + rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    print(f"validation accuracy pooled over datasets and seeds: teacher {pooled['teacher_val_accuracy']}, "
          f"int8 student {pooled['int8_val_accuracy']}")
    plot(results, args.png)
    print(f"\nwrote {args.png}")


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(names)), 4.6))
    width = 0.8 / len(COLUMNS)
    for j, (label, key) in enumerate(COLUMNS):
        means = [100 * np.mean([r[key] for r in results[n] if r.get(key) is not None] or [0]) for n in names]
        lo = [m - 100 * min([r[key] for r in results[n] if r.get(key) is not None] or [0]) for m, n in zip(means, names)]
        hi = [100 * max([r[key] for r in results[n] if r.get(key) is not None] or [0]) - m for m, n in zip(means, names)]
        ax.bar(np.arange(len(names)) + (j - (len(COLUMNS) - 1) / 2) * width, means, width, yerr=[lo, hi],
               capsize=2, label=label)
    ax.set_xticks(np.arange(len(names)), names, rotation=15)
    ax.set_ylabel("test accuracy %")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, ncol=len(COLUMNS), loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    ax.set_title("kd2mcu defaults vs a reference, held-out test split (bars: min-max over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
