"""The one training loop every stage uses: AdamW, a cosine learning rate over the stage, gradient
clipping, seeded batch order, a progress bar, and a per-epoch history for the plots.

Each epoch ends with ``evaluate()`` (validation accuracy, or None); the weights of the best epoch
(highest validation accuracy, the later one on a tie; or, with ``score``, the highest score, e.g. minus
the validation loss) are restored at the end of the stage.
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Optional

import numpy as np
import torch
from tqdm import tqdm

from kd2mcu import interrupt

# Validation accuracy on fewer samples than this cannot tell epochs apart: one sample is 2-20 points.
# Below it the teacher does not stop early, and stage 2 ([distill] select = auto) keeps the epoch by the
# validation distillation loss instead (continuous, so far less noisy): on OSULeaf's 30 validation samples
# the accuracy pick was epoch 3 of 100, where the student still got 12% of its training split wrong.
MIN_VAL_SAMPLES = 50


def batches(n: int, batch_size: int, rng: np.random.Generator):
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def run_stage(name: str, modules: list[torch.nn.Module], step_loss: Callable[[np.ndarray, int], torch.Tensor],
              n: int, *, epochs: int, lr: float, weight_decay: float, batch_size: int, grad_clip: float,
              seed: int, evaluate: Optional[Callable[[], Optional[float]]] = None, quiet: bool = False,
              keep_start: bool = False, param_groups: Optional[list[dict]] = None, patience: int = 0,
              score: Optional[Callable[[], Optional[float]]] = None,
              after_step: Optional[Callable[[int], None]] = None, keep_last: bool = False,
              average_from: Optional[int] = None, select_from: int = 0) -> dict:
    """Train ``modules`` for ``epochs``; ``step_loss(batch_indices, epoch)`` returns the loss of one batch.

    With ``keep_start`` the weights the stage starts from compete too (best_epoch -1 when they win, and
    they win ties), so a fine-tuning stage never ends worse on the validation split than it began. ``param_groups``
    (AdamW's, each with its own ``lr``) replaces the one group of all parameters at ``lr``. ``patience`` > 0
    stops the stage once that many epochs in a row brought no validation accuracy above the best so far
    (early stopping; the best epoch's weights are restored as always). ``score`` (higher is better) picks the
    epoch instead of the accuracy: a validation loss is far less noisy than the accuracy on a few dozen
    samples, which picked undertrained early epochs. ``average_from``: the stage ends with the mean of the
    weights at the end of every epoch from that one on (stochastic weight averaging; no epoch is picked).
    ``select_from``: epochs before it are never kept (a pruning stage's epochs before its target sparsity,
    whose weights pruning would then cut at once, untrained); nor averaged: the mean starts at the later
    of ``average_from`` and ``select_from``.
    Returns the history: per epoch the mean training loss and the validation accuracy.
    """
    history = {"stage": name, "loss": [], "val_accuracy": []}
    if epochs == 0:
        return history
    if param_groups is None:
        param_groups = [{"params": [p for m in modules for p in m.parameters() if p.requires_grad], "lr": lr}]
    param_groups = [g for g in param_groups if g["params"]]
    params = [p for g in param_groups for p in g["params"]]
    opt = torch.optim.AdamW(param_groups, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(n / batch_size)
    total = max(epochs * steps_per_epoch, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1.0 + math.cos(math.pi * min(k, total) / total)))
    rng = np.random.default_rng(seed)
    best, best_acc, best_epoch = None, -float("inf"), None
    pick = score if score is not None else evaluate
    if keep_start and evaluate is not None:
        for m in modules:
            m.eval()
        start = evaluate()
        start_pick = start if score is None else score()
        if start_pick is not None:
            best, best_acc, best_epoch = [copy.deepcopy(m.state_dict()) for m in modules], start_pick, -1
        history["start_val_accuracy"] = start
    bar = tqdm(range(epochs), desc=name, unit="epoch", leave=False, disable=quiet, dynamic_ncols=True)
    since_gain = 0
    mean, averaged = None, 0
    for epoch in bar:
        for m in modules:
            m.train()
        losses = []
        for idx in batches(n, batch_size, rng):
            interrupt.check()  # a Ctrl-C that native code dropped
            loss = step_loss(idx, epoch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
            sched.step()
            if after_step is not None:  # e.g. pruning masks (kd2mcu.train.prune)
                after_step(epoch)
            losses.append(float(loss.detach()))
        for m in modules:
            m.eval()
        acc = evaluate() if evaluate is not None else None
        value = acc if score is None else (score() if pick is not None else None)
        history["loss"].append(float(np.mean(losses)))
        history["val_accuracy"].append(acc)
        if score is not None:
            history.setdefault("val_score", []).append(value)
        # ties go to the later epoch, except against the starting weights: leaving them needs a gain
        gained = value is not None and epoch >= select_from and value > best_acc
        if value is not None and epoch >= select_from and (gained or (value == best_acc and best_epoch != -1)):
            best_acc, best, best_epoch = value, [copy.deepcopy(m.state_dict()) for m in modules], epoch
        bar.set_postfix(loss=f"{history['loss'][-1]:.4f}", **({} if acc is None else {"val_acc": f"{acc:.3f}"}))
        if average_from is not None and epoch >= max(average_from, select_from):
            mean, averaged = _accumulate(mean, [m.state_dict() for m in modules], averaged), averaged + 1
        since_gain = 0 if gained else since_gain + 1
        if patience and value is not None and since_gain >= patience:
            history["stopped_early_at"] = epoch
            break
    if mean is not None:
        for m, state in zip(modules, mean):
            m.load_state_dict(state)
        history["best_epoch"] = len(history["loss"]) - 1
        history["averaged_epochs"] = averaged
    elif keep_last:
        history["best_epoch"] = len(history["loss"]) - 1
    elif best is not None:
        for m, state in zip(modules, best):
            m.load_state_dict(state)
        history["best_epoch"] = best_epoch
    return history


def _accumulate(mean: Optional[list[dict]], states: list[dict], count: int) -> list[dict]:
    """The running mean of ``count`` + 1 state dicts: floating-point tensors averaged, others the latest."""
    if mean is None:
        return [{k: v.detach().clone() for k, v in state.items()} for state in states]
    for m, state in zip(mean, states):
        for k, v in state.items():
            if v.is_floating_point():
                m[k].mul_(count / (count + 1)).add_(v.detach(), alpha=1.0 / (count + 1))
            else:
                m[k] = v.detach().clone()
    return mean
