"""Quantization-aware training: the student's forward pass through its exact integer model.

``qat_forward(student, model, x, lengths)`` returns logits whose *values* are, bit for bit, the
integer reference's dequantized logits (``reference.run`` on the IntModel ``model``), and whose
*gradients* reach every student parameter through straight-through estimators (STE) that follow the
float LSTM. Section names in the docstrings refer to ../shared/spec/int8-lstm.md.

Per LSTM direction there are two passes over the sequence:

1. the exact pass runs the spec's integer arithmetic in torch int64 (vectorized over the batch, a
   loop over the time steps) and records every quantized intermediate: gate pre-activations (Q3.12),
   gates (Q0.15), cell (2^P) and hidden state (int8 ``s_h``, ``z_h``);
2. the surrogate pass runs the float LSTM in real units on the student's fake-quantized parameters
   (``w + (q * s - w).detach()``), and at every quantized point swaps in the exact value while keeping
   the surrogate's gradient: ``exact + (s - s.detach())``. Step t reads the combined (exact-valued)
   tensors of step t-1, so values and gradients describe the same trajectory.

The student is a ``kd2mcu.train.student.TinyLSTM`` (read by its attributes ``lstms``, ``embedding``,
``head``: this module does not import the training stage). The integer model comes from ``int_model`` (= ``ptq.quantize`` of ``float_model(student)``, what
``kd2mcu build`` makes of the exported student); rebuild it whenever the student's weights or the
calibration ranges should be picked up.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Sequence

import numpy as np
import torch

from kd2mcu.quant import ptq, qmath, reference
from kd2mcu.quant.floatmodel import CalibrationStats, FloatDirection, FloatLayer, FloatModel
from kd2mcu.quant.intmodel import GATES, Q_GATE, IntModel, LSTMLayer
from kd2mcu.quant.qmath import FORGET_TO_CELL, INT8_MAX, INT8_MIN, INT16_MAX, INT16_MIN

Q_ACT = 2.0**-15  # scale of a gate output (Q0.15)
_TORCH_GATES = ("i", "f", "g", "o")  # PyTorch's gate order in weight_ih / weight_hh / biases
_TO_KERNEL = [_TORCH_GATES.index(g) for g in GATES]  # kernel gate k is PyTorch gate _TO_KERNEL[k]
_I16_OFFSET = -INT16_MIN  # int16 value v sits at index v + 32768 of an activation table


# ==========================================================================================
# Float model and calibration


def float_model(student: torch.nn.Module, labels=None) -> FloatModel:
    """The student's current weights as a FloatModel (float64, kernel gate order f, i, g, o).

    Per direction: ``wx`` [4, H, I], ``wh`` [4, H, H] reordered from PyTorch's i, f, g, o, and
    ``bias = b_ih + b_hh``. A token student carries its embedding table; layers never run
    ``reverse`` (a bidirectional layer has a forward and a backward direction instead).
    """
    layers = []
    for lstm in student.lstms:
        dirs = []
        for suffix in _suffixes(lstm):
            w_ih, w_hh = _np(getattr(lstm, f"weight_ih_l0{suffix}")), _np(getattr(lstm, f"weight_hh_l0{suffix}"))
            H = w_hh.shape[1]
            bias = np.zeros(4 * H)
            if lstm.bias:  # summed in float64, as the ONNX importer sums B's two halves
                bias = _np(getattr(lstm, f"bias_ih_l0{suffix}")) + _np(getattr(lstm, f"bias_hh_l0{suffix}"))
            dirs.append(FloatDirection(
                wx=np.ascontiguousarray(w_ih.reshape(4, H, -1)[_TO_KERNEL]),
                wh=np.ascontiguousarray(w_hh.reshape(4, H, H)[_TO_KERNEL]),
                bias=np.ascontiguousarray(bias.reshape(4, H)[_TO_KERNEL])))
        layers.append(FloatLayer(dirs))
    embedding = None if student.embedding is None else _np(student.embedding.weight)
    return FloatModel(layers, _np(student.head.weight), _np(student.head.bias), embedding,
                      None if labels is None else list(labels))


def calibrate(student: torch.nn.Module, x, lengths=None) -> CalibrationStats:
    """Activation ranges of the student's float model on ``x`` (features [N, T, F] or token ids [N, T]),
    recorded by ``FloatModel.forward`` exactly as post-training quantization calibrates."""
    stats = CalibrationStats()
    lengths = None if lengths is None else _np(lengths).astype(np.int64)
    float_model(student).forward(_np(x) if torch.is_tensor(x) else np.asarray(x), lengths, stats=stats)
    return stats


def int_model(student: torch.nn.Module, stats: CalibrationStats, max_steps: int, labels=None) -> IntModel:
    """The integer model QAT imitates and the build produces: ``ptq.quantize(float_model(student), ...)``."""
    return ptq.quantize(float_model(student, labels), stats, max_steps)


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64) if torch.is_tensor(t) else np.asarray(t)


def _suffixes(lstm: torch.nn.LSTM) -> list[str]:
    if lstm.num_layers != 1 or lstm.proj_size or not lstm.batch_first:
        raise ValueError("qat expects single-layer, batch_first LSTMs without projection (TinyLSTM's)")
    return ["", "_reverse"] if lstm.bidirectional else [""]


def _lstm_tensors(lstm: torch.nn.LSTM, suffix: str):
    """(weight_ih [4H, I], weight_hh [4H, H], b_ih + b_hh [4H]) of one direction, PyTorch gate order."""
    w_ih, w_hh = getattr(lstm, f"weight_ih_l0{suffix}"), getattr(lstm, f"weight_hh_l0{suffix}")
    if lstm.bias:
        bias = getattr(lstm, f"bias_ih_l0{suffix}") + getattr(lstm, f"bias_hh_l0{suffix}")
    else:
        bias = w_ih.new_zeros(w_ih.shape[0])
    return w_ih, w_hh, bias


# ==========================================================================================
# Integer operations of the spec, on int64 tensors


@dataclass(frozen=True)
class Requant:
    """A requantization rq(., M, S), prepared for int64 tensors (spec: Requantization).

    Fields are Python ints for a single (M, S), or int64 tensors [K] for one pair per output column.
    ``lm`` = M * 2^max(S, 0) folds the left shift into the multiplier (|acc * 2^S| < 2^31 and M < 2^31,
    so the product stays below 2^62); ``n`` = max(-S, 0) is the rounding right shift.
    """

    lm: object
    n: object
    mask: object
    half: object

    @classmethod
    def of(cls, pairs: Sequence[tuple[int, int]], repeat: int = 1) -> "Requant":
        """One (M, S) per column; each pair repeated ``repeat`` times (e.g. once per hidden unit of a gate)."""
        lm = [int(m) << max(int(s), 0) for m, s in pairs for _ in range(repeat)]
        n = [max(-int(s), 0) for m, s in pairs for _ in range(repeat)]
        lm_t, n_t = torch.tensor(lm, dtype=torch.int64), torch.tensor(n, dtype=torch.int64)
        mask = (torch.ones_like(n_t) << n_t) - 1
        return cls(lm_t, n_t, mask, mask >> 1)

    @classmethod
    def scalar(cls, pair: tuple[int, int]) -> "Requant":
        m, s = int(pair[0]), int(pair[1])
        n = max(-s, 0)
        mask = (1 << n) - 1
        return cls(m << max(s, 0), n, mask, mask >> 1)


def rq(acc: torch.Tensor, p: Requant) -> torch.Tensor:
    """rq(acc, M, S) (spec: Requantization): TFLite's MultiplyByQuantizedMultiplier, double rounding.

    First a rounding doubling high multiply (half up), then a right shift by n rounding half away
    from zero. ``>>`` on int64 tensors is arithmetic (floor), as the spec requires.
    """
    hi = (acc * p.lm + (1 << 30)) >> 31
    rem = hi & p.mask
    thr = p.half + (hi < 0)
    return (hi >> p.n) + (rem > thr)


def sat8(v: torch.Tensor) -> torch.Tensor:
    """sat8 (spec: Notation): clamp to [-128, 127]."""
    return v.clamp(INT8_MIN, INT8_MAX)


def sat16(v: torch.Tensor) -> torch.Tensor:
    """sat16 (spec: Notation): clamp to [-32768, 32767]."""
    return v.clamp(INT16_MIN, INT16_MAX)


@lru_cache(maxsize=None)
def activation_table(kind: str, shift: int = 0) -> torch.Tensor:
    """sigmoid16 / tanh16 (spec: sigmoid16 / tanh16, as ``qmath`` computes them) evaluated once for every
    int16 input (their inputs are always int16).

    Entry v + 32768 is the activation of v, so a lookup replaces ~15 tensor ops per step.
    """
    v = np.arange(INT16_MIN, INT16_MAX + 1, dtype=np.int64)
    fn = {"sigmoid": qmath.sigmoid16, "tanh": qmath.tanh16}[kind]
    return torch.from_numpy(np.asarray(fn(v, shift), dtype=np.int64))


@lru_cache(maxsize=None)
def _gate_table() -> torch.Tensor:
    """sigmoid16 table followed by the tanh16 table: a gate reads its own half through a column offset."""
    return torch.cat([activation_table("sigmoid"), activation_table("tanh")])


def quantize_input(model: IntModel, x: torch.Tensor) -> torch.Tensor:
    """Float features to int8 (as int64): ``reference.quantize_input``, which the C helper matches."""
    return torch.from_numpy(reference.quantize_input(model, x.detach().cpu().numpy()).astype(np.int64))


# ==========================================================================================
# Sequences and lengths


class _Steps:
    """Which step of which sample is real, as in reference.lstm_direction.

    Sample n runs steps 0..lengths[n]-1; a reverse direction's step t reads position lengths[n]-1-t.
    """

    def __init__(self, lengths: Optional[torch.Tensor], N: int, T: int):
        lengths = torch.full((N,), T, dtype=torch.int64) if lengths is None else \
            torch.as_tensor(lengths).to(torch.int64).reshape(N)
        t = torch.arange(T)
        self.T = T
        self.valid = t[None, :] < lengths[:, None]  # [N, T]
        self.active = [self.valid[:, s] for s in range(T)]
        self.count = int(min(int(lengths.max()) if N else 0, T))  # steps until no sample is active
        self.all_active = [bool(a.all()) for a in self.active[:self.count]]
        self._rev = (lengths[:, None] - 1 - t[None, :]).clamp(0, max(T - 1, 0))  # [N, T]
        self.everything_valid = bool(self.valid.all())

    def reverse(self, seq: torch.Tensor) -> torch.Tensor:
        """[N, T, K] in position order -> the order a reverse direction steps through it (and back)."""
        return seq.gather(1, self._rev[:, :, None].expand(-1, -1, seq.shape[2]))

    def outputs(self, per_step: list, like: torch.Tensor, reverse: bool, fill) -> torch.Tensor:
        """A direction's output sequence [N, T, H] in position order from its states after each step
        (``like``: an [N, H] tensor of the right dtype); ``fill`` where a sample has no step (the spec's
        real zero: z_h, or 0.0 in real units)."""
        pad = like.new_full((like.shape[0], self.T - len(per_step), like.shape[1]), fill)
        seq = torch.cat([torch.stack(per_step, 1), pad], 1) if per_step else pad
        if reverse:
            seq = self.reverse(seq)
        if self.everything_valid:
            return seq
        return torch.where(self.valid[:, :, None], seq, pad.new_full((), fill))


# ==========================================================================================
# Exact pass: the spec's integer LSTM in torch int64


@dataclass
class _IntDirection:
    """One direction of one layer as the exact pass uses it (spec: One time step)."""

    wx_t: torch.Tensor  # float64 [I, 4H]: int8 values, kernel gate order f, i, g, o
    wh_t: torch.Tensor  # float64 [H, 4H]
    bias: torch.Tensor  # int64 [4H]
    input_rq: Requant  # per column: QM(s_x * s_Wx_g / 2^-12)
    hidden_rq: Requant  # per column: QM(s_h * s_Wh_g / 2^-12)
    gate_offset: torch.Tensor  # int64 [4H]: index offset into _gate_table() (sigmoid for f, i, o; tanh for g)
    z_x: int
    z_h: int
    s_h: float
    cell_power: int
    cell_clip: int
    input_to_cell: Requant
    hidden_out: Requant
    cell_tanh: torch.Tensor  # tanh16(c, P + 12) for every int16 c

    @classmethod
    def of(cls, layer: LSTMLayer, d: int) -> "_IntDirection":
        gates = [layer.directions[d].gates[g] for g in GATES]
        H = layer.hidden_size
        table = 2 * _I16_OFFSET
        offset = torch.tensor([_I16_OFFSET + (table if g == "g" else 0) for g in GATES for _ in range(H)])
        return cls(
            torch.tensor(np.concatenate([g.wx for g in gates]), dtype=torch.float64).T.contiguous(),
            torch.tensor(np.concatenate([g.wh for g in gates]), dtype=torch.float64).T.contiguous(),
            torch.tensor(np.concatenate([g.bias for g in gates]), dtype=torch.int64),
            Requant.of([g.input_mult for g in gates], H), Requant.of([g.hidden_mult for g in gates], H),
            offset, layer.input.zero_point, layer.hidden.zero_point, layer.hidden.scale,
            layer.cell_scale_power, layer.cell_clip, Requant.scalar(layer.input_to_cell),
            Requant.scalar(layer.hidden_out), activation_table("tanh", layer.cell_scale_power + 12))


_FORGET = Requant.scalar(FORGET_TO_CELL)


@dataclass
class _Trace:
    """What the exact pass computed at each step t < steps.count (unmasked new values) and its results."""

    pre: list  # int64 [N, 4H] gate pre-activations, Q3.12
    gates: list  # int64 [N, 4H] gate outputs, Q0.15
    cell: list  # int64 [N, H] new cell state, scale 2^P
    hidden: list  # int64 [N, H] new hidden state, int8
    states: list  # int64 [N, H] hidden state after step t (masked by length): the output sequence
    h_final: torch.Tensor  # int64 [N, H]


def gate_preactivations(p: _IntDirection, pre_x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """pre = sat16(sat16(rq(acc_x)) + rq(acc_h)) for all four gates (spec: One time step).

    ``pre_x`` = sat16(rq(acc_x, input_mult)) is precomputed for the whole sequence; acc_h is the
    recurrent int8 dot product with the zero point applied, exact in float64 (integers below 2^53).
    """
    acc_h = ((h - p.z_h).to(torch.float64) @ p.wh_t).to(torch.int64)
    return sat16(pre_x + rq(acc_h, p.hidden_rq))


def gate_activations(p: _IntDirection, pre: torch.Tensor) -> torch.Tensor:
    """sigmoid16(pre) for f, i, o and tanh16(pre) for g, Q3.12 in, Q0.15 out (spec: sigmoid16 / tanh16)."""
    return _gate_table()[pre + p.gate_offset]


def cell_update(p: _IntDirection, f, i, g, c) -> torch.Tensor:
    """c = sat16(rq(f*c, 2^30, -14)) + rq(i*g, QM(2^-30 / 2^P)), then the clip or sat16 (spec: One time step)."""
    c_new = sat16(rq(f * c, _FORGET)) + rq(i * g, p.input_to_cell)
    return c_new.clamp(-p.cell_clip, p.cell_clip) if p.cell_clip else sat16(c_new)


def hidden_output(p: _IntDirection, o, c) -> torch.Tensor:
    """h_q = sat8(rq(o * tanh16(c, P + 12), QM(2^-30 / s_h)) + z_h) (spec: One time step)."""
    t = p.cell_tanh[c + _I16_OFFSET]
    return sat8(rq(o * t, p.hidden_out) + p.z_h)


def exact_direction(p: _IntDirection, x_q: torch.Tensor, steps: _Steps, reverse: bool) -> _Trace:
    """One direction over int8 inputs x_q [N, T, I] (int64), exactly reference.lstm_direction."""
    N = x_q.shape[0]
    H = p.wh_t.shape[0]
    acc_x = ((x_q - p.z_x).to(torch.float64) @ p.wx_t).to(torch.int64) + p.bias  # [N, T, 4H], exact
    pre_x = sat16(rq(acc_x, p.input_rq))  # the first saturation, every step at once
    if reverse:
        pre_x = steps.reverse(pre_x)
    h = torch.full((N, H), p.z_h, dtype=torch.int64)  # initial state: h = z_h (real zero), c = 0
    c = torch.zeros((N, H), dtype=torch.int64)
    tr = _Trace([], [], [], [], [], h)
    for t in range(steps.count):
        pre = gate_preactivations(p, pre_x[:, t], h)
        gates = gate_activations(p, pre)
        f, i, g, o = gates.split(H, 1)
        c_new = cell_update(p, f, i, g, c)
        h_new = hidden_output(p, o, c_new)
        tr.pre.append(pre)
        tr.gates.append(gates)
        tr.cell.append(c_new)
        tr.hidden.append(h_new)
        if steps.all_active[t]:
            c, h = c_new, h_new
        else:  # a sample past its length keeps its state
            m = steps.active[t][:, None]
            c, h = torch.where(m, c_new, c), torch.where(m, h_new, h)
        tr.states.append(h)
    tr.h_final = h
    return tr


def exact_head(model: IntModel, x_q: torch.Tensor) -> torch.Tensor:
    """y_q = sat8(rq(b + sum (x_q - z_in) * W, QM(s_in * s_W / s_y)) + z_y) (spec: Fully connected head)."""
    hd = model.head
    w_t = torch.tensor(hd.weight, dtype=torch.float64).T
    acc = ((x_q - hd.input.zero_point).to(torch.float64) @ w_t).to(torch.int64)
    acc = acc + torch.tensor(hd.bias, dtype=torch.int64)
    p = Requant.of([(int(m), int(s)) for m, s in zip(hd.mult, hd.shift)])
    return sat8(rq(acc, p) + hd.output.zero_point)


# ==========================================================================================
# Surrogate pass: the float LSTM in real units, carrying the exact values


def ste(exact: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """The value of ``exact`` (no gradient) with the gradient of ``surrogate`` (straight-through)."""
    return exact + (surrogate - surrogate.detach())


def fake_quant(w: torch.Tensor, dequantized: np.ndarray) -> torch.Tensor:
    """w_fq = w + (q * s - w).detach(): the integer model's value, the float parameter's gradient."""
    return w + (torch.as_tensor(dequantized, dtype=w.dtype) - w).detach()


def _kernel_order(t: torch.Tensor) -> torch.Tensor:
    """Rows [4H, ...] from PyTorch's gate order i, f, g, o to the kernel's f, i, g, o."""
    return torch.cat([t.chunk(4, 0)[k] for k in _TO_KERNEL], 0)


@dataclass
class _FakeQuantDirection:
    wx_t: torch.Tensor  # [I, 4H] fake-quantized, kernel gate order
    wh_t: torch.Tensor  # [H, 4H]
    bias: torch.Tensor  # [4H] fake-quantized (int32 at s_x * s_Wx_g)
    is_g: torch.Tensor  # bool [4H]: column belongs to the cell candidate g (tanh) rather than a sigmoid gate


def _fake_quant_direction(lstm: torch.nn.LSTM, suffix: str, layer: LSTMLayer, d: int) -> _FakeQuantDirection:
    """The student's direction with fake-quantized weights; the integer values come from ``layer``."""
    w_ih, w_hh, bias = _lstm_tensors(lstm, suffix)
    gates = layer.directions[d].gates
    s_x = layer.input.scale
    torch_order = [gates[g] for g in _TORCH_GATES]
    deq_x = np.concatenate([g.wx.astype(np.float64) * g.wx_scale for g in torch_order])
    deq_h = np.concatenate([g.wh.astype(np.float64) * g.wh_scale for g in torch_order])
    deq_b = np.concatenate([g.bias.astype(np.float64) * (s_x * g.wx_scale) for g in torch_order])
    H = w_hh.shape[1]
    is_g = torch.tensor([g == "g" for g in GATES for _ in range(H)])
    return _FakeQuantDirection(_kernel_order(fake_quant(w_ih, deq_x)).T, _kernel_order(fake_quant(w_hh, deq_h)).T,
                               _kernel_order(fake_quant(bias, deq_b)), is_g)


def surrogate_direction(fd: _FakeQuantDirection, p: _IntDirection, tr: _Trace, x_v: torch.Tensor,
                        steps: _Steps, reverse: bool):
    """Replay one direction in real units: at every quantized point the value is the exact pass's,
    the gradient the float LSTM's. Returns (h states after each step [N, H] list, final h [N, H])."""
    N, H = x_v.shape[0], p.wh_t.shape[0]
    dtype = x_v.dtype
    if steps.count == 0:  # every sample is empty: the state stays real zero
        return [], x_v.new_zeros((N, H))
    # exact values in real units, converted once for all steps: [count, N, K]
    pre_r = torch.stack(tr.pre).to(dtype) * Q_GATE
    gates_r = torch.stack(tr.gates).to(dtype) * Q_ACT
    cell_r = torch.stack(tr.cell).to(dtype) * 2.0**p.cell_power
    hid_r = (torch.stack(tr.hidden) - p.z_h).to(dtype) * torch.tensor(p.s_h, dtype=dtype)
    ax = x_v @ fd.wx_t + fd.bias  # [N, T, 4H]: the input half of every pre-activation
    if reverse:
        ax = steps.reverse(ax)
    h = x_v.new_zeros((N, H))
    c = x_v.new_zeros((N, H))
    states = []
    for t in range(steps.count):
        pre = ste(pre_r[t], ax[:, t] + h @ fd.wh_t)  # Wx x + Wh h + b
        gates = ste(gates_r[t], torch.where(fd.is_g, torch.tanh(pre), torch.sigmoid(pre)))
        f, i, g, o = gates.split(H, 1)
        c_new = ste(cell_r[t], f * c + i * g)
        h_new = ste(hid_r[t], o * torch.tanh(c_new))
        if steps.all_active[t]:
            c, h = c_new, h_new
        else:
            m = steps.active[t][:, None]
            c, h = torch.where(m, c_new, c), torch.where(m, h_new, h)
        states.append(h)
    return states, h


# ==========================================================================================
# The QAT forward pass


def qat_forward(student: torch.nn.Module, model: IntModel, x: torch.Tensor, lengths: Optional[torch.Tensor] = None
                ) -> torch.Tensor:
    """Logits [N, C] in real units: values = the integer reference's dequantized logits exactly,
    ``(reference.run(model, x_q, lengths)["logits"] - z_y) * s_y`` in float32; gradients = the float
    student's, through straight-through estimators at every quantized point.

    ``x``: features [N, T, F] (quantized with ``model.input`` as ``reference.quantize_input`` does) or,
    for a token model, token ids [N, T]. ``lengths``: [N] true lengths (None: all T).
    """
    _check_shapes(student, model)
    dtype = student.head.weight.dtype
    N, T = x.shape[0], x.shape[1]
    steps = _Steps(lengths, N, T)
    # Layer 0's input (spec: Tensors and their types; Embedding)
    s_x = torch.tensor(model.input.scale, dtype=dtype)
    if model.is_token_model:
        ids = x.to(torch.int64)
        x_q = torch.as_tensor(model.embedding, dtype=torch.int64)[ids]
        x_v = ste((x_q - model.input.zero_point).to(dtype) * s_x, student.embedding(ids))
    else:
        x_q = quantize_input(model, x)
        x_v = (x_q - model.input.zero_point).to(dtype) * s_x
        if x.requires_grad:
            x_v = ste(x_v, x.to(dtype))
    finals_q, finals_v = [], []
    for k, (layer, lstm) in enumerate(zip(model.layers, student.lstms)):
        last = k == len(model.layers) - 1
        outs_q, outs_v, finals_q, finals_v = [], [], [], []
        for d, suffix in enumerate(_suffixes(lstm)):
            reverse = d == 1 or layer.reverse
            p = _IntDirection.of(layer, d)
            tr = exact_direction(p, x_q, steps, reverse)
            fq = _fake_quant_direction(lstm, suffix, layer, d)
            states_v, h_v = surrogate_direction(fq, p, tr, x_v, steps, reverse)
            finals_q.append(tr.h_final)
            finals_v.append(h_v)
            if not last:  # the next layer's input (spec: Stacked layers): real zero where a sample has no step
                outs_q.append(steps.outputs(tr.states, tr.h_final, reverse, p.z_h))
                outs_v.append(steps.outputs(states_v, h_v, reverse, 0.0))
        if not last:
            x_q, x_v = torch.cat(outs_q, 2), torch.cat(outs_v, 2)
    # Head on the final hidden state of each direction (spec: Bidirectional; Fully connected head)
    y_q = exact_head(model, torch.cat(finals_q, 1))
    out = model.head.output
    exact = (y_q.to(torch.float32) - out.zero_point) * torch.tensor(out.scale, dtype=torch.float32)
    h_v = torch.cat(finals_v, 1)
    hd = model.head
    w_fq = fake_quant(student.head.weight, hd.weight.astype(np.float64) * hd.weight_scale[:, None])
    b_fq = fake_quant(student.head.bias, hd.bias.astype(np.float64) * (hd.input.scale * hd.weight_scale))
    return ste(exact.to(dtype), h_v @ w_fq.T + b_fq)


def _check_shapes(student: torch.nn.Module, model: IntModel) -> None:
    if (student.embedding is not None) != model.is_token_model:
        raise ValueError("the student and the integer model disagree on token input (embedding)")
    if len(student.lstms) != len(model.layers):
        raise ValueError(f"the student has {len(student.lstms)} LSTM layers, the integer model {len(model.layers)}")
    for k, (lstm, layer) in enumerate(zip(student.lstms, model.layers)):
        dirs = 2 if lstm.bidirectional else 1
        if (lstm.hidden_size, lstm.input_size, dirs) != (layer.hidden_size, layer.input_size, len(layer.directions)):
            raise ValueError(f"layer {k}: the student's LSTM ({lstm.input_size} -> {lstm.hidden_size} x {dirs}) "
                             f"does not match the integer model's ({layer.input_size} -> {layer.hidden_size} x "
                             f"{len(layer.directions)})")
    if tuple(student.head.weight.shape) != tuple(model.head.weight.shape):
        raise ValueError("the student's head does not match the integer model's")
