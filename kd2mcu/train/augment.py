"""Augmented views of sensor sequences, for the distillation transfer set: the teacher labels them, the
student learns to match it on far more inputs than the labelled training split holds ("a good teacher
is patient and consistent": the same view for teacher and student).

Each view of a sequence, in its unstacked form (one sample per step) and within its true length:
- magnitude scaling: every feature times N(1, ``SCALE``);
- jitter: N(0, ``JITTER``) noise on every value (features are standardized, so in units of one std);
- window slicing: a random window of ``SLICE`` to 100% of the length, stretched back to the full length
  by linear interpolation (a mild time warp and shift).
Padding stays zero; frame stacking is re-applied after.
"""
from __future__ import annotations

import numpy as np

from kd2mcu.dataio import stack_frames

SCALE, JITTER, SLICE = 0.1, 0.05, 0.85


def views(x: np.ndarray, lengths: np.ndarray, frame_stack: int, copies: int, seed: int):
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
    stacked, new_len = stack_frames(out.astype(np.float32), np.tile(raw_len, copies), frame_stack)
    return stacked[:, :steps], np.minimum(new_len, steps)
