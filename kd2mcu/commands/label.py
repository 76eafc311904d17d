"""``kd2mcu label``: a teacher's logits over a corpus, in shards, on Ray when it is installed.

The driver reads and encodes the corpus (``kd2mcu.train.labelling``), claims the labels folder
(``kd2mcu.train.label_store``: the shards an interrupted run left are kept) and hands the missing
shards to workers:

- **Ray Data** (the ``scale`` extra): a dataset of one item per missing shard, ``map_batches`` over an
  actor pool (``--workers`` actors, one CPU each, one teacher loaded per actor); the encoded corpus
  is put once into Ray's object store and read by every actor from there. ``--ray-address`` joins a
  running cluster (``auto`` or HOST:PORT); otherwise a local Ray instance with ``--workers`` CPUs is
  started and stopped. An actor that dies is restarted and its shard computed again
  (``MAX_RESTARTS``); each finished shard comes back to the driver, which writes it.
- **One process** (``--workers 0``, or Ray not installed): the same worker called in the driver.

A shard's rows are labelled in sub-batches of ``--batch-size`` counted from the shard's start, so
the labels are the same whatever the engine and the number of workers.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

from kd2mcu.errors import UserError
from kd2mcu.train import label_store, labelling

SCALE_HINT = "pip install 'kd2mcu[scale]'"
MAX_RESTARTS = 3  # per actor: a worker that keeps dying (out of memory, say) ends the run instead of looping


def ray_available() -> bool:
    try:
        import ray
    except ImportError:
        return False
    return hasattr(ray, "init")  # not a folder that happens to be called ray


def run(teacher_kind: str, teacher_path, data, out, ray_address: Optional[str] = None, workers: Optional[int] = None,
        batch_size: int = 256, shard_rows: int = label_store.DEFAULT_SHARD_ROWS, hidden: bool = False,
        force: bool = False, quiet: bool = False, crash_on_first_batch: Optional[str] = None) -> dict:
    """Label ``data`` with the teacher into the folder ``out``; returns the manifest (plus ``kept``: the shards
    an earlier run had finished)."""
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be at least 1")
    if shard_rows < 1:
        raise UserError(f"--shard-rows {shard_rows}: must be at least 1")
    if workers is not None and workers < 0:
        raise UserError(f"--workers {workers}: must be 0 (one process) or more")
    use_ray = workers != 0 and ray_available()
    if not ray_available() and (ray_address or (workers or 0) > 0):
        raise UserError(f"--{'ray-address' if ray_address else 'workers'} needs Ray, which is not installed: "
                        f"{SCALE_HINT} (or leave it out to label in one process)")
    if ray_address and workers == 0:
        raise UserError("--ray-address with --workers 0: give the number of Ray workers, or leave --ray-address out")

    if use_ray and ray_address and ray_address != "auto":
        _check_reachable(ray_address)
    teacher = labelling.resolve_teacher(teacher_kind, teacher_path)
    corpus = labelling.read_corpus(data)
    inputs = labelling.encode_corpus(teacher, corpus)
    identity = {"teacher_kind": teacher.kind, "teacher_sha256": teacher.sha256, "data_sha256": corpus.sha256,
                "rows": len(corpus), "shard_rows": int(shard_rows), "classes": teacher.classes,
                "hidden_layers": teacher.layers if hidden else [], "batch_size": int(batch_size),
                # how the corpus was encoded (the run's data.json, or none for a bare teacher)
                "encoding_sha256": hashlib.sha256(json.dumps(teacher.data, sort_keys=True).encode()).hexdigest()}
    if hidden and not teacher.layers:
        raise UserError(f"--hidden: the teacher {teacher.path} names no layers to pool (an ONNX file with a run's "
                        "teacher.json beside it, a run's teacher.pt or a Hugging Face folder has them)")
    with _ray_session(ray_address, workers) if use_ray else contextlib.nullcontext() as session:
        return _label_into(out, identity, force, data, teacher_path, teacher, corpus, inputs, hidden, batch_size,
                           quiet, session, crash_on_first_batch)


def _label_into(out, identity, force, data, teacher_path, teacher, corpus, inputs, hidden, batch_size, quiet,
                session, crash_on_first_batch) -> dict:
    use_ray = session is not None
    folder = label_store.LabelFolder(out, identity, force, inputs=[data, teacher_path])
    try:
        kept = folder.done()
        todo = [k for k in range(len(folder.bounds)) if k not in set(kept)]
        if not quiet and not use_ray:
            print(f"label: one process{'' if ray_available() else f'; to scale out on Ray: {SCALE_HINT}'}",
                  file=sys.stderr)
        if not quiet and "member of" in teacher.description:
            print(f"label: the teacher is {teacher.description} (the run keeps no other member)", file=sys.stderr)
        if not quiet and kept:
            print(f"label: {len(kept)} of {len(folder.bounds)} shards kept from an earlier run", file=sys.stderr)
        t0 = time.time()
        rows_todo = sum(folder.bounds[k][1] - folder.bounds[k][0] for k in todo)
        if use_ray:
            engine, n_workers, startup = session
            _label_on_ray(folder, todo, inputs, (teacher, hidden, batch_size), n_workers, quiet, crash_on_first_batch)
        else:
            engine, n_workers, startup = "one process", 0, 0.0
            _label_here(folder, todo, inputs, (teacher, hidden, batch_size), quiet)
        seconds = time.time() - t0 + startup
    except BaseException:
        folder.release()
        raise
    manifest = folder.finish({
        "teacher": {"kind": teacher.kind, "path": str(Path(teacher.path).resolve()), "sha256": teacher.sha256,
                    "description": teacher.description},
        "data": {"path": str(Path(data).resolve()), "sha256": corpus.sha256, "kind": corpus.kind},
        "classes": teacher.classes, "batch_size": int(batch_size), "engine": engine, "workers": n_workers,
        "last_run": {"shards": len(todo), "rows": rows_todo, "seconds": round(seconds, 3),
                     "ray_start_seconds": round(startup, 3),
                     # after Ray's start-up (the workers' own start, loading the teacher, is counted)
                     "rows_per_second": round(rows_todo / (seconds - startup), 1)
                     if seconds > startup and rows_todo else None},
    })
    return dict(manifest, kept=len(kept))


def _check_reachable(address: str, seconds: float = 5.0) -> None:
    """``--ray-address HOST:PORT``: a TCP connection to the cluster's GCS first (ray.init waits minutes on an
    address nobody answers)."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise UserError(f"--ray-address {address}: expected auto or HOST:PORT (the head node's GCS, port 6379 by "
                        "default)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=seconds).close()
    except OSError as exc:
        raise UserError(f"--ray-address {address}: no Ray cluster answers there ({exc.strerror or exc}); start one "
                        "with 'ray start --head' or check the address") from None


def _bar(total_rows: int, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total_rows, unit="rows", desc="label", disable=quiet, file=sys.stderr, dynamic_ncols=True)


def _label_here(folder, todo: list[int], inputs: dict, args: tuple, quiet: bool) -> None:
    worker = labelling.Labeller(*args)
    with _bar(sum(folder.bounds[k][1] - folder.bounds[k][0] for k in todo), quiet) as bar:
        for k in todo:
            start, stop = folder.bounds[k]
            folder.write_shard(k, worker.label(labelling.shard_inputs(inputs, start, stop)))
            bar.update(stop - start)


@contextlib.contextmanager
def _ray_session(address: Optional[str], workers: Optional[int]):
    """Join the cluster at ``address`` or start a local Ray instance with ``workers`` CPUs (stopped afterwards);
    yields (engine, workers, seconds it took). A Ray instance already running in this process is used as it is."""
    import logging

    import ray

    started, t0 = False, time.time()
    if not ray.is_initialized():
        try:
            # "local": a new instance even where another one runs on this machine (ray.init() would join it)
            ray.init(address=address or "local", num_cpus=None if address else (workers or os.cpu_count() or 1),
                     include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            auth = " (a cluster with token authentication needs RAY_AUTH_MODE=token and its token)" if address else ""
            raise UserError(f"cannot start or join {where} ({_first_line(exc)}); check --ray-address{auth}, or use "
                            "--workers 0 to label in one process") from None
        started = True
    try:
        yield f"Ray {ray.__version__}", workers or int(ray.cluster_resources().get("CPU", 1)), time.time() - t0
    finally:
        if started:
            ray.shutdown()


def _label_on_ray(folder, todo: list[int], inputs: dict, args: tuple, n: int, quiet: bool,
                  crash_on_first_batch: Optional[str]) -> None:
    """Label the shards ``todo`` on the connected Ray instance with ``n`` actors."""
    import logging
    import warnings

    import ray

    if not todo:
        return
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    items = [{"shard": k, **labelling.shard_inputs(inputs, *folder.bounds[k])} for k in todo]
    try:
        with warnings.catch_warnings():  # max_restarts has no named parameter yet (Ray 2.60)
            warnings.simplefilter("ignore")
            ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
                labelling.Labeller, batch_size=1, concurrency=min(n, len(items)), num_cpus=1,
                fn_constructor_args=(*args, 1, crash_on_first_batch),
                max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS)
        del items
        with _bar(sum(folder.bounds[k][1] - folder.bounds[k][0] for k in todo), quiet) as bar:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for i, k in enumerate(batch["shard"]):
                    k = int(k)
                    folder.write_shard(k, {name: batch[name][i] for name in batch if name != "shard"})
                    bar.update(folder.bounds[k][1] - folder.bounds[k][0])
    except ray.exceptions.RayError as exc:
        raise UserError(f"the Ray workers failed ({_first_line(exc)}); the shards finished so far are kept: run the "
                        "same command again to finish") from None


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exc).__name__
