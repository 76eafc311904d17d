"""``kd2mcu train``: data -> teacher -> TinyLSTM student by distillation -> a run folder.

The run folder (written atomically, like a build folder):
- ``config.toml``: the resolved configuration (``kd2mcu train --config RUN/config.toml`` repeats it);
- ``data.json``: classes, feature normalization (fitted on the training split) or the character
  vocabulary, sequence length, split sizes: what the firmware needs to prepare its input;
- ``teacher.pt`` (a transformer teacher's weights), ``teacher.json`` (what the teacher is);
- ``student.pt`` (TinyLSTM's float weights at the end: after QAT when it ran), ``adapter.pt`` (the
  alignment adapters), ``student.onnx`` (the same float student as standard ONNX);
- ``model.json``: the integer model after quantization-aware training (``kd2mcu build RUN --out BUILD``);
- ``calib.npz`` and ``test.npz``: the normalized training and test splits in kd2mcu's data format
  (``kd2mcu sim BUILD --inputs RUN/test.npz``);
- ``metrics.json``; ``curves.png`` (loss and validation accuracy per stage) and ``confusion.png``.

Teacher outputs are cached under ``$KD2MCU_CACHE`` (default ``~/.cache/kd2mcu``; ``off`` disables),
keyed by the data and the teacher's settings.
"""
from __future__ import annotations

import copy
import os
import shutil
import time
from pathlib import Path
from typing import Optional

import numpy as np

from kd2mcu.errors import UserError
from kd2mcu.outputs import OutputFolder, write_json
from kd2mcu.train import config as config_mod
from kd2mcu.train.datasets import TaskData, load_task

LARGE_SPLIT = 2000  # training samples above which [distill] batch_size = 0 (auto) means 64
# [teacher] kind = "auto" on sensor data, no weights given, combine = "mean": the rocket teacher weighs twice
# (nested 5-fold cross-validation of three univariate sets' training splits: int8 student 249 of 286 held-out
# samples against 246 with equal weights; the teacher 257 against 254).
AUTO_ROCKET_WEIGHTS = (1.0, 2.0)
TRANSFER_BATCH = 32  # [distill] batch_size = 0 (auto) up to LARGE_SPLIT samples when stage 2 adds sensor views
RUN_FILES = ("config.toml", "data.json", "student.pt", "student.onnx", "metrics.json")


TEACHER_TMP_PREFIX = "kd2mcu-teacher-"


def _tmpdir() -> Path:
    import tempfile

    return Path(tempfile.gettempdir())


def cache_dir() -> Optional[Path]:
    value = os.environ.get("KD2MCU_CACHE", "")
    if value.lower() == "off":
        return None
    return Path(value) if value else Path.home() / ".cache" / "kd2mcu"


def load_task_for(cfg: dict) -> TaskData:
    d = cfg["data"]
    if d["train_file"]:
        if d["subset"]:
            raise UserError("[data] subset is for the bundled datasets; cut your own file instead")
        return load_task(data=d["train_file"], test=d["test_file"] or None, seed=cfg["run"]["seed"],
                         val_fraction=d["val_fraction"], max_len=d["max_len"] or None, max_vocab=d["max_vocab"],
                         frame_stack=d["frame_stack"], folds=d["folds"], fold=d["fold"],
                         fold_split=d["fold_split"], stack_steps=d["stack_steps"])
    if d["test_file"]:
        raise UserError("[data] test_file (--test) needs train_file (--data)")
    return load_task(dataset=d["dataset"], seed=cfg["run"]["seed"], val_fraction=d["val_fraction"],
                     max_len=d["max_len"] or None, max_vocab=d["max_vocab"], subset=d["subset"] or None,
                     frame_stack=d["frame_stack"], folds=d["folds"], fold=d["fold"], fold_split=d["fold_split"],
                     stack_steps=d["stack_steps"])


def get_teacher(task: TaskData, cfg: dict, quiet: bool):
    """(TeacherOutputs, the teacher's weights to keep or None), from the cache when it has them. Several
    kinds joined by "+" (``transformer+rocket``) are one ensemble teacher (``teacher.combine``); its
    weights to keep are the transformer's."""
    from kd2mcu.train import teacher as T

    tcfg = cfg["teacher"]
    kind = tcfg["kind"]
    if "+" in kind:
        parts, weights = [], None
        for part in kind.split("+"):
            out, w = get_teacher(task, dict(cfg, teacher=dict(tcfg, kind=part)), quiet)
            parts.append(out)
            weights = weights or w
        return T.combine(parts, task.y_val, tcfg["combine"], tcfg["weights"]), weights
    if kind == "logits":
        if not cfg["data"]["train_file"]:
            raise UserError("[teacher] kind = logits needs your own data (--data, rows in the logits file's order); "
                            "for a bundled dataset use the transformer teacher")
        return T.read_logits(task, tcfg["path"], test_in_train_file=not cfg["data"]["test_file"],
                             train_file=cfg["data"]["train_file"]), None
    if kind == "onnx":
        return T.run_onnx(task, tcfg["path"]), None
    if kind == "rocket":
        from kd2mcu.train import teacher_rocket

        return teacher_rocket.fit(task, tcfg, quiet), None
    if kind == "tfidf":
        from kd2mcu.train import teacher_tfidf

        return teacher_tfidf.fit(task, tcfg, quiet), None
    layers = [int(v) for v in cfg["distill"]["align_layers"]]
    depth = tcfg["depth"] if kind == "transformer" else None
    if kind == "transformer":
        layers = layers or T.default_align_layers(depth)
        if max(layers) > depth:
            raise UserError(f"[distill] align_layers {layers}: the teacher has {depth} layers")
    root = cache_dir()
    key = T.cache_key(task, tcfg, layers)
    entry = root / "teachers" / key if root else None
    if entry is not None and (entry / "outputs.npz").is_file():
        weights = entry / "teacher.pt"
        outputs = T.load_outputs(entry / "outputs.npz")
        if kind == "transformer" and weights.is_file():
            outputs.label = T.labeller(T.load_transformer(weights))
        return outputs, (weights if weights.is_file() else None)
    import torch

    if kind == "transformer":
        model, outputs = T.train_transformer(task, tcfg, layers, quiet)
    else:
        from kd2mcu.train.teacher_hf import finetune

        model, outputs = finetune(task, tcfg, layers, quiet)
    tmp = _tmpdir() / f"{TEACHER_TMP_PREFIX}{os.getpid()}.pt"
    state = {"kind": kind, "shape": getattr(model, "shape", None), "state": model.state_dict()}
    if entry is None:
        torch.save(state, tmp)  # removed by train() whatever happens next
        return outputs, tmp
    stage = entry.parent / f".{key}.tmp-{os.getpid()}"
    try:
        stage.mkdir(parents=True, exist_ok=True)
        T.save_outputs(outputs, stage / "outputs.npz")
        torch.save(state, stage / "teacher.pt")
        if not entry.exists():
            os.replace(stage, entry)
    except OSError:  # an unwritable cache costs the next run a teacher, nothing more
        torch.save(state, tmp)
        return outputs, tmp
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return outputs, entry / "teacher.pt"


def train(cfg: dict, out: Path, force: bool = False, quiet: bool = False, inputs=()) -> dict:
    """Run every stage and write the run folder; returns the metrics. ``out`` is claimed (checked, locked,
    its staging folder made) before any work is done, so nothing is trained for a folder that cannot be
    written; ``inputs``: files besides the data and the teacher that the run reads (its config file)."""
    import torch

    d, t = cfg["data"], cfg["teacher"]
    inputs = [*inputs, d["train_file"] or None, d["test_file"] or None, t["path"] or None, d["unlabeled"] or None]
    if "logits" in t["kind"].split("+") and not d["train_file"]:
        raise UserError("[teacher] kind = logits needs your own data (--data, rows in the logits file's order); "
                        "for a bundled dataset use the transformer teacher")
    torch.set_num_threads(cfg["run"]["threads"])
    torch.use_deterministic_algorithms(True)
    t0 = time.time()
    task = load_task_for(cfg)  # the inputs first (a few seconds at most), then the output, then the work
    unlabeled = None
    if d["unlabeled"]:
        if cfg["distill"]["beta"] > 0:
            raise UserError(f"[data] unlabeled with [distill] beta = {cfg['distill']['beta']}: the corpus's rows have no "
                            "per-step teacher states to align with; set beta = 0")
        from kd2mcu.train.labelling import labelled_corpus, unlabeled_rows

        unlabeled = unlabeled_rows(task, d["unlabeled"])
        inputs.append(labelled_corpus(d["unlabeled"]))  # --out may not replace the corpus either
    if task.kind != "text" and "pretrained" in t["kind"].split("+"):
        raise UserError("[teacher] kind = pretrained is for text datasets; use the transformer teacher for sensor data")
    with OutputFolder(Path(out), force, "run", inputs) as folder:
        return _train_into(folder.stage, cfg, quiet, task, t0, unlabeled)


def batch_size(user: int, n_train: int, sensor_views: bool) -> int:
    """``[distill] batch_size`` resolved: the user's; auto (0): 64 above ``LARGE_SPLIT`` training samples, else
    ``TRANSFER_BATCH`` (32) where stage 2 adds a transfer set of sensor views (``sensor_views``: chosen with
    160 views by nested cross-validation), else 8: on the training split alone, 32 would leave a few steps
    per epoch (BasicMotions' 34 training series: two; its student without the teacher fell to 80%)."""
    if user:
        return user
    return 64 if n_train > LARGE_SPLIT else TRANSFER_BATCH if sensor_views else 8


def schedule(cfg: dict, n_train: int) -> dict:
    """The settings the stages run with: ``cfg`` with the automatic values resolved for a training split
    of ``n_train`` samples. ``[distill] batch_size = 0``: 8, or 64 above ``LARGE_SPLIT`` samples (raised to
    ``TRANSFER_BATCH`` once the run knows stage 2 has sensor views: ``batch_size``). ``[run]
    stage_samples = S`` > 0: every stage's epochs cut to at most S / n_train (at least 1; stage 2's transfer set
    does not count, it is part of the stage's samples by choice); the no-teacher student gets the warm-up's
    and stage 2's epochs together, as before. ``[distill] transfer_max = M`` > 0: the transfer set's views per
    sample cut to at most M / n_train (at least 1; none stays none)."""
    work = copy.deepcopy(cfg)
    d = work["distill"]
    if d["batch_size"] == 0:
        d["batch_size"] = batch_size(0, n_train, False)
    if d["transfer_max"] and d["transfer"]:
        d["transfer"] = min(d["transfer"], max(1, d["transfer_max"] // max(n_train, 1)))
    budget = work["run"]["stage_samples"]
    if budget:
        cap = max(1, budget // max(n_train, 1))
        for section, key in (("teacher", "epochs"), ("teacher", "finetune_epochs"), ("distill", "warmup_epochs"),
                             ("distill", "epochs"), ("qat", "epochs")):
            work[section][key] = min(work[section][key], cap)
    return work


def absolute_paths(cfg: dict) -> dict:
    """``cfg`` with its file paths (data, test data, teacher) made absolute, so that the run's config.toml
    repeats the run from any directory."""
    out = copy.deepcopy(cfg)
    for section, key in (("data", "train_file"), ("data", "test_file"), ("data", "unlabeled"), ("teacher", "path")):
        value = out[section][key]
        if value and not (key == "path" and value == "minilm"):  # "minilm" names the packaged model
            out[section][key] = str(Path(value).expanduser().resolve())
    return out


def clearly_better(pred_a: np.ndarray, pred_b: np.ndarray, y: np.ndarray) -> bool:
    """Whether predictions a beat b on labels y by more than chance explains: of the samples exactly one of
    them gets right (a alone: n_a, b alone: n_b), a's surplus n_a - n_b is at least 2 and above 1.96 *
    sqrt(n_a + n_b) (a one-sided sign test at about 2.5%). On a validation split of 5 or 8 samples a plain
    comparison swapped a distilled student (80% on the test split) for one trained alone (64%)."""
    n_a = int(np.sum((pred_a == y) & (pred_b != y)))
    n_b = int(np.sum((pred_b == y) & (pred_a != y)))
    return n_a - n_b >= 2 and n_a - n_b > 1.96 * np.sqrt(n_a + n_b)


def auto_teacher(task: TaskData) -> str:
    """What ``[teacher] kind = "auto"`` (the default) trains: on sensor data the transformer and the rocket
    teacher as one ensemble (the transformer alone where aeon is missing or the series are shorter than
    MiniRocket's kernels); on text the transformer and the tfidf teacher (the transformer alone without
    scikit-learn). The transformer is always distilled; the other member gives it the accuracy it lacks on
    small sets (benchmarks/accuracy_panel.py)."""
    import importlib.util

    if task.kind == "text":
        return "transformer+tfidf" if importlib.util.find_spec("sklearn") else "transformer"
    from kd2mcu.train.teacher_rocket import MIN_SERIES_STEPS

    usable = all(importlib.util.find_spec(m) for m in ("aeon", "sklearn")) and \
        task.max_len * task.frame_stack >= MIN_SERIES_STEPS
    return "transformer+rocket" if usable else "transformer"


def resolve_teacher(tcfg: dict, task: TaskData) -> dict:
    """``[teacher]`` with kind = "auto" resolved (``auto_teacher``); the auto sensor ensemble, given no weights
    and combining by the mean, weighs the rocket teacher twice (``AUTO_ROCKET_WEIGHTS``)."""
    if tcfg["kind"] != "auto":
        return tcfg
    kind = auto_teacher(task)
    weights = list(AUTO_ROCKET_WEIGHTS) if kind == "transformer+rocket" and not tcfg["weights"] and \
        tcfg["combine"] == "mean" else tcfg["weights"]
    return dict(tcfg, kind=kind, weights=weights)


def _train_into(stage: Path, cfg: dict, quiet: bool, task: TaskData, t0: float, unlabeled=None) -> dict:
    work = schedule(cfg, len(task.y_train))
    work["teacher"] = resolve_teacher(work["teacher"], task)
    if work["distill"]["gamma"] > 0 and "transformer" not in work["teacher"]["kind"].split("+"):
        raise UserError(f"[distill] gamma = {work['distill']['gamma']}: attention transfer needs a transformer teacher "
                        f"trained here (kind transformer, alone or in an ensemble); this one is "
                        f"{work['teacher']['kind']}")
    teacher, teacher_weights = get_teacher(task, work, quiet)
    try:
        return _distill_and_write(stage, work, quiet, task, teacher, teacher_weights, t0, resolved=cfg,
                                  unlabeled=unlabeled)
    finally:  # the teacher's weights in TMPDIR when there is no cache (KD2MCU_CACHE=off)
        if teacher_weights is not None and teacher_weights.name.startswith(TEACHER_TMP_PREFIX) and \
                teacher_weights.parent == _tmpdir():
            teacher_weights.unlink(missing_ok=True)


def _distill_and_write(stage: Path, cfg: dict, quiet: bool, task: TaskData, teacher, teacher_weights, t0,
                       resolved: dict, unlabeled=None) -> dict:
    import torch

    from kd2mcu.train import distill, plots
    from kd2mcu.train import student as student_mod

    if cfg["distill"]["beta"] > 0 and teacher.per_step and teacher.hidden and \
            teacher.hidden[0].shape[1] != task.max_len:
        raise UserError(f"the teacher's hidden states have {teacher.hidden[0].shape[1]} steps, the data "
                        f"{task.max_len}: give pooled [N, D] states instead")
    t_teacher = time.time() - t0

    seed = cfg["run"]["seed"]
    dcfg = cfg["distill"]
    student = distill.build_student(task, cfg["student"], seed)
    adapters = distill.make_adapters(teacher, student, dcfg["beta"])
    views = distill.has_transfer_set(task, teacher, dcfg, adapters)
    alone_batch = dcfg["batch_size"]  # the student trained without the teacher sees the training split alone
    dcfg = cfg["distill"] = dict(dcfg, batch_size=batch_size(resolved["distill"]["batch_size"], len(task.y_train),
                                                             views and task.kind == "sequence"))
    histories = [dict(h, run="teacher") for h in teacher.history]
    from kd2mcu.train import prune

    h1 = distill.train_hard(student, task, dcfg, dcfg["warmup_epochs"], seed, "warm-up", quiet)
    attention_proj = distill.make_attention_projection(teacher, student, dcfg["gamma"], task.max_len)
    if dcfg["gamma"] > 0 and attention_proj is None:
        raise UserError(f"[distill] gamma = {dcfg['gamma']}: attention transfer needs a transformer teacher trained "
                        f"here (kind transformer, alone or in an ensemble); this one is {cfg['teacher']['kind']}")
    pruner = prune.Pruner(student, cfg["prune"], dcfg["epochs"]) if cfg["prune"]["sparsity"] > 0 else None
    h2 = distill.train_distill(student, adapters, task, teacher, dcfg, seed + 1, quiet, attention_proj=attention_proj,
                               unlabeled=unlabeled,
                               pruner=pruner)
    histories += [dict(h1, run="student"), dict(h2, run="student")]
    float_logits = distill.predict(student, task.x_test, task.len_test)
    distilled_val = distill.accuracy(student, task.x_val, task.len_val, task.y_val)

    baseline = baseline_test = baseline_val = None
    if cfg["run"]["baseline"] or dcfg["fallback"]:  # the same student trained without the teacher
        baseline = distill.build_student(task, cfg["student"], seed)
        epochs_b = dcfg["warmup_epochs"] + dcfg["epochs"]
        bcfg = dict(dcfg, batch_size=alone_batch)
        hb = distill.train_hard(baseline, task, bcfg, epochs_b, seed, "baseline", quiet,
                                pruner=prune.Pruner(baseline, cfg["prune"], epochs_b) if pruner is not None else None)
        histories.append(dict(hb, run="baseline (no teacher)"))
        baseline_test = distill.accuracy(baseline, task.x_test, task.len_test, task.y_test)
        baseline_val = distill.accuracy(baseline, task.x_val, task.len_val, task.y_val)
    shipped, qat_dcfg = "distilled", dcfg
    if dcfg["fallback"] and baseline is not None and clearly_better(
            distill.predict(baseline, task.x_val, task.len_val).argmax(1),
            distill.predict(student, task.x_val, task.len_val).argmax(1), task.y_val):
        # distillation made the student worse on validation: ship the one trained alone, and QAT on hard labels
        shipped = (f"trained without the teacher (fallback: validation accuracy {baseline_val:.3f} against "
                   f"{distilled_val:.3f} distilled)")
        student, qat_dcfg = baseline, dict(bcfg, alpha=0.0, beta=0.0)
        shipped_logits = distill.predict(student, task.x_test, task.len_test)
    else:
        shipped_logits = float_logits
    int_model = None
    if cfg["qat"]["enabled"]:
        from kd2mcu.quant.qat import calibrate
        from kd2mcu.quant.qat import int_model as make_int_model

        stats = calibrate(student, task.x_train, task.len_train)  # once: PTQ and QAT share these ranges
        ptq = make_int_model(student, stats, task.max_len, list(task.classes))
        ptq_logits = int8_logits(ptq, task.x_test, task.len_test)
        h3, int_model = distill.train_qat(student, stats, task, teacher, qat_dcfg, cfg["qat"], seed + 2, quiet)
        attach_preprocessing(int_model, task)
        histories.append(dict(h3, run="student"))
    t_student = time.time() - t0 - t_teacher

    test_pred = shipped_logits.argmax(1)
    metrics = {
        "dataset": task.name, "kind": task.kind, "classes": len(task.classes),
        "samples": {"train": len(task.y_train), "val": len(task.y_val), "test": len(task.y_test),
                    **({"unlabeled": int(len(unlabeled[0]))} if unlabeled is not None else {})},
        "teacher": teacher.description,
        "teacher_accuracy": teacher.accuracy("test", task.y_test),
        "teacher_val_accuracy": teacher.accuracy("val", task.y_val),
        "student_accuracy": float(np.mean(float_logits.argmax(1) == task.y_test)),  # the distilled one
        "student_val_accuracy": distilled_val,
        "shipped_student": shipped,
        "attention_transfer": attention_proj is not None,
        "shipped_float_accuracy": float(np.mean(test_pred == task.y_test)),
        "student_params": student.num_params(),
        "block_sparsity": prune.achieved(student),
        "teacher_params": teacher.params or None,
        "seed": seed,
        "seconds": {"teacher": round(t_teacher, 1), "student": round(t_student, 1)},
        "schedule": {"teacher_epochs": cfg["teacher"]["finetune_epochs" if cfg["teacher"]["kind"] == "pretrained" else
                                                  "epochs"], "warmup_epochs": dcfg["warmup_epochs"],
                     "distill_epochs": len(h2["loss"]), "distill_selection": distill.selection(dcfg, task),
                     "distill_best_epoch": h2.get("best_epoch"), "qat_epochs": cfg["qat"]["epochs"],
                     "batch_size": dcfg["batch_size"],
                     "baseline_batch_size": alone_batch,
                     "transfer_views": 0 if not views else
                     dcfg["transfer"] if task.kind == "sequence" else dcfg["text_transfer"]},
    }
    if baseline is not None:
        metrics["baseline_accuracy"] = baseline_test  # measured before any QAT
        metrics["baseline_val_accuracy"] = baseline_val
    if int_model is not None:
        from kd2mcu.quant.qat import qat_forward

        with torch.no_grad():
            qat_logits = qat_forward(student, int_model, torch.from_numpy(task.x_test),
                                     torch.from_numpy(task.len_test)).numpy()
        int8 = int8_logits(int_model, task.x_test, task.len_test)
        test_pred = int8.argmax(1)
        metrics.update({
            "qat_accuracy": float(np.mean(qat_logits.argmax(1) == task.y_test)),
            # student.pt / student.onnx hold the float weights after QAT (the distilled ones unless QAT moved)
            "saved_float_student_accuracy": distill.accuracy(student, task.x_test, task.len_test, task.y_test),
            "int8_accuracy": float(np.mean(test_pred == task.y_test)),
            "int8_val_accuracy": float(np.mean(int8_logits(int_model, task.x_val, task.len_val).argmax(1) == task.y_val))
            if len(task.y_val) else None,
            "ptq_int8_accuracy": float(np.mean(ptq_logits.argmax(1) == task.y_test)),
            "qat_int8_argmax_agreement": float(np.mean(qat_logits.argmax(1) == test_pred)),
            "qat_int8_max_abs_logit_difference": float(np.abs(qat_logits - int8).max(initial=0.0)),
        })

    (stage / "config.toml").write_text(config_mod.to_toml(absolute_paths(resolved)))
    write_json(stage / "data.json", task.to_json())
    write_json(stage / "teacher.json", {"kind": cfg["teacher"]["kind"], "description": teacher.description,
                                        "params": teacher.params, "aligned_layers": teacher.layers,
                                        "alignment": "per time step" if teacher.per_step else "pooled"})
    if teacher_weights is not None:
        shutil.copyfile(teacher_weights, stage / "teacher.pt")
        if "transformer" in cfg["teacher"]["kind"].split("+"):  # alone or the ensemble's member
            from kd2mcu.train.teacher import export_onnx as export_teacher
            from kd2mcu.train.teacher import load_transformer

            export_teacher(load_transformer(teacher_weights), task.x_train[:2], teacher.layers,
                           stage / "teacher.onnx")
    student_mod.save(student, stage / "student.pt")
    if int_model is not None:
        (stage / "model.json").write_text(int_model.to_json())
    torch.save([a.state_dict() for a in adapters], stage / "adapter.pt")
    student_mod.export_onnx(student, student_mod.example_input(student), stage / "student.onnx")
    np.savez(stage / "calib.npz", x=task.x_train, y=task.y_train, lengths=task.len_train)
    np.savez(stage / "test.npz", x=task.x_test, y=task.y_test, lengths=task.len_test, **raw_test_inputs(task))
    if int_model is not None:
        metrics["int8_hostsim_accuracy"] = hostsim_accuracy(int_model, stage / "test.npz")
    write_json(stage / "metrics.json", metrics)
    plots.curves(histories, stage / "curves.png", f"kd2mcu train: {task.name}")
    shipped = "int8 student" if int_model is not None else "student"
    plots.confusion(task.y_test, test_pred, task.classes, stage / "confusion.png",
                    f"{shipped} on the test split ({np.mean(test_pred == task.y_test):.1%})")
    return metrics


def attach_preprocessing(int_model, task: TaskData) -> None:
    """What the generated C needs to take the user's own input: the frame stacking, the normalization with
    the feature names (sensor data), the character vocabulary and trained length (text)."""
    from kd2mcu.quant.intmodel import Normalization, TextEncoding

    int_model.frame_stack = task.frame_stack
    if task.normalization is not None:
        int_model.normalization = Normalization(list(task.normalization["mean"]), list(task.normalization["std"]),
                                                list(task.features))
    if task.kind == "text" and task.vocab is not None:
        int_model.text = TextEncoding(list(task.vocab), task.max_len)
    int_model.validate()


def raw_test_inputs(task: TaskData) -> dict:
    """Extra arrays of the run's test.npz with which ``kd2mcu sim`` checks the C's own pre-processing: the
    test samples in raw units (``x_raw``, float32: x * std + mean, padding at the mean) or the raw test
    texts (``texts``)."""
    if task.normalization is not None:
        k = task.frame_stack
        mean = np.tile(np.asarray(task.normalization["mean"], np.float64), k)
        std = np.tile(np.asarray(task.normalization["std"], np.float64), k)
        return {"x_raw": (task.x_test.astype(np.float64) * std + mean).astype(np.float32)}
    if task.texts_test is not None:
        return {"texts": np.array(task.texts_test, dtype=str)}
    return {}


def hostsim_accuracy(model, test_npz: Path) -> Optional[float]:
    """The generated C's accuracy on the test split, compiled with gcc and checked bit for bit against the
    integer reference (None where gcc is missing)."""
    import tempfile

    from kd2mcu.codegen import render
    from kd2mcu.dataio import load_npz
    from kd2mcu.quant import reference
    from kd2mcu.targets import hostsim

    if shutil.which("gcc") is None:
        return None
    name = "kd2mcu_model"
    data = load_npz(test_npz, "the run's test split")
    x_q = data.x.astype(np.int32) if model.is_token_model else reference.quantize_input(model, data.x)
    with tempfile.TemporaryDirectory() as tmp:
        render.write_sources(model, name, Path(tmp) / "src")
        exe = hostsim.compile_harness(Path(tmp) / "src", name)
        sim, mismatches, first = hostsim.check(exe, model, x_q, data.lengths)
    if mismatches:  # a bug, never a tolerance
        raise RuntimeError(f"the generated C differs from the integer reference: {first}")
    return float(np.mean(sim.logits.argmax(1) == data.y))


def int8_logits(model, x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The integer reference's logits, dequantized (equal to the generated C's, bit for bit)."""
    from kd2mcu.quant import reference

    x_q = x.astype(np.int32) if model.is_token_model else reference.quantize_input(model, x)
    return reference.dequantize_logits(model, reference.run(model, x_q, lengths)["logits"])


def resolve_config(config_path, dataset=None, data=None, test=None, seed=None, baseline=False,
                   teacher=None, teacher_path=None, settings: tuple = (), unlabeled=None) -> dict:
    """The config file's settings overridden by command-line flags, checked."""
    cfg = config_mod.load(config_path)
    overrides: dict = {}

    def put(section, key, value):
        overrides.setdefault(section, {})[key] = value

    if dataset is not None and data is not None:
        raise UserError("give either --dataset or --data (and --test), not both")
    if test is not None and data is None:
        raise UserError("--test needs --data (your training file)")
    if dataset is not None:
        put("data", "dataset", dataset)
        put("data", "train_file", "")
        put("data", "test_file", "")
    if data is not None:
        put("data", "train_file", str(data))
        put("data", "test_file", "" if test is None else str(test))
    if seed is not None:
        put("run", "seed", seed)
    if baseline:
        put("run", "baseline", True)
    if teacher is not None:
        put("teacher", "kind", teacher)
    if teacher_path is not None:
        put("teacher", "path", str(teacher_path))
    if unlabeled is not None:
        put("data", "unlabeled", str(unlabeled))
    for text in settings:
        section, key, value = config_mod.parse_assignment(text)
        put(section, key, value)
    cfg = config_mod.merge(cfg, overrides, "command line")
    return config_mod.validate(cfg, "configuration")


def summary(metrics: dict) -> str:
    def pct(v):
        return "n/a" if v is None else f"{v:.1%}"

    line = (f"{metrics['dataset']}: teacher {pct(metrics['teacher_accuracy'])}"
            f" ({metrics['teacher_params'] or '?'} params), student {pct(metrics['student_accuracy'])}"
            f" ({metrics['student_params']} params)")
    if "baseline_accuracy" in metrics:
        line += f", same student without the teacher {pct(metrics['baseline_accuracy'])}"
    if "int8_accuracy" in metrics:
        line += (f"; int8 after QAT {pct(metrics['int8_accuracy'])}, int8 by post-training quantization "
                 f"{pct(metrics['ptq_int8_accuracy'])}")
    return line + " (test split)"


