"""Import a float LSTM classifier from ONNX into a FloatModel, and check it against onnxruntime.

What is understood: standard ``LSTM`` nodes (stacked, forward or bidirectional; a forward and a reverse
node reading the same input form one bidirectional layer), an optional ``Gather`` embedding on the graph
input, and a linear head (``Gemm``, or ``MatMul`` + ``Add``) producing the single graph output. Ops that
only move data (Transpose, Reshape, Slice, Concat, ...) are accepted without being interpreted: instead,
every import is verified numerically by running onnxruntime on the user's data and comparing its logits
with ``FloatModel.forward`` (``check_against_onnxruntime``). Anything else is refused with a UserError
naming the node.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from kd2mcu.errors import UserError
from kd2mcu.quant.floatmodel import FloatDirection, FloatLayer, FloatModel

GLUE_OPS = frozenset({"Transpose", "Squeeze", "Unsqueeze", "Reshape", "Flatten", "Concat", "Slice", "Gather",
                      "Identity", "Shape", "Constant", "ConstantOfShape", "Cast", "Expand"})
SUPPORTED = "kd2mcu imports LSTM, Gather, Gemm/MatMul+Add and reshaping glue"
# ONNX packs the four gates as i, o, f, c; FloatModel wants f, i, g(=c), o.
_ONNX_TO_FIOG = [2, 0, 3, 1]
_DEFAULT_ACTIVATIONS = ("sigmoid", "tanh", "tanh")
# Ops through which an all-zero data input (input 0, or all inputs for Concat) stays all zero.
_ZERO_PRESERVING = frozenset({"Identity", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Flatten", "Slice",
                              "Expand", "Cast", "Gather"})
_CHUNK = 4096  # samples per onnxruntime call when the batch dimension is dynamic


@dataclass
class OnnxImport:
    model: FloatModel
    input_name: str
    batch_size: Optional[int]  # fixed batch dim of the graph input, or None if dynamic
    steps: Optional[int]  # fixed time dim, or None if dynamic
    max_abs_diff: float  # result of the self-check (nan until checked)


# ----------------------------------------------------------------------------------------------------------
# loading


def _onnx():
    try:
        import onnx
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise UserError(f"importing ONNX models needs the onnx package ({e}); pip install onnx onnxruntime")
    return onnx


def _load(path):
    """The checked ModelProto of ``path``."""
    onnx = _onnx()
    p = os.fspath(path)
    if not os.path.exists(p):
        raise UserError(f"cannot read {p}: file not found")
    if os.path.isdir(p):
        raise UserError(f"cannot read {p}: it is a directory, give the .onnx file")
    try:
        model = onnx.load(p)
    except Exception as e:
        raise UserError(f"cannot read {p}: not a valid ONNX model ({_one_line(e)})") from None
    if not model.HasField("graph") or not model.graph.node:
        raise UserError(f"cannot read {p}: not a valid ONNX model (no graph nodes)")
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise UserError(f"cannot read {p}: not a valid ONNX model ({_one_line(e)})") from None
    return model


def _one_line(e: BaseException, limit: int = 300) -> str:
    s = " ".join(str(e).split()) or type(e).__name__
    return s if len(s) <= limit else s[:limit - 3] + "..."


def _label(node) -> str:
    if node.name:
        return f"node '{node.name}' ({node.op_type})"
    out = next((o for o in node.output if o), "?")
    return f"node producing '{out}' ({node.op_type})"


class _Graph:
    """Indexes of one ONNX graph: constants, producers, data ancestry."""

    def __init__(self, model, path):
        onnx = _onnx()
        from onnx import numpy_helper

        self.path = os.fspath(path)
        self.model = model
        g = model.graph
        self.graph = g
        self.nodes = list(g.node)
        self.consts: dict[str, np.ndarray] = {}
        self.const_origin: dict[str, str] = {}
        for init in g.initializer:
            try:
                self.consts[init.name] = numpy_helper.to_array(init)
            except Exception as e:
                raise UserError(f"cannot read {self.path}: initializer '{init.name}' is unreadable "
                                f"({_one_line(e)})") from None
            self.const_origin[init.name] = f"initializer '{init.name}'"
        for node in self.nodes:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                value = _constant_value(node, onnx, numpy_helper)
                if value is not None and node.output:
                    self.consts[node.output[0]] = value
                    self.const_origin[node.output[0]] = f"Constant node '{node.name or node.output[0]}'"
        init_names = {i.name for i in g.initializer}
        self.inputs = [i for i in g.input if i.name not in init_names]
        self.producer = {o: n for n in self.nodes for o in n.output if o}
        # data ancestry: for each tensor, the ids of the nodes it is computed from ("<input>" for the graph
        # input); edges through Shape carry no data and are cut.
        self.anc: dict[str, frozenset] = {i.name: frozenset({"<input>"}) for i in self.inputs}
        for name in self.consts:
            self.anc.setdefault(name, frozenset())
        for k, node in enumerate(self.nodes):
            if node.op_type == "Shape":
                a = frozenset()
            else:
                a = frozenset().union(*(self.anc.get(i, frozenset()) for i in node.input if i))
            a = a | {k}
            for o in node.output:
                if o:
                    self.anc[o] = a

    def const(self, name: str) -> Optional[np.ndarray]:
        seen = 0
        while name not in self.consts and name in self.producer and seen < 16:
            p = self.producer[name]
            if p.op_type != "Identity":
                return None
            name, seen = p.input[0], seen + 1
        return self.consts.get(name)

    def derives(self, tensor: str, node_ids) -> bool:
        return bool(self.anc.get(tensor, frozenset()) & set(node_ids))

    def is_zero(self, name: str, depth: int = 0) -> bool:
        """Provably all zero: a zero constant moved around by data-movement ops or a zero ConstantOfShape."""
        c = self.const(name)
        if c is not None:
            return bool(np.issubdtype(c.dtype, np.number) and np.all(c == 0))
        p = self.producer.get(name)
        if p is None or depth > 64:
            return False
        if p.op_type == "ConstantOfShape":
            from onnx import helper, numpy_helper
            for a in p.attribute:
                if a.name == "value":
                    v = numpy_helper.to_array(helper.get_attribute_value(a))
                    return bool(np.all(v == 0))
            return True  # default value is a float 0
        if p.op_type == "Concat":
            return all(self.is_zero(i, depth + 1) for i in p.input if i)
        if p.op_type in _ZERO_PRESERVING:
            return self.is_zero(p.input[0], depth + 1)
        return False


def _constant_value(node, onnx, numpy_helper) -> Optional[np.ndarray]:
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if a.name == "value":
            return numpy_helper.to_array(v)
        if a.name == "value_float":
            return np.array(v, dtype=np.float32)
        if a.name == "value_floats":
            return np.array(v, dtype=np.float32)
        if a.name == "value_int":
            return np.array(v, dtype=np.int64)
        if a.name == "value_ints":
            return np.array(v, dtype=np.int64)
    return None


def _attrs(node) -> dict:
    from onnx import helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif isinstance(v, list):
            v = [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in v]
        out[a.name] = v
    return out


# ----------------------------------------------------------------------------------------------------------
# graph input


@dataclass
class _InputInfo:
    name: str
    np_dtype: np.dtype
    dims: list  # int, str (symbolic) or None per axis; None for the whole list if the rank is unknown
    batch_axis: int
    time_axis: int

    def fixed(self, axis: int) -> Optional[int]:
        if self.dims is None or axis >= len(self.dims):
            return None
        d = self.dims[axis]
        return d if isinstance(d, int) and d > 0 else None

    def shape_text(self) -> str:
        if self.dims is None:
            return "[unknown]"
        return "[" + ", ".join(str(d) if d is not None else "?" for d in self.dims) + "]"


def _single_input(g: _Graph):
    if len(g.inputs) != 1:
        names = ", ".join(f"'{i.name}'" for i in g.inputs) or "none"
        raise UserError(f"{g.path}: the graph has {len(g.inputs)} inputs ({names}); kd2mcu imports a classifier "
                        "with one input (features [N, T, F] or token ids [N, T]); export h0/c0 and lengths as "
                        "constants, not inputs")
    return g.inputs[0]


def _input_info(g: _Graph) -> _InputInfo:
    from onnx import helper

    inp = _single_input(g)
    tt = inp.type.tensor_type if inp.type.HasField("tensor_type") else None
    if tt is None:
        raise UserError(f"{g.path}: graph input '{inp.name}' is not a tensor")
    try:
        np_dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
    except Exception:
        raise UserError(f"{g.path}: graph input '{inp.name}' has an unsupported element type "
                        f"{tt.elem_type}") from None
    dims = None
    if tt.HasField("shape"):
        dims = []
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param"):
                dims.append(d.dim_param)
            else:
                dims.append(None)
    batch_axis, time_axis = _batch_time_axes(g, inp.name)
    return _InputInfo(inp.name, np_dtype, dims, batch_axis, time_axis)


def _batch_time_axes(g: _Graph, input_name: str) -> tuple[int, int]:
    """Which graph-input axes are batch and time, followed back from the first LSTM's X (default 0, 1).

    Only a plain chain of Transpose / Identity / Cast / an axis-0 Gather embedding is followed; anything else
    keeps the default [batch, time, ...] reading (the self-check tells if that was wrong).
    """
    first = next((n for n in g.nodes if n.op_type == "LSTM" and n.domain in ("", "ai.onnx")), None)
    if first is None or not first.input:
        return 0, 1
    layout = int(_attrs(first).get("layout", 0))
    time_pos, batch_pos = (0, 1) if layout == 0 else (1, 0)
    tensor = first.input[0]
    for _ in range(64):
        if tensor == input_name:
            return (batch_pos, time_pos) if {batch_pos, time_pos} == {0, 1} else (0, 1)
        p = g.producer.get(tensor)
        if p is None:
            break
        if p.op_type == "Transpose":
            perm = _attrs(p).get("perm")
            if perm is None or max(batch_pos, time_pos) >= len(perm):
                break
            time_pos, batch_pos, tensor = perm[time_pos], perm[batch_pos], p.input[0]
        elif p.op_type in ("Identity", "Cast"):
            tensor = p.input[0]
        elif p.op_type == "Gather" and int(_attrs(p).get("axis", 0)) == 0 and g.const(p.input[0]) is not None:
            tensor = p.input[1]
        else:
            break
    return 0, 1


# ----------------------------------------------------------------------------------------------------------
# reading the graph


def read_onnx(path) -> OnnxImport:
    """The FloatModel an ONNX graph describes (structure only; ``check_against_onnxruntime`` verifies it)."""
    g = _Graph(_load(path), path)
    _check_ops(g)
    _check_outputs(g)
    _check_finite(g)
    info = _input_info(g)

    lstm_ids = [k for k, n in enumerate(g.nodes) if n.op_type == "LSTM"]
    if not lstm_ids:
        raise UserError(f"{g.path}: the graph has no LSTM node; {SUPPORTED}")
    embedding, emb_id = _find_embedding(g, lstm_ids)
    groups = _group_layers(g, lstm_ids)
    layers = [_read_layer(g, group) for group in groups]
    # stacking: the first layer reads the input (through the embedding), each next layer the previous one
    first_x = g.nodes[groups[0][0]].input[0]
    if not g.derives(first_x, ["<input>"]):
        raise UserError(f"{g.path}: {_label(g.nodes[groups[0][0]])} does not read the graph input "
                        f"'{info.name}'; kd2mcu expects input -> [embedding] -> LSTM layers -> head")
    if embedding is not None and not g.derives(first_x, [emb_id]):
        raise UserError(f"{g.path}: {_label(g.nodes[emb_id])} looks like an embedding but does not feed "
                        f"{_label(g.nodes[groups[0][0]])}")
    for gi in range(1, len(groups)):
        for k in groups[gi]:
            if not g.derives(g.nodes[k].input[0], groups[gi - 1]):
                prev = ", ".join(_label(g.nodes[j]) for j in groups[gi - 1])
                raise UserError(f"{g.path}: {_label(g.nodes[k])} does not read the output of {prev}; kd2mcu "
                                "imports a single stack of LSTM layers")
    in_size = embedding.shape[1] if embedding is not None else None
    for gi, (layer, group) in enumerate(zip(layers, groups)):
        want = layers[gi - 1].output_size if gi else in_size
        if want is not None and layer.input_size != want:
            src = (f"the previous LSTM layer gives {want} ({len(layers[gi - 1].directions)} direction(s) x "
                   f"{layers[gi - 1].hidden_size})" if gi else f"the embedding gives {want}")
            raise UserError(f"{g.path}: {_label(g.nodes[group[0]])} takes {layer.input_size} inputs per step but "
                            f"{src}; kd2mcu feeds each layer the full [forward, backward] output of the one "
                            "before")

    head_w, head_b = _read_head(g, groups[-1], lstm_ids, emb_id)
    last = layers[-1]
    if head_w.shape[1] != last.output_size:
        raise UserError(f"{g.path}: the head reads {head_w.shape[1]} features but the last LSTM layer has "
                        f"{len(last.directions)} direction(s) x {last.hidden_size} = {last.output_size}; kd2mcu's "
                        "head reads the final hidden state of every direction of the last layer "
                        "([forward h_n, backward h_n])")
    model = FloatModel(layers=layers, head_weight=head_w, head_bias=head_b, embedding=embedding)
    _check_input_kind(g, info, model)
    return OnnxImport(model=model, input_name=info.name, batch_size=info.fixed(info.batch_axis),
                      steps=info.fixed(info.time_axis), max_abs_diff=math.nan)


def _check_ops(g: _Graph) -> None:
    for node in g.nodes:
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            raise UserError(f"{g.path}: {_label(node)}: op {node.domain}.{op} (custom domain) is not supported; "
                            f"{SUPPORTED}")
        if op in ("LSTM", "Gemm", "MatMul", "Add") or op in GLUE_OPS:
            continue
        raise UserError(f"{g.path}: {_label(node)}: op {op} is not supported; {SUPPORTED}")


def _check_outputs(g: _Graph) -> None:
    outs = list(g.graph.output)
    if len(outs) != 1:
        names = ", ".join(f"'{o.name}'" for o in outs) or "none"
        raise UserError(f"{g.path}: the graph has {len(outs)} outputs ({names}); kd2mcu imports a classifier "
                        "with exactly one output, the logits [N, C]")


def _check_finite(g: _Graph) -> None:
    for name, v in g.consts.items():
        if np.issubdtype(v.dtype, np.floating) or np.issubdtype(v.dtype, np.complexfloating):
            if not np.all(np.isfinite(v)):
                bad = int(np.size(v) - np.count_nonzero(np.isfinite(v)))
                raise UserError(f"{g.path}: {g.const_origin[name]} holds {bad} NaN/Inf value(s); the model "
                                "weights must be finite (retrain or fix the export)")


def _find_embedding(g: _Graph, lstm_ids):
    found = []
    for k, node in enumerate(g.nodes):
        if node.op_type != "Gather" or len(node.input) < 2:
            continue
        data = g.const(node.input[0])
        if data is None or data.ndim != 2 or not np.issubdtype(data.dtype, np.floating):
            continue
        if not g.derives(node.input[1], ["<input>"]) or g.derives(node.input[1], lstm_ids):
            continue
        found.append(k)
    if not found:
        return None, None
    if len(found) > 1:
        raise UserError(f"{g.path}: {_label(g.nodes[found[1]])} is a second embedding lookup (after "
                        f"{_label(g.nodes[found[0]])}); kd2mcu imports at most one embedding")
    node = g.nodes[found[0]]
    if int(_attrs(node).get("axis", 0)) != 0:
        raise UserError(f"{g.path}: {_label(node)}: an embedding Gather must use axis=0 (rows are tokens)")
    return g.const(node.input[0]).astype(np.float64), found[0]


def _group_layers(g: _Graph, lstm_ids) -> list[list[int]]:
    """LSTM nodes grouped into layers: a node joins the current layer if it does not read it."""
    groups: list[list[int]] = []
    for k in lstm_ids:
        x = g.nodes[k].input[0] if g.nodes[k].input else ""
        if groups and not g.derives(x, groups[-1]):
            groups[-1].append(k)
        else:
            groups.append([k])
    for group in groups:
        dirs = [_direction(g, g.nodes[k]) for k in group]
        if len(group) > 1 and sorted(dirs) != ["forward", "reverse"]:
            names = ", ".join(f"{_label(g.nodes[k])} direction={d}" for k, d in zip(group, dirs))
            raise UserError(f"{g.path}: LSTM nodes {names} run side by side on the same input; kd2mcu can only "
                            "combine one forward and one reverse LSTM into a bidirectional layer")
    return groups


def _direction(g: _Graph, node) -> str:
    d = _attrs(node).get("direction", "forward")
    if d not in ("forward", "reverse", "bidirectional"):
        raise UserError(f"{g.path}: {_label(node)}: attribute direction='{d}' is not valid "
                        "(forward, reverse or bidirectional)")
    return d


def _read_layer(g: _Graph, group: list[int]) -> FloatLayer:
    by_dir: dict[str, list[FloatDirection]] = {}
    for k in group:
        node = g.nodes[k]
        by_dir[_direction(g, node)] = _read_lstm(g, node)
    if "bidirectional" in by_dir:
        dirs = by_dir["bidirectional"]
    elif "reverse" in by_dir and "forward" not in by_dir:
        return FloatLayer(directions=by_dir["reverse"], reverse=True)
    elif "reverse" in by_dir:
        dirs = by_dir["forward"] + by_dir["reverse"]
        (f,), (r,) = by_dir["forward"], by_dir["reverse"]
        if f.wx.shape != r.wx.shape:
            a, b = (g.nodes[k] for k in group)
            raise UserError(f"{g.path}: {_label(a)} and {_label(b)} form a bidirectional layer but differ in "
                            f"hidden/input size ({f.wx.shape[1]}x{f.wx.shape[2]} vs "
                            f"{r.wx.shape[1]}x{r.wx.shape[2]})")
    else:
        dirs = by_dir["forward"]
    return FloatLayer(directions=dirs)


def _read_lstm(g: _Graph, node) -> list[FloatDirection]:
    """The directions of one LSTM node, in FloatModel order (forward, then backward)."""
    lab = _label(node)
    a = _attrs(node)
    direction = _direction(g, node)
    nd = 2 if direction == "bidirectional" else 1
    # attributes kd2mcu's kernel does not implement
    acts = a.get("activations")
    if acts is not None and len(acts) > 0:
        low = [s.lower() for s in acts]
        if len(low) not in (3, 3 * nd) or any(tuple(low[i:i + 3]) != _DEFAULT_ACTIVATIONS
                                               for i in range(0, len(low), 3)):
            raise UserError(f"{g.path}: {lab}: attribute activations={list(acts)} is not supported; kd2mcu's "
                            "kernel uses the default Sigmoid, Tanh, Tanh per direction")
    for name in ("activation_alpha", "activation_beta"):
        if a.get(name):
            raise UserError(f"{g.path}: {lab}: attribute {name}={list(a[name])} is not supported; kd2mcu's "
                            "kernel uses the default Sigmoid, Tanh, Tanh without parameters")
    if "clip" in a:
        raise UserError(f"{g.path}: {lab}: attribute clip={a['clip']} is not supported (the kernel does not "
                        "clip the cell input); export without clip")
    if int(a.get("input_forget", 0)) != 0:
        raise UserError(f"{g.path}: {lab}: attribute input_forget={a['input_forget']} (coupled input and forget "
                        "gates) is not supported; export with input_forget=0")
    if int(a.get("layout", 0)) not in (0, 1):
        raise UserError(f"{g.path}: {lab}: attribute layout={a['layout']} is not valid (0 or 1)")

    ins = list(node.input) + [""] * (8 - len(node.input))
    x, w_name, r_name, b_name, seq_lens, init_h, init_c, p_name = ins[:8]
    if not x:
        raise UserError(f"{g.path}: {lab} has no input X")
    if seq_lens:
        raise UserError(f"{g.path}: {lab}: input sequence_lens ('{seq_lens}') is not supported; give lengths "
                        "in the data file instead and export the LSTM without sequence_lens")
    if p_name:
        raise UserError(f"{g.path}: {lab}: input P (peephole weights '{p_name}') is not supported; kd2mcu's "
                        "kernel has no peephole connections")
    for what, name in (("initial_h", init_h), ("initial_c", init_c)):
        if name and not g.is_zero(name):
            raise UserError(f"{g.path}: {lab}: input {what} ('{name}') is not all zero; kd2mcu starts every "
                            "sequence from a zero state (export without h0/c0 or with zeros)")

    def weight(role, name):
        v = g.const(name) if name else None
        if v is None:
            raise UserError(f"{g.path}: {lab}: input {role} ('{name}') must be an initializer or Constant node")
        if not np.issubdtype(v.dtype, np.floating):
            raise UserError(f"{g.path}: {lab}: input {role} ('{name}') has dtype {v.dtype}; kd2mcu imports "
                            "float models")
        return v.astype(np.float64)

    W, R = weight("W", w_name), weight("R", r_name)
    if R.ndim != 3 or R.shape[0] != nd or R.shape[1] != 4 * R.shape[2]:
        raise UserError(f"{g.path}: {lab}: R has shape {list(R.shape)}, expected [{nd}, 4*hidden, hidden]")
    H = R.shape[2]
    if "hidden_size" in a and int(a["hidden_size"]) != H:
        raise UserError(f"{g.path}: {lab}: attribute hidden_size={a['hidden_size']} disagrees with R of shape "
                        f"{list(R.shape)}")
    if W.ndim != 3 or W.shape[:2] != (nd, 4 * H):
        raise UserError(f"{g.path}: {lab}: W has shape {list(W.shape)}, expected [{nd}, {4 * H}, input_size]")
    if b_name:
        B = weight("B", b_name)
        if B.shape != (nd, 8 * H):
            raise UserError(f"{g.path}: {lab}: B has shape {list(B.shape)}, expected [{nd}, {8 * H}]")
    else:
        B = np.zeros((nd, 8 * H))
    I = W.shape[2]
    out = []
    for d in range(nd):
        wx = W[d].reshape(4, H, I)[_ONNX_TO_FIOG]
        wh = R[d].reshape(4, H, H)[_ONNX_TO_FIOG]
        bias = (B[d, :4 * H] + B[d, 4 * H:]).reshape(4, H)[_ONNX_TO_FIOG]
        out.append(FloatDirection(wx=np.ascontiguousarray(wx), wh=np.ascontiguousarray(wh),
                                  bias=np.ascontiguousarray(bias)))
    return out


def _bias_vector(g: _Graph, lab: str, v: np.ndarray, C: int) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    if v.size == C and (v.ndim <= 1 or max(v.shape[:-1], default=1) == 1):
        return v.reshape(C).copy()
    if v.size == 1:
        return np.full(C, float(v.reshape(())))
    raise UserError(f"{g.path}: {lab}: the head bias has shape {list(v.shape)}; expected [{C}] (one per class)")


def _read_head(g: _Graph, last_group, lstm_ids, emb_id):
    heads = [k for k, n in enumerate(g.nodes) if n.op_type in ("Gemm", "MatMul")]
    if not heads:
        raise UserError(f"{g.path}: the graph has no Gemm or MatMul head after the LSTM; {SUPPORTED}")
    if len(heads) > 1:
        raise UserError(f"{g.path}: {_label(g.nodes[heads[1]])} is a second linear layer (after "
                        f"{_label(g.nodes[heads[0]])}); kd2mcu imports exactly one linear head on the LSTM "
                        "state")
    k = heads[0]
    node = g.nodes[k]
    lab = _label(node)
    a = _attrs(node)
    adds = [j for j, n in enumerate(g.nodes) if n.op_type == "Add"]
    head_out_id = k
    if node.op_type == "Gemm":
        for bad in adds:
            raise UserError(f"{g.path}: {_label(g.nodes[bad])}: op Add is only supported as the bias of a MatMul "
                            f"head; {SUPPORTED}")
        if int(a.get("transA", 0)) != 0:
            raise UserError(f"{g.path}: {lab}: attribute transA={a['transA']} is not supported (the head must "
                            "be state @ W^T + b)")
        if len(node.input) < 2:
            raise UserError(f"{g.path}: {lab} has no weight input")
        data_in = node.input[0]
        Bm = g.const(node.input[1])
        if Bm is None:
            raise UserError(f"{g.path}: {lab}: input B ('{node.input[1]}') must be an initializer or Constant")
        if Bm.ndim != 2:
            raise UserError(f"{g.path}: {lab}: weight has shape {list(Bm.shape)}, expected a matrix")
        W = Bm.astype(np.float64) if int(a.get("transB", 0)) else Bm.astype(np.float64).T
        W = float(a.get("alpha", 1.0)) * W
        C = W.shape[0]
        if len(node.input) > 2 and node.input[2]:
            Cv = g.const(node.input[2])
            if Cv is None:
                raise UserError(f"{g.path}: {lab}: input C ('{node.input[2]}') must be an initializer or "
                                "Constant")
            b = float(a.get("beta", 1.0)) * _bias_vector(g, lab, Cv, C)
        else:
            b = np.zeros(C)
    else:  # MatMul (+ Add)
        data_in, w_name = node.input[0], node.input[1]
        Wm = g.const(w_name)
        if Wm is None or g.const(data_in) is not None:
            raise UserError(f"{g.path}: {lab}: the head must be state @ W with W an initializer or Constant "
                            "as the second input")
        if Wm.ndim != 2:
            raise UserError(f"{g.path}: {lab}: weight has shape {list(Wm.shape)}, expected a [D, C] matrix")
        W = Wm.astype(np.float64).T
        C = W.shape[0]
        b = np.zeros(C)
        consumers = [j for j in adds if node.output[0] in g.nodes[j].input]
        for bad in adds:
            if bad not in consumers[:1]:
                raise UserError(f"{g.path}: {_label(g.nodes[bad])}: op Add is only supported as the bias of a "
                                f"MatMul head; {SUPPORTED}")
        if consumers:
            add = g.nodes[consumers[0]]
            other = [i for i in add.input if i != node.output[0]]
            bv = g.const(other[0]) if len(other) == 1 else None
            if bv is None:
                raise UserError(f"{g.path}: {_label(add)}: the head bias must be an initializer or Constant "
                                f"added to the output of {lab}")
            b = _bias_vector(g, _label(add), bv, C)
            head_out_id = consumers[0]
    if not g.derives(data_in, last_group):
        raise UserError(f"{g.path}: {lab} does not read the last LSTM layer "
                        f"({', '.join(_label(g.nodes[j]) for j in last_group)}); kd2mcu's head sits on the "
                        "final LSTM state")
    for j in lstm_ids + ([emb_id] if emb_id is not None else []):
        if g.derives(g.nodes[j].input[0], [k]) or (g.nodes[j].op_type == "Gather"
                                                   and g.derives(g.nodes[j].input[1], [k])):
            raise UserError(f"{g.path}: {_label(g.nodes[j])} reads the output of the head {lab}; {SUPPORTED}")
    out_name = g.graph.output[0].name
    if not g.derives(out_name, [head_out_id]):
        raise UserError(f"{g.path}: the graph output '{out_name}' is not computed by the head {lab}")
    return W, b


def _check_input_kind(g: _Graph, info: _InputInfo, model: FloatModel) -> None:
    is_int = np.issubdtype(info.np_dtype, np.integer)
    rank = len(info.dims) if info.dims is not None else None
    if model.is_token_model:
        if rank is not None and rank != 2:
            raise UserError(f"{g.path}: graph input '{info.name}' has shape {info.shape_text()}; an embedding "
                            "model must take token ids [batch, time]")
    else:
        if is_int:
            raise UserError(f"{g.path}: graph input '{info.name}' holds integers ({info.np_dtype}) but the graph "
                            "has no embedding lookup (Gather on a [vocab, dim] initializer); kd2mcu reads float "
                            "features [N, T, F] or token ids into an embedding")
        if rank is not None and rank != 3:
            raise UserError(f"{g.path}: graph input '{info.name}' has shape {info.shape_text()}; kd2mcu expects "
                            "features [batch, time, features]")
        F = info.fixed(2) if rank == 3 else None
        if F is not None and F != model.layers[0].input_size:
            raise UserError(f"{g.path}: graph input '{info.name}' has {F} features but the first LSTM takes "
                            f"{model.layers[0].input_size}")


# ----------------------------------------------------------------------------------------------------------
# running onnxruntime and checking


def _prepare(info: _InputInfo, x, what: str, model: Optional[FloatModel] = None) -> np.ndarray:
    """``x`` as [N, T, F] / [N, T] in the graph input's dtype, checked against the graph's fixed dims."""
    try:
        x = np.asarray(x)
    except Exception as e:
        raise UserError(f"{what}: cannot read the data as an array ({_one_line(e)})") from None
    tokens = np.issubdtype(info.np_dtype, np.integer) or (model is not None and model.is_token_model)
    rank = len(info.dims) if info.dims is not None else (2 if tokens else 3)
    want = "token ids [N, T]" if rank == 2 else "features [N, T, F]"
    if x.ndim != rank:
        raise UserError(f"{what}: the data has shape {list(x.shape)} but graph input '{info.name}' has shape "
                        f"{info.shape_text()}; give {want}")
    if x.shape[0] == 0:
        raise UserError(f"{what}: the data holds no samples (shape {list(x.shape)})")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise UserError(f"{what}: the data has dtype {x.dtype}; give numbers")
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        raise UserError(f"{what}: the data contains NaN or Inf values")
    if tokens and np.issubdtype(x.dtype, np.floating) and np.any(x != np.rint(x)):
        raise UserError(f"{what}: the model reads token ids but the data holds non-integer values")
    # fixed time / feature dims of the graph against the data (data is always [N, T, ...])
    names = {info.time_axis: "time steps"}
    if rank == 3:
        names[2] = "features"
    data_axis = {info.time_axis: 1, 2: 2}
    for axis, name in names.items():
        fixed = info.fixed(axis)
        got = x.shape[data_axis[axis]]
        if fixed is not None and fixed != got:
            raise UserError(f"{what}: the data has shape {list(x.shape)} but graph input '{info.name}' has fixed "
                            f"shape {info.shape_text()} ({name}: data {got}, graph {fixed}); give data with "
                            + (f"{fixed} time steps (pad or cut) or re-export with a dynamic time axis"
                               if name == "time steps" else f"{fixed} features per step"))
    if model is not None:
        if model.is_token_model:
            V = model.embedding.shape[0]
            if x.min() < 0 or x.max() >= V:
                raise UserError(f"{what}: token ids must lie in 0..{V - 1} (the embedding has {V} rows); the data "
                                f"holds {int(x.min())}..{int(x.max())}")
        elif x.shape[2] != model.layers[0].input_size:
            raise UserError(f"{what}: the data has shape {list(x.shape)} ({x.shape[2]} features) but the model "
                            f"takes {model.layers[0].input_size} features per step")
    return x.astype(info.np_dtype, copy=False)


def _for_onnxruntime(model):
    """``model`` with every LSTM in a form onnxruntime's CPU kernel runs, meaning the same per the ONNX spec.

    onnxruntime refuses ``layout=1`` LSTMs and a missing ``hidden_size``: a layout=1 LSTM becomes Transposes
    around a layout=0 one (X, initial_h/c to time-major; Y, Y_h, Y_c back), and hidden_size is filled in from
    R. Models that need neither are returned unchanged.
    """
    from onnx import helper

    consts = {i.name: i for i in model.graph.initializer}
    if not any(n.op_type == "LSTM" and (_attrs(n).get("layout", 0) == 1 or "hidden_size" not in _attrs(n))
               for n in model.graph.node):
        return model
    out = type(model)()
    out.CopyFrom(model)
    const_nodes = {n.output[0]: n for n in out.graph.node if n.op_type == "Constant" and n.output}
    nodes = []
    for k, node in enumerate(out.graph.node):
        if node.op_type != "LSTM":
            nodes.append(node)
            continue
        a = _attrs(node)
        if "hidden_size" not in a and len(node.input) > 2:
            r = consts.get(node.input[2])
            dims = list(r.dims) if r is not None else None
            if dims is None and node.input[2] in const_nodes:
                from onnx import numpy_helper
                dims = list(_constant_value(const_nodes[node.input[2]], _onnx(), numpy_helper).shape)
            if dims and len(dims) == 3:
                node.attribute.append(helper.make_attribute("hidden_size", int(dims[2])))
        if int(a.get("layout", 0)) != 1:
            nodes.append(node)
            continue
        tag = f"__kd2mcu_layout{k}"
        for idx in (0, 5, 6):  # X, initial_h, initial_c: batch-major -> time-major
            if idx < len(node.input) and node.input[idx]:
                t = f"{tag}_in{idx}"
                nodes.append(helper.make_node("Transpose", [node.input[idx]], [t], name=t, perm=[1, 0, 2]))
                node.input[idx] = t
        after = []
        for idx, perm in ((0, [2, 0, 1, 3]), (1, [1, 0, 2]), (2, [1, 0, 2])):  # Y, Y_h, Y_c back
            if idx < len(node.output) and node.output[idx]:
                t = f"{tag}_out{idx}"
                after.append(helper.make_node("Transpose", [t], [node.output[idx]], name=t, perm=perm))
                node.output[idx] = t
        for attr in node.attribute:
            if attr.name == "layout":
                attr.i = 0
        nodes.append(node)
        nodes.extend(after)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def _session(g: _Graph):
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise UserError(f"checking the ONNX import needs onnxruntime ({e}); pip install onnxruntime")
    ort.set_default_logger_severity(3)  # no warnings from the process-wide logger either
    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        data = _for_onnxruntime(g.model).SerializeToString()
        return ort.InferenceSession(data, sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise UserError(f"cannot read {g.path}: onnxruntime cannot load it ({_one_line(e)})") from None


def _run(g: _Graph, info: _InputInfo, x: np.ndarray) -> np.ndarray:
    path = g.path
    sess = _session(g)
    N = x.shape[0]
    B = info.fixed(info.batch_axis)
    step = B or _CHUNK
    time_major = info.batch_axis == 1
    outs = []
    for s in range(0, N, step):
        chunk = x[s:s + step]
        n = chunk.shape[0]
        if B is not None and n < B:
            pad = np.zeros((B - n,) + chunk.shape[1:], dtype=chunk.dtype)
            chunk = np.concatenate([chunk, pad], axis=0)
        feed = np.swapaxes(chunk, 0, 1) if time_major else chunk
        try:
            (y,) = sess.run(None, {info.name: np.ascontiguousarray(feed)})
        except Exception as e:
            raise UserError(f"{os.fspath(path)}: onnxruntime failed on the data ({_one_line(e)})") from None
        y = np.asarray(y)
        rows = chunk.shape[0]
        if y.ndim == 0 or (y.ndim == 1 and rows != 1) or (y.ndim >= 2 and y.shape[0] != rows):
            raise UserError(f"{os.fspath(path)}: the graph output has shape {list(y.shape)} for a batch of "
                            f"{rows}; kd2mcu expects logits [batch, classes]")
        outs.append(y.reshape(rows, -1)[:n])
    return np.concatenate(outs, axis=0)


def run_onnxruntime(path, x) -> np.ndarray:
    """onnxruntime's float logits [N, C] for ``x`` ([N, T, F] features or [N, T] token ids).

    A fixed batch dimension is handled by running chunks of that size (the last one zero-padded, the padding
    dropped); a graph whose input is time-major gets the data transposed.
    """
    g = _Graph(_load(path), path)
    info = _input_info(g)
    return _run(g, info, _prepare(info, x, os.fspath(path)))


def check_against_onnxruntime(imp: OnnxImport, path, x, tol: float = 1e-4) -> float:
    """Max abs difference between onnxruntime's logits and ``imp.model.forward`` on ``x``.

    Raises UserError when it exceeds ``tol * (1 + max |logit|)``. Also stores it in ``imp.max_abs_diff``.
    """
    g = _Graph(_load(path), path)
    info = _input_info(g)
    if info.name != imp.input_name:
        raise UserError(f"{os.fspath(path)}: graph input '{info.name}' is not the imported model's input "
                        f"'{imp.input_name}'; check against the file that was imported")
    xs = _prepare(info, x, os.fspath(path), imp.model)
    ref = _run(g, info, xs).astype(np.float64)
    ours = imp.model.forward(xs)
    if ref.shape != ours.shape:
        raise UserError(f"{os.fspath(path)}: onnxruntime gives logits of shape {list(ref.shape)} but the imported "
                        f"model gives {list(ours.shape)}: the graph computes something kd2mcu does not model")
    if not np.all(np.isfinite(ref)):
        raise UserError(f"{os.fspath(path)}: onnxruntime gives NaN/Inf logits on the calibration data")
    diff = float(np.abs(ref - ours).max()) if ref.size else 0.0
    if not np.isfinite(diff):
        diff = math.inf
    imp.max_abs_diff = diff
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    if not diff <= tol * (1.0 + scale):
        raise UserError(f"{os.fspath(path)}: the import does not reproduce onnxruntime (max abs diff {diff:.3g} "
                        f"on the calibration data, logits up to {scale:.3g}, tolerance {tol:g}): the graph "
                        "computes something kd2mcu does not model (for example the head reading output[:, -1] "
                        "of a bidirectional LSTM instead of h_n)")
    return diff


def import_onnx(path, calib_x, tol: float = 1e-4) -> OnnxImport:
    """``read_onnx`` + ``check_against_onnxruntime`` on the calibration data."""
    imp = read_onnx(path)
    imp.max_abs_diff = check_against_onnxruntime(imp, path, calib_x, tol=tol)
    return imp
