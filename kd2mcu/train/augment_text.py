"""Augmented views of text (token id sequences), for the distillation transfer set on text: the teacher
labels each view, the student learns to match it on far more inputs than the labelled training split
holds, the same view for both (as ``kd2mcu.train.augment`` does for sensor sequences).

Each view of a text, within its true length:
- crop: a random window of ``CROP`` to 100% of its tokens (at least one);
- drop: then every token left out with probability ``DROP`` (at least one kept);
- splice (a share ``splice`` of the views, from a random stream of its own; ``augment.splice_segments``,
  as for sensor views): one segment of 10-50% of the positions both views have replaced by the tokens at
  the same positions of another view drawn at random (CutMix on text: two reviews' phrases in one input,
  which the teacher labels).
A view is never longer than the text it came from; padding stays 0 (``<pad>``).
"""
from __future__ import annotations

import numpy as np

from kd2mcu.train.augment import splice_segments

CROP, DROP = 0.7, 0.1


def text_views(x: np.ndarray, lengths: np.ndarray, copies: int, seed: int, splice: float = 0.0, draw: int = 0):
    """``copies`` views of every text of x [N, T] (int token ids, 0 = padding): returns (x [copies * N, T],
    lengths [copies * N]), view ``c * N + i`` made from text i. ``draw`` > 0 gives other views from the
    same seed; ``splice`` draws from a stream of its own, so it changes none of the crop and drop draws."""
    rng = np.random.default_rng([seed, 23] + ([draw] if draw else []))
    n, steps = x.shape
    out = np.zeros((copies * n, steps), dtype=x.dtype)
    out_len = np.zeros(copies * n, dtype=lengths.dtype)
    for c in range(copies):
        for i in range(n):
            L = int(min(lengths[i], steps))
            width = max(1, min(L, int(round(rng.uniform(CROP, 1.0) * L))))
            start = int(rng.integers(0, L - width + 1))
            seq = x[i, start:start + width]
            keep = rng.random(width) >= DROP
            if not keep.any():
                keep[int(rng.integers(width))] = True
            seq = seq[keep]
            out[c * n + i, :len(seq)] = seq
            out_len[c * n + i] = len(seq)
    if splice > 0 and len(out):
        splice_segments(out, out_len, splice, np.random.default_rng([seed, 29] + ([draw] if draw else [])))
    return out, out_len
