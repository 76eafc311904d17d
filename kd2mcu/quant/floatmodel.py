"""The float network the integer model is quantized from, and its numpy forward pass.

A FloatModel is what an importer (ONNX today, a training run later) understood: an optional
embedding, LSTM layers with weights in kernel gate order f, i, g, o, and a linear head on the final
hidden state of each direction of the last layer. ``forward`` re-implements it in float64 and, on
request, records the activation ranges that post-training quantization calibrates from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass
class FloatDirection:
    wx: np.ndarray  # [4, H, I], gates f, i, g, o
    wh: np.ndarray  # [4, H, H]
    bias: np.ndarray  # [4, H]: input bias + recurrent bias


@dataclass
class FloatLayer:
    directions: list[FloatDirection]
    reverse: bool = False  # a single direction that runs from the last step to the first

    @property
    def hidden_size(self) -> int:
        return int(self.directions[0].wx.shape[1])

    @property
    def input_size(self) -> int:
        return int(self.directions[0].wx.shape[2])

    @property
    def output_size(self) -> int:
        return self.hidden_size * len(self.directions)


@dataclass
class FloatModel:
    layers: list[FloatLayer]
    head_weight: np.ndarray  # [C, D]
    head_bias: np.ndarray  # [C]
    embedding: Optional[np.ndarray] = None  # [V, E]
    labels: Optional[list[str]] = None

    @property
    def is_token_model(self) -> bool:
        return self.embedding is not None

    @property
    def num_classes(self) -> int:
        return int(self.head_weight.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        """Every parameter by a readable name (for NaN/Inf checks and error messages)."""
        out = {"head.weight": self.head_weight, "head.bias": self.head_bias}
        if self.embedding is not None:
            out["embedding"] = self.embedding
        for k, layer in enumerate(self.layers):
            for d, dr in enumerate(layer.directions):
                for name in ("wx", "wh", "bias"):
                    out[f"layer{k}.dir{d}.{name}"] = getattr(dr, name)
        return out

    def forward(self, x, lengths=None, stats: Optional["CalibrationStats"] = None) -> np.ndarray:
        """Float logits [N, C] for features [N, T, F] or token ids [N, T]."""
        x = np.asarray(x)
        seq = self.embedding[x.astype(np.int64)] if self.is_token_model else x.astype(np.float64)
        N, T = seq.shape[:2]
        lengths = np.full(N, T, dtype=np.int64) if lengths is None else np.asarray(lengths, dtype=np.int64)
        valid = np.arange(T)[None, :] < lengths[:, None]  # [N, T]
        finals = []
        for k, layer in enumerate(self.layers):
            if stats is not None:
                stats.observe_input(k, seq[valid])
            outs, finals = [], []
            for d, dr in enumerate(layer.directions):
                y, h, cmax = _lstm_direction(dr, seq, lengths, reverse=(d == 1 or layer.reverse))
                outs.append(y)
                finals.append(h)
                if stats is not None:
                    stats.observe_hidden(k, y[valid], cmax)
            seq = np.concatenate(outs, axis=2)
        head_in = np.concatenate(finals, axis=1)
        logits = head_in @ self.head_weight.T + self.head_bias
        if stats is not None:
            stats.observe_logits(logits)
        return logits


def _sigmoid(v):
    return 0.5 * (1.0 + np.tanh(0.5 * v))


def _lstm_direction(dr: FloatDirection, x: np.ndarray, lengths: np.ndarray, reverse: bool):
    N, T, _ = x.shape
    H = dr.wx.shape[1]
    wx = dr.wx.reshape(4 * H, -1)
    wh = dr.wh.reshape(4 * H, H)
    ax = x @ wx.T + dr.bias.reshape(-1)
    h = np.zeros((N, H))
    c = np.zeros((N, H))
    y = np.zeros((N, T, H))
    rows = np.arange(N)
    cmax = 0.0
    for t in range(T):
        active = t < lengths
        if not active.any():
            break
        pos = np.clip(lengths - 1 - t, 0, T - 1) if reverse else np.full(N, t)
        z = ax[rows, pos] + h @ wh.T
        f, i, g, o = (z[:, k * H:(k + 1) * H] for k in range(4))
        c_new = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h_new = _sigmoid(o) * np.tanh(c_new)
        m = active[:, None]
        c = np.where(m, c_new, c)
        h = np.where(m, h_new, h)
        if active.any():
            cmax = max(cmax, float(np.abs(c_new[active]).max()))
        y[rows[active], pos[active]] = h[active]
    return y, h, cmax


@dataclass
class CalibrationStats:
    """Ranges seen on calibration data: each layer's input and hidden values and the cell's max |c|."""

    input_min: dict = field(default_factory=dict)
    input_max: dict = field(default_factory=dict)
    hidden_min: dict = field(default_factory=dict)
    hidden_max: dict = field(default_factory=dict)
    cell_absmax: dict = field(default_factory=dict)
    logits_min: float = np.inf
    logits_max: float = -np.inf

    def observe_input(self, k: int, v: np.ndarray) -> None:
        if v.size:
            self.input_min[k] = min(self.input_min.get(k, np.inf), float(v.min()))
            self.input_max[k] = max(self.input_max.get(k, -np.inf), float(v.max()))

    def observe_hidden(self, k: int, v: np.ndarray, cmax: float) -> None:
        if v.size:
            self.hidden_min[k] = min(self.hidden_min.get(k, np.inf), float(v.min()))
            self.hidden_max[k] = max(self.hidden_max.get(k, -np.inf), float(v.max()))
        self.cell_absmax[k] = max(self.cell_absmax.get(k, 0.0), cmax)

    def observe_logits(self, v: np.ndarray) -> None:
        if v.size:
            self.logits_min = min(self.logits_min, float(v.min()))
            self.logits_max = max(self.logits_max, float(v.max()))
