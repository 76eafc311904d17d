"""Augmented views of sensor sequences, for the distillation transfer set: the teacher labels them, the
student learns to match it on far more inputs than the labelled training split holds ("a good teacher
is patient and consistent": the same view for teacher and student).

Each view of a sequence, in its unstacked form (one sample per step) and within its true length:
- magnitude scaling: every feature times N(1, ``SCALE``);
- jitter: N(0, ``JITTER``) noise on every value (features are standardized, so in units of one std);
- window slicing: a random window of ``SLICE`` to 100% of the length, stretched back to the full length
  by linear interpolation (a mild time warp and shift).
Padding stays zero; frame stacking is re-applied after. With ``mixup`` = p, a share p of the views is
then replaced by mixtures lam * a + (1 - lam) * b of two views of different sequences (lam uniform in
0..1, the shorter length kept): inputs off the data, where the teacher's function tells the student most
("function matching", Beyer et al. 2022).
"""
from __future__ import annotations

import numpy as np

from kd2mcu.dataio import stack_frames

SCALE, JITTER, SLICE = 0.1, 0.05, 0.85


def views(x: np.ndarray, lengths: np.ndarray, frame_stack: int, copies: int, seed: int, mixup: float = 0.0):
    """``copies`` augmented views of every sequence of x [N, T, k*F] (frame-stacked by ``frame_stack``):
    returns (x [copies * N, T, k*F] float32, lengths [copies * N])."""
    rng = np.random.default_rng([seed, 17])
    n, steps, width = x.shape
    F = width // frame_stack
    raw = x.reshape(n, steps * frame_stack, F).astype(np.float64)
    raw_len = np.minimum(lengths * frame_stack, steps * frame_stack)  # samples, padding of the last frame included
    out = np.zeros((copies * n, steps * frame_stack, F))
    for c in range(copies):
        for i in range(n):
            L = int(raw_len[i])
            seq = raw[i, :L]
            if L > 2:
                w = max(2, int(round(L * rng.uniform(SLICE, 1.0))))
                start = int(rng.integers(0, L - w + 1))
                t = np.linspace(start, start + w - 1, L)
                seq = np.stack([np.interp(t, np.arange(L), seq[:, f]) for f in range(F)], axis=1)
            seq = seq * rng.normal(1.0, SCALE, size=(1, F)) + rng.normal(0.0, JITTER, size=seq.shape)
            out[c * n + i, :L] = seq
    out_len = np.tile(raw_len, copies)
    if mixup > 0 and n > 1:
        mrng = np.random.default_rng([seed, 18])
        mixed = np.flatnonzero(mrng.random(len(out)) < mixup)
        partner = mrng.integers(0, len(out), len(mixed))
        lam = mrng.random(len(mixed))[:, None, None]
        out[mixed] = lam * out[mixed] + (1 - lam) * out[partner]
        out_len[mixed] = np.minimum(out_len[mixed], out_len[partner])
        valid = np.arange(out.shape[1])[None, :] < out_len[mixed][:, None]
        out[mixed] *= valid[:, :, None]
    stacked, new_len = stack_frames(out.astype(np.float32), out_len, frame_stack)
    return stacked[:, :steps], np.minimum(new_len, steps)
