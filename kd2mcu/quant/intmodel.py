"""The integer model: a plain, versioned description of a quantized network.

It holds the int8 weights, int32 biases, every scale and zero point, and the integer multipliers
and shifts the kernel uses, and nothing else. The Python reference and the C code generator read
only this; it is saved as ``model.json`` in the build folder.

Structure (names follow ../shared/spec/int8-lstm.md):

- ``input``: how float features become the int8 ``x_q`` of layer 0 (``scale``, ``zero_point``);
  for a token model, the quantization the embedding table is stored in.
- ``embedding`` (optional): an int8 table [V][E] for token ids.
- ``layers``: LSTM layers. Each has ``input`` and ``hidden`` quantization (layer k+1's input is
  layer k's hidden), ``cell_scale_power`` P, ``cell_clip`` (0 = none), the shared requantizations
  ``input_to_cell`` = QM(2^-30 / 2^P) and ``hidden_out`` = QM(2^-30 / s_h), and one or two
  ``directions``, each with four gates in kernel order f, i, g, o.
- ``head``: a fully connected layer on the final hidden state of each direction of the last layer.
- ``labels`` (optional): the class names, index = class.
- ``normalization`` (optional, feature models): the per-feature standardization (x - mean) / std of one
  raw sensor sample, with the feature names; the generated C folds it into the input quantization
  (``kd2mcu.quant.preprocess``), so firmware passes samples in the units it trained on.
- ``text`` (optional, token models): the character of every token id and the trained length, from
  which the generated C encodes UTF-8 text (``kd2mcu.quant.preprocess``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from kd2mcu.errors import UserError
from kd2mcu.quant.qmath import FORGET_TO_CELL, INT32_MAX, quantize_multiplier

FORMAT = "kd2mcu-int8-lstm"
VERSION = 1
GATES = ("f", "i", "g", "o")  # the kernel's order; PyTorch is i, f, g, o and ONNX i, o, f, c
Q_GATE = 2.0**-12  # scale of a gate pre-activation (Q3.12)
MIN_CELL_POWER, MAX_CELL_POWER = -20, 0
MAX_STEPS = 100_000  # the longest sequence a build accepts (kd2mcu build --max-steps)
MAX_SIZE = 65_535  # features, hidden units, classes, vocabulary: anything larger is not a microcontroller model
MAX_LAYERS = 8
MAX_TEXT = 1_000  # characters of the model's source and of each class label


@dataclass
class QParams:
    scale: float
    zero_point: int


@dataclass
class Gate:
    """One gate of one direction: int8 weights, int32 bias, and the two requantizations to Q3.12."""

    wx: np.ndarray  # int8 [H, I]
    wh: np.ndarray  # int8 [H, H]
    bias: np.ndarray  # int32 [H], scale s_x * wx_scale
    wx_scale: float
    wh_scale: float
    input_mult: tuple[int, int] = (0, 0)  # QM(s_x * wx_scale / 2^-12)
    hidden_mult: tuple[int, int] = (0, 0)  # QM(s_h * wh_scale / 2^-12)


@dataclass
class Direction:
    gates: dict[str, Gate]  # keys f, i, g, o


@dataclass
class LSTMLayer:
    input: QParams
    hidden: QParams
    cell_scale_power: int
    directions: list[Direction]
    cell_clip: int = 0
    input_to_cell: tuple[int, int] = (0, 0)
    hidden_out: tuple[int, int] = (0, 0)
    reverse: bool = False  # one direction running from the last step to the first (ONNX direction=reverse)

    @property
    def input_size(self) -> int:
        return int(self.directions[0].gates["f"].wx.shape[1])

    @property
    def hidden_size(self) -> int:
        return int(self.directions[0].gates["f"].wx.shape[0])

    @property
    def bidirectional(self) -> bool:
        return len(self.directions) == 2

    @property
    def output_size(self) -> int:
        return self.hidden_size * len(self.directions)


@dataclass
class Head:
    weight: np.ndarray  # int8 [C, D]
    weight_scale: np.ndarray  # float64 [C] (per output channel; equal values = per tensor)
    bias: np.ndarray  # int32 [C], scale input.scale * weight_scale
    input: QParams
    output: QParams
    mult: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # [C]
    shift: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # [C]

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])


@dataclass
class Normalization:
    """x_normalized = (x - mean) / std per feature of one sensor sample (before frame stacking)."""

    mean: list[float]
    std: list[float]
    features: list[str]


@dataclass
class TextEncoding:
    """Token ids of characters: ``vocab[id]`` is the character (id 0 padding, 1 out of vocabulary);
    a text is cut to ``max_len`` characters."""

    vocab: list[str]
    max_len: int

    @property
    def encodable(self) -> bool:
        """Whether every entry past the two special ones is one character (a vocabulary read from token
        files holds placeholders instead)."""
        return len(self.vocab) >= 2 and all(len(ch) == 1 for ch in self.vocab[2:])


@dataclass
class IntModel:
    input: QParams
    layers: list[LSTMLayer]
    head: Head
    max_steps: int
    embedding: Optional[np.ndarray] = None  # int8 [V, E]
    labels: Optional[list[str]] = None
    source: str = ""
    frame_stack: int = 1  # each LSTM step reads this many consecutive input samples (kd2mcu.dataio.stack_frames)
    normalization: Optional[Normalization] = None
    text: Optional[TextEncoding] = None

    @property
    def sample_features(self) -> int:
        """Features of one sensor sample (a step holds ``frame_stack`` of them)."""
        return self.input_size // max(self.frame_stack, 1)

    @property
    def is_token_model(self) -> bool:
        return self.embedding is not None

    @property
    def input_size(self) -> int:
        """Features per time step (for a token model, the embedding width)."""
        return self.layers[0].input_size

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    @property
    def streaming(self) -> bool:
        """True when every layer is unidirectional, so one sample at a time can be processed."""
        return not any(layer.bidirectional or layer.reverse for layer in self.layers)

    def state_sizes(self) -> list[int]:
        """Hidden units of each (layer, direction) in state order."""
        return [layer.hidden_size for layer in self.layers for _ in layer.directions]

    # ------------------------------------------------------------------ derived integers
    def derive_multipliers(self) -> "IntModel":
        """Fill every (M, S) from the scales, as the spec's QM defines them."""
        for layer in self.layers:
            s_x, s_h = layer.input.scale, layer.hidden.scale
            layer.input_to_cell = quantize_multiplier(2.0 ** (-30 - layer.cell_scale_power))
            layer.hidden_out = quantize_multiplier(2.0**-30 / s_h)
            for d in layer.directions:
                for gate in d.gates.values():
                    gate.input_mult = quantize_multiplier(s_x * gate.wx_scale / Q_GATE)
                    gate.hidden_mult = quantize_multiplier(s_h * gate.wh_scale / Q_GATE)
        h = self.head
        pairs = [quantize_multiplier(h.input.scale * float(s) / h.output.scale) for s in h.weight_scale]
        h.mult = np.array([p[0] for p in pairs], dtype=np.int64)
        h.shift = np.array([p[1] for p in pairs], dtype=np.int64)
        return self

    # ------------------------------------------------------------------ checks
    def validate(self) -> "IntModel":
        """Check shapes, ranges and the int32 limits the kernel relies on; raise UserError."""
        _check(1 <= self.max_steps <= MAX_STEPS, f"max_steps must lie in 1..{MAX_STEPS}, got {self.max_steps}")
        _check(isinstance(self.source, str) and len(self.source) <= MAX_TEXT,
               f"source must be a text of at most {MAX_TEXT} characters")
        _check(1 <= len(self.layers) <= MAX_LAYERS, f"the model needs 1..{MAX_LAYERS} LSTM layers")
        _check_q(self.input, "input")
        k = self.frame_stack
        _check(isinstance(k, int) and 1 <= k <= 64, "frame_stack must be an integer in 1..64")
        _check(k == 1 or (self.embedding is None and self.layers and self.layers[0].input_size % k == 0),
               "frame_stack needs a feature model whose input size is a multiple of it")
        if self.embedding is not None:
            e = self.embedding
            _check(e.ndim == 2 and e.shape[0] >= 1, "embedding must be a [vocab, width] table")
            _check_int_range(e, -128, 127, "embedding")
            _check(e.shape[1] == self.layers[0].input_size, "embedding width must equal layer 0's input size")
        _check(len(self.layers) >= 1, "the model needs at least one LSTM layer")
        prev_q, prev_width = self.input, None
        for k, layer in enumerate(self.layers):
            where = f"layer {k}"
            _check(layer.input == prev_q, f"{where}: input quantization must equal the previous stage's output")
            if prev_width is not None:
                _check(layer.input_size == prev_width, f"{where}: input size {layer.input_size} != {prev_width}")
            _check_q(layer.hidden, f"{where} hidden")
            _check(1 <= layer.hidden_size <= MAX_SIZE and 1 <= layer.input_size <= MAX_SIZE,
                   f"{where}: sizes must lie in 1..{MAX_SIZE}")
            _check(len(layer.directions) in (1, 2), f"{where}: 1 or 2 directions")
            _check(not (layer.reverse and layer.bidirectional), f"{where}: reverse is for one-direction layers")
            P = layer.cell_scale_power
            _check(MIN_CELL_POWER <= P <= MAX_CELL_POWER,
                   f"{where}: cell_scale_power {P} outside [{MIN_CELL_POWER}, {MAX_CELL_POWER}]")
            _check(0 <= layer.cell_clip <= 32767, f"{where}: cell_clip must be in 0..32767")
            # |i * g| and |o * tanh(c)| are below 2^30: their requantizations may not shift left past int32
            _check_acc(np.array([2**30]), layer.input_to_cell, f"{where} input_to_cell")
            _check_acc(np.array([2**30]), layer.hidden_out, f"{where} hidden_out (hidden scale too small)")
            H, I = layer.hidden_size, layer.input_size
            for dn, d in enumerate(layer.directions):
                _check(set(d.gates) == set(GATES), f"{where}: gates must be f, i, g, o")
                for name in GATES:
                    g = d.gates[name]
                    w = f"{where} dir {dn} gate {name}"
                    _check(g.wx.shape == (H, I) and g.wh.shape == (H, H) and g.bias.shape == (H,),
                           f"{w}: weight shapes do not match hidden {H} / input {I}")
                    _check_int_range(g.wx, -128, 127, f"{w} wx")
                    _check_int_range(g.wh, -128, 127, f"{w} wh")
                    _check(np.isfinite(g.wx_scale) and np.isfinite(g.wh_scale) and g.wx_scale > 0 and g.wh_scale > 0,
                           f"{w}: weight scales must be finite and > 0")
                    eff_x = g.bias.astype(np.int64) - layer.input.zero_point * g.wx.astype(np.int64).sum(1)
                    bound_x = np.abs(eff_x) + 255 * np.abs(g.wx.astype(np.int64)).sum(1)
                    # |h - z_h| <= 255; the C loop's partial sums (-z_h * rowsum + sum h * w) stay under 256 * sum|w|
                    bound_h = 256 * np.abs(g.wh.astype(np.int64)).sum(1)
                    _check_acc(bound_x, g.input_mult, f"{w} input product")
                    _check_acc(bound_h, g.hidden_mult, f"{w} recurrent product")
            prev_q, prev_width = layer.hidden, layer.output_size
        h = self.head
        C = h.num_classes
        _check(C >= 1 and h.weight.shape == (C, prev_width),
               f"head weight must be [classes, {prev_width}], got {list(h.weight.shape)}")
        _check(h.input == prev_q, "head input quantization must equal the last layer's hidden quantization")
        _check_q(h.output, "head output")
        _check_int_range(h.weight, -128, 127, "head weight")
        _check(h.bias.shape == (C,) and h.weight_scale.shape == (C,), "head bias / scales must have one entry per class")
        _check(C <= MAX_SIZE, f"at most {MAX_SIZE} classes")
        _check(bool(np.all(np.isfinite(h.weight_scale)) and np.all(h.weight_scale > 0)),
               "head weight scales must be finite and > 0")
        eff = h.bias.astype(np.int64) - h.input.zero_point * h.weight.astype(np.int64).sum(1)
        bound = np.abs(eff) + 255 * np.abs(h.weight.astype(np.int64)).sum(1)
        for c in range(C):
            _check_acc(bound[c:c + 1], (int(h.mult[c]), int(h.shift[c])), f"head class {c}")
        if self.labels is not None:
            _check(isinstance(self.labels, list) and all(isinstance(s, str) and len(s) <= MAX_TEXT for s in self.labels),
                   "labels must be a list of texts, one per class")
            _check(len(self.labels) == C, f"{len(self.labels)} labels for {C} classes")
        if self.normalization is not None:
            n = self.normalization
            F = self.sample_features
            _check(not self.is_token_model, "a token model has no feature normalization")
            _check(all(isinstance(v, list) and len(v) == F for v in (n.mean, n.std, n.features)),
                   f"normalization: mean, std and features must each hold {F} entries (one per sample feature)")
            _check(all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in n.mean + n.std),
                   "normalization: mean and std must be finite numbers")
            _check(all(v > 0 for v in n.std), "normalization: std must be > 0")
            _check(all(1.0 / (v * self.input.scale) < 3e38 and abs(m) < 3e38 for m, v in zip(n.mean, n.std)),
                   "normalization: 1 / (std * input scale) and the mean must fit a float32")
            _check(all(isinstance(s, str) and len(s) <= MAX_TEXT for s in n.features),
                   "normalization: features must be names (texts)")
        if self.text is not None:
            t = self.text
            _check(self.is_token_model, "a feature model has no text encoding")
            _check(isinstance(t.vocab, list) and all(isinstance(ch, str) and len(ch) <= MAX_TEXT for ch in t.vocab),
                   "text: vocab must be a list of texts")
            _check(len(t.vocab) == self.embedding.shape[0],
                   f"text: {len(t.vocab)} vocabulary entries for {self.embedding.shape[0]} embedding rows")
            _check(not t.encodable or len(set(t.vocab[2:])) == len(t.vocab) - 2, "text: a character is in vocab twice")
            _check(isinstance(t.max_len, int) and 1 <= t.max_len <= MAX_STEPS, f"text: max_len must lie in 1..{MAX_STEPS}")
        return self

    def check_multipliers(self) -> None:
        """Raise UserError when a stored (M, S) differs from what the scales give."""
        import copy

        fresh = copy.deepcopy(self).derive_multipliers()
        for k, (a, b) in enumerate(zip(self.layers, fresh.layers)):
            _check(a.input_to_cell == b.input_to_cell and a.hidden_out == b.hidden_out,
                   f"layer {k}: stored multipliers disagree with its scales")
            for da, db in zip(a.directions, b.directions):
                for name in GATES:
                    _check(da.gates[name].input_mult == db.gates[name].input_mult
                           and da.gates[name].hidden_mult == db.gates[name].hidden_mult,
                           f"layer {k} gate {name}: stored multipliers disagree with its scales")
        _check(np.array_equal(self.head.mult, fresh.head.mult) and np.array_equal(self.head.shift, fresh.head.shift),
               "head: stored multipliers disagree with its scales")

    # ------------------------------------------------------------------ serialization
    def to_dict(self) -> dict:
        def q(p: QParams):
            return {"scale": float(p.scale), "zero_point": int(p.zero_point)}

        layers = []
        for layer in self.layers:
            dirs = []
            for d in layer.directions:
                gates = {}
                for name in GATES:
                    g = d.gates[name]
                    gates[name] = {
                        "wx_scale": float(g.wx_scale), "wh_scale": float(g.wh_scale),
                        "input_mult": list(g.input_mult), "hidden_mult": list(g.hidden_mult),
                        "wx": _arr(g.wx, "int8"), "wh": _arr(g.wh, "int8"), "bias": _arr(g.bias, "int32"),
                    }
                dirs.append({"gates": gates})
            layers.append({
                "input_size": layer.input_size, "hidden_size": layer.hidden_size,
                "bidirectional": layer.bidirectional, "reverse": bool(layer.reverse), "input": q(layer.input), "hidden": q(layer.hidden),
                "cell_scale_power": int(layer.cell_scale_power), "cell_clip": int(layer.cell_clip),
                "forget_to_cell": list(FORGET_TO_CELL), "input_to_cell": list(layer.input_to_cell),
                "hidden_out": list(layer.hidden_out), "directions": dirs,
            })
        h = self.head
        return {
            "format": FORMAT, "version": VERSION, "source": self.source,
            "input_kind": "tokens" if self.is_token_model else "features",
            "max_steps": int(self.max_steps), "input": q(self.input),
            "labels": self.labels,
            **({"frame_stack": int(self.frame_stack)} if self.frame_stack != 1 else {}),
            **({"normalization": {"mean": [float(v) for v in self.normalization.mean],
                                  "std": [float(v) for v in self.normalization.std],
                                  "features": list(self.normalization.features)}} if self.normalization else {}),
            **({"text": {"vocab": list(self.text.vocab), "max_len": int(self.text.max_len)}} if self.text else {}),
            "embedding": None if self.embedding is None else _arr(self.embedding, "int8"),
            "layers": layers,
            "head": {
                "input": q(h.input), "output": q(h.output),
                "weight_scale": [float(s) for s in h.weight_scale],
                "mult": [int(m) for m in h.mult], "shift": [int(s) for s in h.shift],
                "weight": _arr(h.weight, "int8"), "bias": _arr(h.bias, "int32"),
            },
        }

    @classmethod
    def from_dict(cls, d: dict) -> "IntModel":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise UserError(f"not a kd2mcu integer model (format must be {FORMAT!r})")
        if d.get("version") != VERSION:
            raise UserError(f"integer model version {d.get('version')} is not supported (this kd2mcu reads {VERSION})")
        try:
            def q(p):
                return QParams(float(p["scale"]), int(p["zero_point"]))

            layers = []
            for ld in d["layers"]:
                dirs = []
                for dd in ld["directions"]:
                    gates = {}
                    for name in GATES:
                        g = dd["gates"][name]
                        gates[name] = Gate(_unarr(g["wx"]), _unarr(g["wh"]), _unarr(g["bias"]),
                                           float(g["wx_scale"]), float(g["wh_scale"]),
                                           tuple(g["input_mult"]), tuple(g["hidden_mult"]))
                    dirs.append(Direction(gates))
                layers.append(LSTMLayer(q(ld["input"]), q(ld["hidden"]), int(ld["cell_scale_power"]), dirs,
                                        int(ld["cell_clip"]), tuple(ld["input_to_cell"]), tuple(ld["hidden_out"]),
                                        bool(ld.get("reverse", False))))
            hd = d["head"]
            head = Head(_unarr(hd["weight"]), np.array(hd["weight_scale"], dtype=np.float64), _unarr(hd["bias"]),
                        q(hd["input"]), q(hd["output"]), np.array(hd["mult"], dtype=np.int64),
                        np.array(hd["shift"], dtype=np.int64))
            model = cls(q(d["input"]), layers, head, int(d["max_steps"]),
                        None if d.get("embedding") is None else _unarr(d["embedding"]),
                        d.get("labels"), d.get("source", ""), d.get("frame_stack", 1))
            if d.get("normalization") is not None:
                n = d["normalization"]
                model.normalization = Normalization(list(n["mean"]), list(n["std"]), list(n["features"]))
            if d.get("text") is not None:
                model.text = TextEncoding(list(d["text"]["vocab"]), d["text"]["max_len"])
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise UserError(f"integer model is malformed ({type(exc).__name__}: {exc})") from None
        model.validate()  # scales first: the multipliers are derived from them
        model.check_multipliers()
        return model

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    @classmethod
    def load(cls, path) -> "IntModel":
        try:
            text = Path(path).read_bytes().decode("utf-8")
            d = json.loads(text)
        except OSError as exc:
            raise UserError(f"cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UserError(f"{path} is not a kd2mcu integer model (not UTF-8 text)") from None
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
        except RecursionError:
            raise UserError(f"{path} is not a kd2mcu integer model (JSON nested too deeply)") from None
        return cls.from_dict(d)


def _arr(a: np.ndarray, dtype: str) -> dict:
    a = np.asarray(a)
    return {"dtype": dtype, "shape": list(a.shape), "values": " ".join(str(int(v)) for v in a.ravel())}


def _unarr(d: dict) -> np.ndarray:
    dtype = {"int8": np.int8, "int32": np.int32}[d["dtype"]]
    vals = np.array([int(v) for v in d["values"].split()], dtype=np.int64)
    shape = tuple(int(s) for s in d["shape"])
    if vals.size != int(np.prod(shape)):
        raise ValueError(f"array of shape {list(shape)} holds {vals.size} values")
    info = np.iinfo(dtype)
    if vals.size and (vals.min() < info.min or vals.max() > info.max):
        raise ValueError(f"values outside {d['dtype']}")
    return vals.astype(dtype).reshape(shape)


def _check(cond, message: str) -> None:
    if not cond:
        raise UserError(f"invalid integer model: {message}")


def _check_q(p: QParams, what: str) -> None:
    _check(np.isfinite(p.scale) and p.scale > 0, f"{what} scale must be finite and > 0, got {p.scale}")
    _check(-128 <= p.zero_point <= 127, f"{what} zero point {p.zero_point} outside int8")


def _check_int_range(a: np.ndarray, lo: int, hi: int, what: str) -> None:
    _check(a.size == 0 or (a.min() >= lo and a.max() <= hi), f"{what} has values outside [{lo}, {hi}]")


def _check_acc(bound: np.ndarray, mult: tuple[int, int], what: str) -> None:
    """Every reachable accumulator, shifted left by S, must fit int32 (spec: Requantization)."""
    _check(0 <= int(mult[0]) < 2**31 and -31 <= int(mult[1]) <= 30,
           f"{what}: multiplier {tuple(mult)} outside 0 <= M < 2^31, -31 <= S <= 30")
    shift = max(int(mult[1]), 0)
    worst = int(bound.max()) if bound.size else 0
    _check(worst * (1 << shift) <= INT32_MAX,
           f"{what}: accumulator bound {worst} shifted left by {shift} overflows int32 (weights too large for "
           "these scales)")
