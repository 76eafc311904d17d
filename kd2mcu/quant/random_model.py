"""Random integer models and inputs, for property tests and benchmarks.

Models are drawn directly in the integer domain: random int8 weights, biases, zero points, cell
powers, clips and scales chosen through the requantization ratio, so both gentle models and ones
that saturate gates and cells (``regime="large"``, left shifts S > 0) come out, all of them valid.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from kd2mcu.quant.intmodel import GATES, Q_GATE, Direction, Gate, Head, IntModel, LSTMLayer, QParams


@dataclass
class ModelShape:
    input_size: int = 6
    hidden: int = 32
    steps: int = 100
    classes: int = 4
    layers: int = 1
    bidirectional: bool = False
    vocab: Optional[int] = None  # an embedding of this many tokens when set
    regime: str = "small"  # "small" or "large" weight scales
    reverse: bool = False  # layer 0 runs from the last step to the first (unidirectional models)


def _weights(rng, shape, regime):
    if regime == "large":
        return rng.integers(-127, 128, size=shape).astype(np.int8)
    return np.clip(np.rint(rng.normal(0, 40, size=shape)), -127, 127).astype(np.int8)


def _qparams(rng, lo=0.002, hi=0.05) -> QParams:
    return QParams(float(np.exp(rng.uniform(np.log(lo), np.log(hi)))), int(rng.integers(-128, 128)))


def _ratio(rng, regime) -> float:
    """s_in * s_w / 2^-12: below 1 gives right shifts only; 'large' reaches left shifts."""
    if regime == "large":
        return float(2.0 ** rng.uniform(-4, 2.5))
    return float(2.0 ** rng.uniform(-9, -3))


def random_model(rng: np.random.Generator, shape: ModelShape) -> IntModel:
    in_q = _qparams(rng, 0.005, 0.1)
    embedding = None
    input_size = shape.input_size
    if shape.vocab:
        embedding = rng.integers(-128, 128, size=(shape.vocab, input_size)).astype(np.int8)
    layers = []
    prev_q, width = in_q, input_size
    for k in range(shape.layers):
        hid_q = _qparams(rng, 0.003, 0.02)
        H = shape.hidden
        dirs = []
        for _ in range(2 if shape.bidirectional else 1):
            gates = {}
            for name in GATES:
                wx, wh = _weights(rng, (H, width), shape.regime), _weights(rng, (H, H), shape.regime)
                sx = _ratio(rng, shape.regime) * Q_GATE / prev_q.scale
                sh = _ratio(rng, shape.regime) * Q_GATE / hid_q.scale
                bias = rng.integers(-(2**14), 2**14, size=H).astype(np.int32) * (8 if shape.regime == "large" else 1)
                gates[name] = Gate(wx, wh, bias.astype(np.int32), sx, sh)
            dirs.append(Direction(gates))
        clip = int(rng.choice([0, 0, int(rng.integers(1000, 32768))]))
        layers.append(LSTMLayer(prev_q, hid_q, int(rng.integers(-15, -5)), dirs, clip,
                                reverse=shape.reverse and k == 0 and not shape.bidirectional))
        prev_q, width = hid_q, H * len(dirs)
    w = _weights(rng, (shape.classes, width), shape.regime)
    w_scale = np.exp(rng.uniform(np.log(0.001), np.log(0.05), size=shape.classes))
    bias = rng.integers(-(2**12), 2**12, size=shape.classes).astype(np.int32)
    head = Head(w, w_scale, bias, prev_q, _qparams(rng, 0.02, 0.3))
    model = IntModel(in_q, layers, head, shape.steps, embedding, None, f"random {shape}")
    return model.derive_multipliers().validate()


def random_inputs(rng: np.random.Generator, model: IntModel, n: int, steps: int):
    """int8 features (or token ids) [n, steps, ...] and lengths: random values, constant extremes,
    alternating signs, the zero point, and random lengths."""
    shape = (n, steps) if model.is_token_model else (n, steps, model.input_size)
    if model.is_token_model:
        V = model.embedding.shape[0]
        x = rng.integers(0, V, size=shape)
        lo, hi = 0, V - 1
    else:
        x = rng.integers(-128, 128, size=shape)
        lo, hi = -128, 127
    kinds = n // 8
    if kinds:
        x[0:kinds] = lo
        x[kinds:2 * kinds] = hi
        alt = np.where(np.arange(steps) % 2 == 0, lo, hi)
        x[2 * kinds:3 * kinds] = alt.reshape((1, steps) + (1,) * (len(shape) - 2))
        if not model.is_token_model:
            x[3 * kinds:4 * kinds] = model.input.zero_point
            # alternating in the feature dimension too
            x[4 * kinds:5 * kinds] = np.where((np.arange(steps)[:, None] + np.arange(shape[2])[None, :]) % 2 == 0,
                                              lo, hi)
    lengths = np.full(n, steps, dtype=np.int64)
    half = n // 2
    lengths[half:] = rng.integers(1, steps + 1, size=n - half)
    dtype = np.int32 if model.is_token_model else np.int8
    return x.astype(dtype), lengths


def zero_blocks(model: IntModel, sparsity: float, rng: np.random.Generator) -> IntModel:
    """Set a random share ``sparsity`` of every gate matrix's blocks (4 inputs x 4 gates of one hidden unit,
    the granularity of block-sparse pruning and of the generated loops) to zero, in place."""
    for layer in model.layers:
        for d in layer.directions:
            for key in ("wx", "wh"):
                H, n = d.gates["f"].__dict__[key].shape
                groups = -(-n // 4)
                pruned = rng.permutation(H * groups)[:int(round(sparsity * H * groups))]
                for b in pruned:
                    r, q = divmod(int(b), groups)
                    for g in GATES:
                        d.gates[g].__dict__[key][r, 4 * q:4 * q + 4] = 0
    return model
