"""Knowledge distillation of a teacher into TinyLSTM, in stages.

Stage 1 (warm-up): hard labels only. Stage 2 (distillation):

    loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(y, s)
           + beta * MSE(adapter(teacher_hidden), student_hidden)
           + gamma * MSE(L * softmax(proj(student_outputs)), L * teacher_received_attention)

with one adapter (Linear + LayerNorm, teacher width -> student width) per aligned teacher layer,
trained with the student. Per time step (masked to each sample's length) when teacher and student see
the same steps; on pooled states otherwise (the teacher's mean over its tokens against the student's
final state). When as many teacher layers are aligned as the student has layers they pair in order,
otherwise each aligns with the student's last layer. Attention transfer (``gamma`` > 0, a
transformer teacher seeing the student's steps): the attention each step receives in the teacher's
last layer (averaged over heads and queries, a distribution over the sample's L steps) against a
distribution over the student's steps, the softmax of a learned 1x1 projection (Linear(width, 1)) of
its last layer's outputs; both times L so that a uniform distribution is 1 everywhere, the MSE over
valid steps, on the training split's samples (not the transfer set's). T follows ``temperature_schedule`` (equal
parts of stage 2) when one is given. Each stage uses AdamW, a cosine learning rate and gradient
clipping, and keeps the epoch with the best validation accuracy.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from kd2mcu.train.datasets import TaskData
from kd2mcu.train.optim import MIN_VAL_SAMPLES, run_stage
from kd2mcu.train.student import Adapter, TinyLSTM
from kd2mcu.train.teacher import TeacherOutputs


def kd_loss(s_logits: torch.Tensor, t_logits: torch.Tensor, y: torch.Tensor, T: float, alpha: float) -> torch.Tensor:
    """alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(y, s)."""
    kl = F.kl_div(F.log_softmax(s_logits / T, 1), F.log_softmax(t_logits / T, 1), reduction="batchmean",
                  log_target=True)
    return alpha * T * T * kl + (1.0 - alpha) * F.cross_entropy(s_logits, y)


def masked_mse(a: torch.Tensor, b: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean squared error over the valid steps (mask [N, T]) or over all of [N, D]."""
    if mask is None:
        return F.mse_loss(a, b)
    m = mask.unsqueeze(-1).to(a.dtype)
    return ((a - b) ** 2 * m).sum() / (m.sum() * a.shape[-1]).clamp_min(1.0)


def temperature_at(epoch: int, epochs: int, temperature: float, schedule: list) -> float:
    if not schedule:
        return float(temperature)
    part = min(epoch * len(schedule) // max(epochs, 1), len(schedule) - 1)
    return float(schedule[part])


def build_student(task: TaskData, scfg: dict, seed: int) -> TinyLSTM:
    torch.manual_seed(seed)
    text = task.kind == "text"
    return TinyLSTM(input_size=scfg["embedding"] if text else task.num_features, hidden=scfg["hidden"],
                    num_classes=task.num_classes, layers=scfg["layers"], bidirectional=scfg["bidirectional"],
                    vocab=len(task.vocab) if text else 0, dropout=scfg["dropout"])


def predict(student: TinyLSTM, x: np.ndarray, lengths: np.ndarray, batch: int = 512) -> np.ndarray:
    student.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(x), batch):
            out.append(student(torch.from_numpy(x[s:s + batch]), torch.from_numpy(lengths[s:s + batch]))[0].numpy())
    return np.concatenate(out) if out else np.zeros((0, student.shape["num_classes"]), np.float32)


def accuracy(student: TinyLSTM, x, lengths, y) -> Optional[float]:
    if len(y) == 0:
        return None
    return float(np.mean(predict(student, x, lengths).argmax(1) == y))


def _stage_args(dcfg: dict, seed: int) -> dict:
    return dict(lr=dcfg["lr"], weight_decay=dcfg["weight_decay"], batch_size=dcfg["batch_size"],
                grad_clip=dcfg["grad_clip"], seed=seed)


def train_hard(student: TinyLSTM, task: TaskData, dcfg: dict, epochs: int, seed: int, name: str,
               quiet: bool = False, pruner=None) -> dict:
    """Hard labels only (the warm-up, and the no-teacher baseline); ``pruner`` (kd2mcu.train.prune) masks
    the weights after every step."""
    xt, lt, yt = torch.from_numpy(task.x_train), torch.from_numpy(task.len_train), torch.from_numpy(task.y_train)

    def step_loss(idx, epoch):
        return F.cross_entropy(student(xt[idx], lt[idx])[0], yt[idx])

    history = run_stage(name, [student], step_loss, len(yt), epochs=epochs, quiet=quiet,
                        evaluate=lambda: accuracy(student, task.x_val, task.len_val, task.y_val),
                        after_step=pruner.after_step if pruner is not None else None,
                        select_from=pruner.full_from() if pruner is not None else 0, **_stage_args(dcfg, seed))
    if pruner is not None:
        pruner.finalize()
    return history


def attention_loss(scores: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """scores [N, T] (the projection of the student's outputs), target [N, T] (the teacher's received
    attention, zero past each length): MSE of L * masked_softmax(scores) against L * target over the valid
    steps."""
    T = scores.shape[1]
    valid = torch.arange(T)[None, :] < lengths[:, None]
    p = torch.softmax(scores.masked_fill(~valid, -1e9), 1)
    L = lengths[:, None].to(p.dtype)
    return masked_mse((L * p).unsqueeze(-1), (L * target).unsqueeze(-1), valid)


def make_attention_projection(teacher: TeacherOutputs, student: TinyLSTM, gamma: float, steps: int):
    """The learned 1x1 projection of attention transfer, or None when it is off or the teacher has no
    per-step attention over the student's steps."""
    if gamma == 0 or teacher.attention is None or teacher.attention.shape[1] != steps:
        return None
    return torch.nn.Linear(student.width, 1)


def make_adapters(teacher: TeacherOutputs, student: TinyLSTM, beta: float) -> list[Adapter]:
    if beta == 0 or not teacher.hidden:
        return []
    return [Adapter(int(h.shape[-1]), student.width) for h in teacher.hidden]


def has_transfer_set(task: TaskData, teacher: TeacherOutputs, dcfg: dict, adapters: list) -> bool:
    """Whether stage 2 adds a transfer set: views asked for (``transfer`` on sensor data, ``text_transfer`` on
    text), a teacher that labels new inputs, and no hidden-state alignment (``adapters``)."""
    copies = dcfg["transfer"] if task.kind == "sequence" else dcfg["text_transfer"]
    return bool(copies) and teacher.label is not None and not adapters


def train_distill(student: TinyLSTM, adapters: list[Adapter], task: TaskData, teacher: TeacherOutputs, dcfg: dict,
                  seed: int, quiet: bool = False, attention_proj: Optional[torch.nn.Module] = None, pruner=None,
                  unlabeled: Optional[tuple] = None) -> dict:
    """Stage 2: soft targets, hard labels and hidden-state alignment; with ``[distill] transfer = K`` the
    training split is joined by K augmented views of it (``kd2mcu.train.augment``; text: ``[distill]
    text_transfer`` views, ``kd2mcu.train.augment_text``) that the teacher labels (their hard label: the
    teacher's class), where the teacher can label new inputs and nothing is aligned;
    ``unlabeled`` (x, lengths, teacher logits: ``[data] unlabeled``) joins it the same way."""
    x, lengths, y = task.x_train, task.len_train, task.y_train
    t_train = teacher.logits["train"].astype(np.float32)
    n_own = len(task.y_train)  # rows past this are the transfer set's (no teacher attention for them)
    epochs, rounds = dcfg["epochs"], dcfg["transfer_rounds"]
    draw_now = None
    sensor = task.kind == "sequence"
    copies = dcfg["transfer"] if sensor else dcfg["text_transfer"]
    if has_transfer_set(task, teacher, dcfg, adapters):
        from kd2mcu.train.augment import views
        from kd2mcu.train.augment_text import text_views

        def transfer_set(draw: int):  # (x, lengths, teacher logits) of the draw-th transfer set
            if sensor:
                xa, la = views(task.x_train, task.len_train, task.frame_stack, copies, seed, dcfg["transfer_mixup"],
                               dcfg["transfer_augment"], draw, dcfg["transfer_splice"])
            else:
                xa, la = text_views(task.x_train, task.len_train, copies, seed, dcfg["transfer_splice"], draw)
            return xa, la, np.asarray(teacher.label(xa, la), np.float32)

        xa, la, ta = transfer_set(0)
        x, lengths = np.concatenate([x, xa]), np.concatenate([lengths, la])
        y, t_train = np.concatenate([y, ta.argmax(1)]), np.concatenate([t_train, ta])
        if rounds > 1 and epochs > 1:
            drawn = {"draw": 0}

            def draw_now(epoch: int):  # a fresh transfer set for each of `rounds` equal parts of the stage
                draw = epoch * min(rounds, epochs) // epochs
                if draw != drawn["draw"]:
                    drawn["draw"] = draw
                    xa, la, ta = transfer_set(draw)
                    rows = slice(n_own, n_own + len(la))
                    xt[rows], lt[rows] = torch.from_numpy(xa), torch.from_numpy(la)
                    yt[rows], t_logits[rows] = torch.from_numpy(ta.argmax(1)), torch.from_numpy(ta)
    if unlabeled is not None:
        xu, lu, tu = unlabeled
        x, lengths = np.concatenate([x, xu.astype(x.dtype)]), np.concatenate([lengths, lu])
        y, t_train = np.concatenate([y, tu.argmax(1)]), np.concatenate([t_train, tu.astype(np.float32)])
    xt, lt, yt = torch.from_numpy(x), torch.from_numpy(lengths), torch.from_numpy(y)
    t_logits = torch.from_numpy(t_train)
    t_attention = torch.from_numpy(teacher.attention.astype(np.float32)) if attention_proj is not None else None
    t_hidden = [torch.from_numpy(h) for h in teacher.hidden] if adapters else []
    T_steps = task.x_train.shape[1]
    alpha, beta = dcfg["alpha"], dcfg["beta"]
    student_layers = student.shape["layers"]

    def step_loss(idx, epoch):
        if draw_now is not None:
            draw_now(epoch)
        s_logits, final, outputs = student(xt[idx], lt[idx])
        T = temperature_at(epoch, epochs, dcfg["temperature"], dcfg["temperature_schedule"])
        loss = kd_loss(s_logits, t_logits[idx], yt[idx], T, alpha)
        if adapters:
            mask = (torch.arange(T_steps)[None, :] < lt[idx][:, None]) if teacher.per_step else None
            align = 0.0
            for k, (adapter, th) in enumerate(zip(adapters, t_hidden)):
                target = adapter(th[idx].float())
                if teacher.per_step:
                    mine = outputs[k if len(adapters) == student_layers else -1]
                else:
                    mine = final
                align = align + masked_mse(target, mine, mask)
            loss = loss + beta * align / len(adapters)
        if attention_proj is not None:
            own = idx[idx < n_own]
            if len(own):
                scores = attention_proj(outputs[-1][np.flatnonzero(idx < n_own)]).squeeze(-1)
                loss = loss + dcfg["gamma"] * attention_loss(scores, t_attention[own], lt[own])
        return loss

    extra = [attention_proj] if attention_proj is not None else []
    select = selection(dcfg, task)
    score = None
    if select == "loss":
        def score():
            return -validation_loss(student, task, teacher, dcfg)
    history = run_stage("distill", [student, *adapters, *extra], step_loss, len(yt), epochs=epochs, quiet=quiet,
                        evaluate=lambda: accuracy(student, task.x_val, task.len_val, task.y_val), score=score,
                        after_step=pruner.after_step if pruner is not None else None,
                        select_from=pruner.full_from() if pruner is not None else 0,
                        keep_last=select == "last",
                        average_from=int(dcfg["average_from"] * epochs) if select == "average" else None,
                        **_stage_args(dcfg, seed))
    if pruner is not None:
        pruner.finalize()
    return history


def selection(dcfg: dict, task: TaskData) -> str:
    """What stage 2 keeps its epoch by: ``[distill] select``, where ``auto`` is the validation loss on a
    validation split below ``MIN_VAL_SAMPLES`` samples and the validation accuracy on a larger one; ``last``
    keeps the last epoch (the end of the cosine schedule) whatever the validation split says, ``average`` the
    mean of the weights of the epochs from ``[distill] average_from`` on."""
    if dcfg["select"] in ("last", "average"):
        return dcfg["select"]
    if not len(task.y_val):
        return "accuracy"  # (no validation split: run_stage keeps the last epoch)
    if dcfg["select"] == "auto":
        return "loss" if len(task.y_val) < MIN_VAL_SAMPLES else "accuracy"
    return dcfg["select"]


def validation_loss(student: TinyLSTM, task: TaskData, teacher: TeacherOutputs, dcfg: dict) -> float:
    """The distillation loss (soft and hard terms, the last temperature) on the validation split: what
    ``[distill] select = "loss"`` keeps the epoch by."""
    schedule = dcfg["temperature_schedule"]
    T = float(schedule[-1]) if schedule else float(dcfg["temperature"])
    logits = torch.from_numpy(predict(student, task.x_val, task.len_val))
    t_logits = torch.from_numpy(teacher.logits["val"].astype(np.float32))
    with torch.no_grad():
        return float(kd_loss(logits, t_logits, torch.from_numpy(task.y_val), T, dcfg["alpha"]))


def train_qat(student: TinyLSTM, stats, task: TaskData, teacher: TeacherOutputs, dcfg: dict, qcfg: dict,
              seed: int, quiet: bool = False):
    """Stage 3, quantization-aware distillation: the loss of stage 2 (without alignment) on logits whose
    values are the integer kernel's (``kd2mcu.quant.qat.qat_forward``), straight-through gradients.

    ``stats``: the activation ranges calibrated once, on the training split, from the distilled float
    student (``kd2mcu.quant.qat.calibrate``); they stay fixed, while weight scales follow the weights (the
    integer model is rebuilt for every batch). The integer model returned is built from the kept epoch's
    weights with those same ranges: the model the QAT forward imitated, with no second calibration.
    Returns (history, integer model).
    """
    from kd2mcu.quant.qat import int_model, qat_forward

    labels = list(task.classes)

    def current():
        return int_model(student, stats, task.max_len, labels)

    xt, lt, yt = torch.from_numpy(task.x_train), torch.from_numpy(task.len_train), torch.from_numpy(task.y_train)
    t_logits = torch.from_numpy(teacher.logits["train"].astype(np.float32))
    schedule = dcfg["temperature_schedule"]
    T = float(schedule[-1]) if schedule else float(dcfg["temperature"])

    def step_loss(idx, epoch):
        logits = qat_forward(student, current(), xt[idx], lt[idx])
        return kd_loss(logits, t_logits[idx], yt[idx], T, dcfg["alpha"])

    def val_accuracy():
        if len(task.y_val) == 0:
            return None
        with torch.no_grad():
            logits = qat_forward(student, current(), torch.from_numpy(task.x_val), torch.from_numpy(task.len_val))
        return float(np.mean(logits.numpy().argmax(1) == task.y_val))

    from kd2mcu.train import prune

    masks = prune.fixed(student) if prune.achieved(student) > 0 else None  # pruned blocks stay pruned

    def keep_masks(epoch):
        with torch.no_grad():
            for w, m in zip(prune._matrices(student), masks):
                w.mul_(m)

    history = run_stage("QAT", [student], step_loss, len(yt), epochs=qcfg["epochs"], quiet=quiet,
                        evaluate=val_accuracy, keep_start=True, after_step=keep_masks if masks else None,
                        **dict(_stage_args(dcfg, seed), lr=qcfg["lr"]))
    return history, current()
