"""Block-sparse pruning of TinyLSTM, at the granularity the generated C skips: a block is 4 inputs x 4
gates of one hidden unit (the 16 weights one group of ``kd2mcu_mac4`` multiplies). A pruned block is
zero in the float student, hence zero in int8, and ``kd2mcu.codegen.render`` stores and computes only the
surviving blocks (the integer model is unchanged: the reference computes the same bits dense).

Schedule (``[prune]``): gradual magnitude pruning during stage 2, the target reached along a cubic
ramp (Zhu and Gupta, 2017) between ``start`` and ``end`` (fractions of the stage's epochs); at every
epoch the blocks with the smallest L2 norm of each matrix (input and recurrent, per layer and
direction) are pruned to the current share, and the mask is applied after every optimizer step. The
mask is then kept fixed through QAT. The student trained without the teacher is pruned the same way,
so that the fallback compares like with like.
"""
from __future__ import annotations

from typing import Optional

import torch

from kd2mcu.train.student import TinyLSTM

BLOCK = 4  # inputs per block (the generated loops' group); the 4 gates of one unit make it 16 weights


def _matrices(student: TinyLSTM) -> list[torch.nn.Parameter]:
    out = []
    for lstm in student.lstms:
        for name, p in lstm.named_parameters():
            if name.startswith(("weight_ih", "weight_hh")):
                out.append(p)
    return out


def block_norms(w: torch.Tensor) -> torch.Tensor:
    """[H, groups] L2 norms of the blocks of a PyTorch gate matrix [4H, n] (gate rows i, f, g, o)."""
    H4, n = w.shape
    H = H4 // 4
    groups = -(-n // BLOCK)
    padded = torch.zeros(4, H, groups * BLOCK, dtype=w.dtype)
    padded[:, :, :n] = w.detach().reshape(4, H, n)
    return padded.reshape(4, H, groups, BLOCK).pow(2).sum(dim=(0, 3)).sqrt()


def block_mask(w: torch.Tensor, sparsity: float) -> torch.Tensor:
    """The 0/1 mask [4H, n] keeping all but the round(sparsity * blocks) blocks of smallest norm."""
    norms = block_norms(w)
    H, groups = norms.shape
    k = int(round(sparsity * norms.numel()))
    keep = torch.ones(H * groups, dtype=w.dtype)
    if k > 0:
        keep[torch.argsort(norms.reshape(-1), stable=True)[:k]] = 0
    keep = keep.reshape(1, H, groups, 1).expand(4, H, groups, BLOCK).reshape(4, H, groups * BLOCK)
    return keep[:, :, :w.shape[1]].reshape(w.shape).contiguous()


def ramp(epoch: int, epochs: int, target: float, start: float, end: float) -> float:
    """The share pruned at ``epoch`` of ``epochs``: 0 before start, target after end, cubic between."""
    if target == 0 or epochs <= 0:
        return 0.0
    p = (epoch / max(epochs - 1, 1) - start) / max(end - start, 1e-9)
    p = min(max(p, 0.0), 1.0)
    return target * (1.0 - (1.0 - p) ** 3)


class Pruner:
    """Masks for one student; ``after_step(epoch)`` is what a stage calls after each optimizer step."""

    def __init__(self, student: TinyLSTM, pcfg: dict, epochs: int):
        self.student, self.cfg, self.epochs = student, pcfg, epochs
        self.matrices = _matrices(student)
        self.masks: Optional[list[torch.Tensor]] = None
        self.epoch = -1

    @property
    def active(self) -> bool:
        return self.cfg["sparsity"] > 0

    def set_share(self, share: float) -> None:
        self.masks = [block_mask(w, share) for w in self.matrices]
        self.apply()

    def apply(self) -> None:
        if self.masks is None:
            return
        with torch.no_grad():
            for w, m in zip(self.matrices, self.masks):
                w.mul_(m)

    def full_from(self) -> int:
        """The first epoch that trains at the target sparsity: the stage keeps no earlier one (their weights,
        cut to the target at the end, would lose what the remaining blocks never learnt to carry)."""
        if not self.active:
            return 0
        target = self.cfg["sparsity"]
        return next((e for e in range(self.epochs)
                     if ramp(e, self.epochs, target, self.cfg["start"], self.cfg["end"]) == target),
                    max(self.epochs - 1, 0))  # a 1-epoch stage never reaches it: its one epoch

    def after_step(self, epoch: int) -> None:
        if not self.active:
            return
        if epoch != self.epoch:  # a new epoch: the schedule's share, on the current weights
            self.epoch = epoch
            self.set_share(ramp(epoch, self.epochs, self.cfg["sparsity"], self.cfg["start"], self.cfg["end"]))
        else:
            self.apply()

    def finalize(self) -> None:
        """The target share on the weights the stage kept (``full_from`` keeps them at it already; this
        makes sure)."""
        if self.active:
            self.set_share(self.cfg["sparsity"])


def fixed(student: TinyLSTM) -> Optional[list[torch.Tensor]]:
    """The masks of a pruned student as they are (QAT keeps them): 1 where a weight is non-zero."""
    return [(w.detach() != 0).to(w.dtype) for w in _matrices(student)]


def achieved(student: TinyLSTM) -> float:
    """The share of zero blocks over every gate matrix of the student."""
    zero = total = 0
    for w in _matrices(student):
        norms = block_norms(w)
        zero += int((norms == 0).sum())
        total += norms.numel()
    return zero / max(total, 1)
