"""The Python integer reference: ../shared/spec/int8-lstm.md in numpy, vectorized over a batch.

Dot products run as float64 matrix products: every term is an integer and every partial sum stays
far below 2^53, so they are exact whatever the summation order. Everything else is int64.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from kd2mcu.quant.intmodel import GATES, IntModel, LSTMLayer
from kd2mcu.quant.qmath import FORGET_TO_CELL, quantize_float, rq, sat8, sat16, sigmoid16, tanh16


@dataclass
class DirectionParams:
    """One direction of one layer as the kernel sees it (the spec's CMSIS-NN parameter list)."""

    wx: np.ndarray  # int [4, H, I], gates f, i, g, o
    wh: np.ndarray  # int [4, H, H]
    bias: np.ndarray  # int [4, H]
    input_mult: list  # 4 x (M, S)
    hidden_mult: list  # 4 x (M, S)
    z_x: int
    z_h: int
    cell_scale_power: int
    cell_clip: int
    input_to_cell: tuple
    hidden_out: tuple

    @classmethod
    def from_layer(cls, layer: LSTMLayer, direction: int) -> "DirectionParams":
        gates = [layer.directions[direction].gates[g] for g in GATES]
        return cls(np.stack([g.wx for g in gates]), np.stack([g.wh for g in gates]),
                   np.stack([g.bias for g in gates]), [g.input_mult for g in gates],
                   [g.hidden_mult for g in gates], layer.input.zero_point, layer.hidden.zero_point,
                   layer.cell_scale_power, layer.cell_clip, layer.input_to_cell, layer.hidden_out)


def lstm_direction(p: DirectionParams, x_q: np.ndarray, lengths: np.ndarray, reverse: bool,
                   h0: Optional[np.ndarray] = None, c0: Optional[np.ndarray] = None):
    """Run one direction over x_q [N, T, I] (ints). Sample n uses steps 0..lengths[n]-1.

    A reverse direction starts at step lengths[n]-1. Returns (y [N, T, H] int8 with each output at
    the step it belongs to, z_h where a sample has no step; h_final [N, H] int8; c_final [N, H] int16).
    """
    N, T, _ = x_q.shape
    H = p.wx.shape[1]
    wx = p.wx.reshape(4 * H, -1).astype(np.float64)
    wh = p.wh.reshape(4 * H, H).astype(np.float64)
    # Input products of every step at once: b + sum (x - z_x) * W, exact in float64.
    acc_x = np.rint((x_q.astype(np.float64) - p.z_x) @ wx.T).astype(np.int64) + p.bias.reshape(-1).astype(np.int64)
    h = np.full((N, H), p.z_h, dtype=np.int64) if h0 is None else np.asarray(h0, dtype=np.int64).copy()
    c = np.zeros((N, H), dtype=np.int64) if c0 is None else np.asarray(c0, dtype=np.int64).copy()
    y = np.full((N, T, H), p.z_h, dtype=np.int8)
    rows = np.arange(N)
    shift_c = p.cell_scale_power + 12
    for t in range(T):
        active = t < lengths
        if not active.any():
            break
        pos = np.clip(lengths - 1 - t, 0, T - 1) if reverse else np.full(N, t)
        ax = acc_x[rows, pos]  # [N, 4H]
        ah = np.rint((h - p.z_h).astype(np.float64) @ wh.T).astype(np.int64)
        act = []
        for k in range(4):
            sl = slice(k * H, (k + 1) * H)
            pre = sat16(rq(ax[:, sl], *p.input_mult[k]))
            pre = sat16(pre + rq(ah[:, sl], *p.hidden_mult[k]))
            act.append(tanh16(pre) if GATES[k] == "g" else sigmoid16(pre))
        f, i, g, o = act
        c_new = sat16(rq(f * c, *FORGET_TO_CELL)) + rq(i * g, *p.input_to_cell)
        c_new = np.clip(c_new, -p.cell_clip, p.cell_clip) if p.cell_clip else sat16(c_new)
        h_new = sat8(rq(o * tanh16(c_new, shift_c), *p.hidden_out) + p.z_h)
        m = active[:, None]
        c = np.where(m, c_new, c)
        h = np.where(m, h_new, h)
        y[rows[active], pos[active]] = h[active]
    return y, h.astype(np.int8), c.astype(np.int16)


def _as_lengths(lengths, n: int, t: int) -> np.ndarray:
    if lengths is None:
        return np.full(n, t, dtype=np.int64)
    return np.asarray(lengths, dtype=np.int64)


def layer_input(model: IntModel, x) -> np.ndarray:
    """Layer 0's int8 input [N, T, I]: embedding lookup for tokens, as given for int8 features."""
    x = np.asarray(x)
    if model.is_token_model:
        return model.embedding[x.astype(np.int64)]
    return x


def run(model: IntModel, x, lengths=None, return_sequence: bool = False) -> dict:
    """Run the integer model on int8 features [N, T, F] (or token ids [N, T]).

    Returns ``logits`` int8 [N, C], ``h`` int8 [N, sum of H over layers and directions],
    ``c`` int16 [N, same] (state order: layer by layer, forward before backward), and with
    ``return_sequence`` the last layer's output sequence ``y`` int8 [N, T, H * directions].
    """
    seq = layer_input(model, x)
    N, T = seq.shape[:2]
    lengths = _as_lengths(lengths, N, T)
    hs, cs = [], []
    for layer in model.layers:
        outs = []
        for d in range(len(layer.directions)):
            y, h, c = lstm_direction(DirectionParams.from_layer(layer, d), seq, lengths,
                                     reverse=(d == 1 or layer.reverse))
            outs.append(y)
            hs.append(h)
            cs.append(c)
        seq = np.concatenate(outs, axis=2)
    last = model.layers[-1]
    head_in = np.concatenate(hs[-len(last.directions):], axis=1)
    result = {"logits": head(model, head_in), "h": np.concatenate(hs, axis=1), "c": np.concatenate(cs, axis=1)}
    if return_sequence:
        result["y"] = seq
    return result


def head(model: IntModel, x_q: np.ndarray) -> np.ndarray:
    """The fully connected head on int8 [N, D]: int8 logits [N, C]."""
    hd = model.head
    acc = np.rint((x_q.astype(np.float64) - hd.input.zero_point) @ hd.weight.astype(np.float64).T).astype(np.int64)
    acc = acc + hd.bias.astype(np.int64)
    out = np.empty_like(acc)
    for c in range(hd.num_classes):
        out[:, c] = rq(acc[:, c], int(hd.mult[c]), int(hd.shift[c]))
    return sat8(out + hd.output.zero_point).astype(np.int8)


def quantize_input(model: IntModel, x: np.ndarray) -> np.ndarray:
    """Float features to int8 with the model's input scale, exactly as the C helper does."""
    return quantize_float(x, 1.0 / model.input.scale, model.input.zero_point)


def dequantize_logits(model: IntModel, q: np.ndarray) -> np.ndarray:
    out = model.head.output
    return ((q.astype(np.float32) - out.zero_point) * np.float32(out.scale)).astype(np.float32)
