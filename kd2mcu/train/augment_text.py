"""Augmented views of text (token id sequences), for the distillation transfer set on text: the teacher
labels each view, the student learns to match it on far more inputs than the labelled training split
holds, the same view for both (as ``kd2mcu.train.augment`` does for sensor sequences).

Each view of a text, within its true length:
- crop: a random window of ``CROP`` to 100% of its tokens (at least one);
- drop: then every token left out with probability ``DROP`` (at least one kept);
- splice (a share ``splice`` of the views, from a random stream of its own): one segment of ``SPLICE_MIN``
  to ``SPLICE_MAX`` of the view's length replaced by the tokens at the same positions of another view
  drawn at random, where that one has them (CutMix on text: two reviews' phrases in one input, which
  the teacher labels).
A view is never longer than the text it came from; padding stays 0 (``<pad>``).
"""
from __future__ import annotations

import numpy as np

CROP, DROP = 0.7, 0.1
SPLICE_MIN, SPLICE_MAX = 0.1, 0.5


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
        mix = np.random.default_rng([seed, 29] + ([draw] if draw else []))
        for v in np.flatnonzero(mix.random(len(out)) < splice):
            partner = int(mix.integers(len(out)))
            L = int(out_len[v])
            width = max(1, int(round(mix.uniform(SPLICE_MIN, SPLICE_MAX) * L)))
            start = int(mix.integers(0, L - width + 1))
            stop = min(start + width, int(out_len[partner]))  # only where the partner has tokens
            if stop > start:
                out[v, start:stop] = out[partner, start:stop]
    return out, out_len
