"""Augmented views of sensor sequences, for the distillation transfer set: the teacher labels them, the
student learns to match it on far more inputs than the labelled training split holds ("a good teacher
is patient and consistent": the same view for teacher and student).

Each view of a sequence, in its unstacked form (one sample per step) and within its true length:
- magnitude scaling: every feature times N(1, ``SCALE``);
- jitter: N(0, ``JITTER``) noise on every value (features are standardized, so in units of one std);
- window slicing: a random window of ``SLICE`` to 100% of the length, stretched back to the full length
  by linear interpolation (a mild time warp and shift);
and, when asked for (``[distill] transfer_augment``):
- warp: a smooth time warp, the speed along the (sliced) window a piecewise-linear curve through
  ``WARP_KNOTS`` values N(1, ``WARP``) (at least 0.2);
- roll: a circular shift by a uniform number of samples within the length. Right for cyclic series
  (outlines traced from an arbitrary start, rotations, gait cycles), wrong for most others. Added to
  the defaults (``benchmarks/accuracy_panel.py``, 3 seeds, int8 test accuracy): OSULeaf (leaf outlines)
  75.1% -> 78.4% (validation 69 -> 74 of 90), ArrowHead 80.2% -> 69.1%, PickupGestureWiimoteZ 75.3% -> 74.7%;
  warp the same way: ArrowHead 71.0%, PickupGestureWiimoteZ 76.7%.
Padding stays zero; frame stacking is re-applied after. With ``mixup`` = p, a share p of the views is
then replaced by mixtures lam * a + (1 - lam) * b of two views, the partner drawn at random (lam uniform in
0..1, the shorter length kept): inputs off the data, where the teacher's function tells the student most
("function matching", Beyer et al. 2022). With ``splice`` = q, a share q of the views (after mixup) gets
one segment of ``SPLICE_MIN`` to ``SPLICE_MAX`` of its length replaced by the same steps of another view
drawn at random (CutMix in time): new combinations of the data's local shapes, which the teacher labels.
"""
from __future__ import annotations

import numpy as np

from kd2mcu.dataio import stack_frames

SCALE, JITTER, SLICE = 0.1, 0.05, 0.85
WARP, WARP_KNOTS = 0.2, 6
SPLICE_MIN, SPLICE_MAX = 0.1, 0.5
AUGMENTS = ("scale", "jitter", "slice", "warp", "roll")
DEFAULT_AUGMENTS = ("scale", "jitter", "slice")


def views(x: np.ndarray, lengths: np.ndarray, frame_stack: int, copies: int, seed: int, mixup: float = 0.0,
          augments=DEFAULT_AUGMENTS, draw: int = 0, splice: float = 0.0):
    """``copies`` augmented views of every sequence of x [N, T, k*F] (frame-stacked by ``frame_stack``),
    each made by ``augments`` (names from ``AUGMENTS``; the defaults draw the same numbers as before
    the others existed): returns (x [copies * N, T, k*F] float32, lengths [copies * N]). ``draw`` > 0
    gives other views from the same seed (draw 0: the numbers drawn before draws existed). ``mixup`` and
    ``splice`` draw from random streams of their own: switching one on or off changes neither the other's
    draws nor the plain views."""
    unknown = sorted(set(augments) - set(AUGMENTS))
    if unknown:
        raise ValueError(f"unknown augmentations {unknown}; known: {', '.join(AUGMENTS)}")
    rng = np.random.default_rng([seed, 17] + ([draw] if draw else []))
    n, steps, width = x.shape
    F = width // frame_stack
    raw = x.reshape(n, steps * frame_stack, F).astype(np.float64)
    raw_len = np.minimum(lengths * frame_stack, steps * frame_stack)  # samples, padding of the last frame included
    out = np.zeros((copies * n, steps * frame_stack, F))
    for c in range(copies):
        for i in range(n):
            L = int(raw_len[i])
            seq = raw[i, :L]
            if L > 2 and ("slice" in augments or "warp" in augments):
                start, w = 0, L
                if "slice" in augments:
                    w = max(2, int(round(L * rng.uniform(SLICE, 1.0))))
                    start = int(rng.integers(0, L - w + 1))
                t = np.linspace(start, start + w - 1, L)
                if "warp" in augments:  # the speed along the window, through WARP_KNOTS random values
                    knots = np.maximum(rng.normal(1.0, WARP, WARP_KNOTS), 0.2)
                    speed = np.interp(np.linspace(0, WARP_KNOTS - 1, L), np.arange(WARP_KNOTS), knots)
                    done = np.concatenate([[0.0], np.cumsum(speed[1:])])
                    t = start + done / done[-1] * (w - 1)
                seq = np.stack([np.interp(t, np.arange(L), seq[:, f]) for f in range(F)], axis=1)
            if "roll" in augments and L > 1:
                seq = np.roll(seq, int(rng.integers(0, L)), axis=0)
            if "scale" in augments:
                seq = seq * rng.normal(1.0, SCALE, size=(1, F))
            if "jitter" in augments:
                seq = seq + rng.normal(0.0, JITTER, size=seq.shape)
            out[c * n + i, :L] = seq
    out_len = np.tile(raw_len, copies)
    if mixup > 0 and n > 1:
        mrng = np.random.default_rng([seed, 18] + ([draw] if draw else []))
        mixed = np.flatnonzero(mrng.random(len(out)) < mixup)
        partner = mrng.integers(0, len(out), len(mixed))
        lam = mrng.random(len(mixed))[:, None, None]
        out[mixed] = lam * out[mixed] + (1 - lam) * out[partner]
        out_len[mixed] = np.minimum(out_len[mixed], out_len[partner])
        valid = np.arange(out.shape[1])[None, :] < out_len[mixed][:, None]
        out[mixed] *= valid[:, :, None]
    if splice > 0 and n > 1:
        splice_segments(out, out_len, splice, np.random.default_rng([seed, 19] + ([draw] if draw else [])))
    stacked, new_len = stack_frames(out.astype(np.float32), out_len, frame_stack)
    return stacked[:, :steps], np.minimum(new_len, steps)


def splice_segments(out: np.ndarray, lengths: np.ndarray, share: float, rng: np.random.Generator) -> None:
    """CutMix in time, in place: in a share ``share`` of the rows of ``out`` (time on axis 1), one segment of
    ``SPLICE_MIN`` to ``SPLICE_MAX`` of the steps both rows have is replaced by the same steps of another row
    drawn at random (rows spliced earlier are read as they are by then). Used for sensor and text views."""
    spliced = np.flatnonzero(rng.random(len(out)) < share)
    partner = rng.integers(0, len(out), len(spliced))
    fraction = rng.uniform(SPLICE_MIN, SPLICE_MAX, len(spliced))
    where = rng.random(len(spliced))
    for j, p, f, u in zip(spliced, partner, fraction, where):
        L = int(min(lengths[j], lengths[p]))  # within both rows' steps
        w = max(1, int(round(f * L)))
        a = int(u * (L - w + 1))
        out[j, a:a + w] = out[p, a:a + w]
