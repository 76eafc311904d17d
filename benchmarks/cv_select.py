"""Cross-validated choice between settings, on the training split alone: the way kd2mcu's defaults are chosen.

The bundled sets' validation splits are a handful of samples (ArrowHead 5, PickupGestureWiimoteZ 8), too few
to tell settings apart. Here the training split is dealt into K stratified folds (``[data] folds``/``fold``)
and ``kd2mcu train`` runs once per fold and candidate, holding that fold out: over the K runs every training
sample is held out once.

--holdout test (the default, nested cross-validation; ``[data] fold_split = test``): the held-out fold is
only scored; the run chooses its epochs and its fallback on a validation split drawn from the other folds,
as a user's run does. --holdout validation: the held-out fold is the run's validation split, so the
choices that read it (stage 2's and QAT's epoch, the fallback) are made on the very samples scored, which
flatters the student (OSULeaf: 89.5% against 79.2% on the test split, while the teacher, which chooses
nothing there, gets 92.5% against 92.1%). Defaults chosen up to December 2026 used --holdout validation.

Per dataset and candidate it prints the int8 student's
(the shipped model's, by the integer reference, bit-exact with the C) accuracy on the held-out folds,
pooled, and, against the first candidate on the very same samples, the samples only it gets right
(+), only the first gets right (-) and a two-sided sign test on those. The test split is never read
here (``train`` scores it; this script does not look).

Run: .venv/bin/python benchmarks/cv_select.py --datasets arrow_head,osuleaf --folds 5 \\
         --candidate default --candidate 'mixup:distill.transfer_mixup=0.5' [--json cv.json]
A candidate is NAME or NAME:SECTION.KEY=VALUE;SECTION.KEY=VALUE (settings on top of the defaults, as
kd2mcu train --set). With --json, finished runs are kept there and skipped when the script runs again;
--only 3,4 runs just those folds (0-based: to share the folds between processes, one --json each), and
--merge FILE reads another process's runs before the table is printed; --table only prints the table
from --json and --merge, training nothing.
Candidates run fold by fold, so each fold's teacher is trained once and then read from kd2mcu's cache.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from math import comb
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_candidate(text: str) -> tuple[str, tuple[str, ...]]:
    name, _, settings = text.partition(":")
    return name, tuple(s.strip() for s in settings.split(";") if s.strip())


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial test of wins against losses (ties dropped), p = 0.5."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(comb(n, i) for i in range(min(wins, losses) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def run_fold(dataset: str, seed: int, folds: int, fold: int, settings: tuple[str, ...], holdout: str) -> dict:
    """One run with fold ``fold`` held out as the ``holdout`` split (validation or test); its int8 student scored
    on that fold."""
    from kd2mcu.quant.intmodel import IntModel
    from kd2mcu.train.run import int8_logits, load_task_for, resolve_config, train

    cfg = resolve_config(None, dataset=dataset, seed=seed,
                         settings=(*settings, f"data.folds={folds}", f"data.fold={fold}", f"data.fold_split={holdout}"))
    task = load_task_for(cfg)
    split = "val" if holdout == "validation" else "test"
    x, lengths, y = (getattr(task, f"{a}_{split}") for a in ("x", "len", "y"))
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        m = train(cfg, Path(tmp) / "run", quiet=True)
        model = IntModel.load(Path(tmp) / "run" / "model.json")
    right = int8_logits(model, x, lengths).argmax(1) == y
    teacher = m["teacher_val_accuracy"] if split == "val" else m["teacher_accuracy"]
    return {"index": getattr(task, f"index_{split}").tolist(), "right": right.astype(int).tolist(),
            "teacher_right": round(teacher * len(y)), "shipped": m["shipped_student"],
            "seconds": round(time.time() - t0, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="arrow_head,osuleaf,pickup_gesture")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0, help="deals the folds and seeds every run")
    ap.add_argument("--holdout", choices=("test", "validation"), default="test",
                    help="the held-out fold is the run's test split (nested: only scored; the default) or its "
                         "validation split (also used to choose epochs and the fallback)")
    ap.add_argument("--candidate", action="append", default=[], help="NAME[:SECTION.KEY=VALUE;...] (repeatable)")
    ap.add_argument("--json", help="keep every run here (and skip those already in it)")
    ap.add_argument("--only", help="run only these folds (0-based, comma-separated)")
    ap.add_argument("--merge", action="append", default=[], help="another --json's runs, read for the table")
    ap.add_argument("--table", action="store_true", help="print the table from --json and --merge; train nothing")
    args = ap.parse_args()
    candidates = [parse_candidate(c) for c in args.candidate or ["default"]]
    store = Path(args.json) if args.json else None
    done: dict = json.loads(store.read_text()) if store and store.is_file() else {}
    datasets = args.datasets.split(",")

    def run_key(dataset: str, fold: int, settings: tuple[str, ...]) -> str:
        nested = "|nested" if args.holdout == "test" else ""  # runs stored before --holdout existed: validation
        return f"{dataset}|{args.seed}|{args.folds}|{fold}|{';'.join(settings)}{nested}"

    only = [] if args.table else [int(f) for f in args.only.split(",")] if args.only else range(args.folds)
    if any(not 0 <= f < args.folds for f in only):
        ap.error(f"--only: folds are 0..{args.folds - 1}")
    for dataset in datasets:
        for fold in only:
            for name, settings in candidates:
                key = run_key(dataset, fold, settings)
                if key in done:
                    continue
                done[key] = run_fold(dataset, args.seed, args.folds, fold, settings, args.holdout)
                r = done[key]
                print(f"  {dataset} fold {fold + 1}/{args.folds} {name}: {sum(r['right'])}/{len(r['right'])} "
                      f"(teacher {r['teacher_right']}, ships {r['shipped']}), {r['seconds']:.0f} s", flush=True)
                if store:
                    tmp = store.with_name(f".{store.name}.tmp")
                    tmp.write_text(json.dumps(done, indent=1))
                    tmp.replace(store)
    for extra in args.merge:
        done.update(json.loads(Path(extra).read_text()))
    datasets = [d for d in datasets if all(run_key(d, fold, s) in done
                                           for fold in range(args.folds) for _, s in candidates)]
    if not datasets:
        print("no dataset has every fold of every candidate yet (--merge the other processes' --json)")
        return

    def pooled(dataset: str, settings: tuple[str, ...]) -> tuple[np.ndarray, int]:
        index, right, teacher = [], [], 0
        for fold in range(args.folds):
            r = done[run_key(dataset, fold, settings)]
            index += r["index"]
            right += r["right"]
            teacher += r["teacher_right"]
        return np.array(right)[np.argsort(index)], teacher

    print(f"\nint8 student, held-out folds pooled ({args.folds} folds of the training split, seed {args.seed}, "
          f"each fold the run's {args.holdout} split); "
          f"+/-: samples only this candidate / only {candidates[0][0]} gets right; p: two-sided sign test")
    head = ["dataset", "candidate", "int8 right", "%", "teacher", "+", "-", "p"]
    rows, total = [], {}
    for dataset in datasets + ["all"]:
        first = None
        for name, settings in candidates:
            if dataset == "all":
                right, teacher = total[name]
            else:
                right, teacher = pooled(dataset, settings)
                prev = total.get(name, (np.zeros(0, int), 0))
                total[name] = (np.concatenate([prev[0], right]), prev[1] + teacher)
            if first is None:
                first = right
            wins, losses = int(np.sum((right == 1) & (first == 0))), int(np.sum((right == 0) & (first == 1)))
            same = name == candidates[0][0]
            rows.append([dataset, name, f"{right.sum()}/{len(right)}", f"{100 * right.mean():.1f}",
                         f"{teacher}", "" if same else str(wins), "" if same else str(losses),
                         "" if same else f"{sign_test(wins, losses):.2f}"])
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    for r in [head, ["-" * w for w in widths]] + rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))


if __name__ == "__main__":
    main()
