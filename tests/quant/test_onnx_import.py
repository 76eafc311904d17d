"""ONNX import: torch-exported and hand-built LSTM classifiers import and reproduce onnxruntime; everything
kd2mcu does not model is refused with a UserError naming the node / attribute."""
from __future__ import annotations

import contextlib
import io
import math
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from kd2mcu.errors import UserError  # noqa: E402
from kd2mcu.quant.onnx_import import OnnxImport, check_against_onnxruntime, import_onnx, read_onnx, run_onnxruntime  # noqa: E402

# ----------------------------------------------------------------------------------------------------------
# shared builders (imported by other test files)


def make_torch_classifier(input_size, hidden, layers, bidirectional, classes, embedding_vocab=None, seed=0,
                          batch_first=True, head="h_n"):
    """An eval-mode torch LSTM classifier: [Embedding(embedding_vocab, input_size)] -> LSTM -> Linear.

    The head reads ``cat(h_n[-2], h_n[-1])`` (bidirectional) or ``h_n[-1]``; ``head="last_output"`` makes it
    read ``output[:, -1]`` instead (which kd2mcu does not model for a bidirectional LSTM).
    """
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.batch_first = batch_first
            self.embedding = nn.Embedding(embedding_vocab, input_size) if embedding_vocab else None
            self.lstm = nn.LSTM(input_size, hidden, layers, batch_first=batch_first, bidirectional=bidirectional)
            self.fc = nn.Linear(hidden * (2 if bidirectional else 1), classes)

        def forward(self, x):
            if self.embedding is not None:
                x = self.embedding(x)
            out, (h_n, _) = self.lstm(x)
            if head == "last_output":
                z = out[:, -1] if batch_first else out[-1]
            elif bidirectional:
                z = torch.cat([h_n[-2], h_n[-1]], 1)
            else:
                z = h_n[-1]
            return self.fc(z)

    torch.manual_seed(seed)
    return Classifier().eval()


def export_onnx(module, example_x, path, dynamo=False):
    """Export ``module`` with input 'x' and output 'logits'.

    TorchScript (dynamo=False) gets dynamic batch and time axes; dynamo=True keeps the example's fixed shapes.
    Returns ``path``.
    """
    torch = pytest.importorskip("torch")
    x = torch.as_tensor(example_x)
    batch_first = getattr(module, "batch_first", True)
    axes = {0: "batch", 1: "time"} if batch_first else {0: "time", 1: "batch"}
    kwargs = {} if dynamo else {"dynamic_axes": {"x": axes, "logits": {0: "batch"}}}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(path), dynamo=dynamo, input_names=["x"], output_names=["logits"],
                          **kwargs)
    return path


def torch_logits(module, x):
    import torch

    with torch.no_grad():
        xt = torch.as_tensor(x)
        if not getattr(module, "batch_first", True):
            xt = xt.transpose(0, 1)
        return module(xt).numpy().astype(np.float64)


def random_data(n, t, f=None, vocab=None, seed=1):
    rng = np.random.default_rng(seed)
    if vocab:
        return rng.integers(0, vocab, size=(n, t)).astype(np.int64)
    return rng.normal(size=(n, t, f)).astype(np.float32)


# hand-built graphs ---------------------------------------------------------------------------------------


def _init(name, a):
    return numpy_helper.from_array(np.asarray(a), name)


def lstm_params(rng, prefix, nd, H, I, scale=0.6):
    return [_init(f"{prefix}_W", (rng.normal(size=(nd, 4 * H, I)) * scale).astype(np.float32)),
            _init(f"{prefix}_R", (rng.normal(size=(nd, 4 * H, H)) * scale).astype(np.float32)),
            _init(f"{prefix}_B", (rng.normal(size=(nd, 8 * H)) * scale).astype(np.float32))]


class Graph:
    """A mutable hand-built ONNX graph: nodes, initializers, one input, outputs."""

    def __init__(self, nodes, inits, inp, outputs):
        self.nodes, self.inits, self.inp, self.outputs = nodes, inits, inp, outputs

    def node(self, name):
        return next(n for n in self.nodes if n.name == name)

    def set_input(self, node_name, index, tensor):
        node = self.node(node_name)
        while len(node.input) <= index:
            node.input.append("")
        node.input[index] = tensor

    def save(self, path):
        graph = helper.make_graph(self.nodes, "g", [self.inp], self.outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.save(model, str(path))
        return path


def simple_graph(direction="forward", layout=0, F=3, H=4, C=3, batch="n", steps="t", seed=0, **lstm_attrs):
    """x [N, T, F] -> (Transpose) -> LSTM 'lstm' -> Y_h -> (Transpose) -> Flatten -> Gemm 'fc' -> logits."""
    rng = np.random.default_rng(seed)
    nd = 2 if direction == "bidirectional" else 1
    inits = lstm_params(rng, "l0", nd, H, F)
    inits += [_init("fc_W", rng.normal(size=(C, nd * H)).astype(np.float32)),
              _init("fc_b", rng.normal(size=C).astype(np.float32))]
    nodes = []
    x_in = "x"
    if layout == 0:
        nodes.append(helper.make_node("Transpose", ["x"], ["x_tm"], name="to_time_major", perm=[1, 0, 2]))
        x_in = "x_tm"
    nodes.append(helper.make_node("LSTM", [x_in, "l0_W", "l0_R", "l0_B"], ["y", "y_h"], name="lstm",
                                  hidden_size=H, direction=direction, layout=layout, **lstm_attrs))
    h = "y_h"
    if layout == 0:  # Y_h [nd, N, H] -> [N, nd, H]
        nodes.append(helper.make_node("Transpose", ["y_h"], ["h_bm"], name="h_batch_major", perm=[1, 0, 2]))
        h = "h_bm"
    nodes.append(helper.make_node("Flatten", [h], ["feat"], name="flatten", axis=1))
    nodes.append(helper.make_node("Gemm", ["feat", "fc_W", "fc_b"], ["logits"], name="fc", transB=1))
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, steps, F])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, C])
    return Graph(nodes, inits, inp, [out])


def assert_reproduces(path, x, tol=1e-5):
    imp = import_onnx(path, x, tol=tol)
    diff = np.abs(imp.model.forward(x) - run_onnxruntime(path, x)).max()
    assert diff < tol and imp.max_abs_diff < tol
    return imp


def refusal(path, x=None):
    """The UserError message importing ``path`` gives (calibration data made to fit when not given)."""
    with pytest.raises(UserError) as e:
        import_onnx(path, random_data(3, 5, 3) if x is None else x)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# ----------------------------------------------------------------------------------------------------------
# torch exports

TORCH_CASES = [
    # exporter, input_size, hidden, layers, bidirectional, classes, vocab
    ("torchscript", 3, 5, 1, False, 4, None),
    ("torchscript", 4, 6, 2, True, 3, None),
    ("torchscript", 5, 4, 3, True, 2, 13),
    ("torchscript", 3, 4, 2, False, 5, 9),
    ("dynamo", 3, 5, 1, False, 4, None),
    ("dynamo", 4, 3, 3, True, 3, None),
    ("dynamo", 4, 5, 2, True, 3, 11),
]


@pytest.mark.parametrize("case", TORCH_CASES, ids=lambda c: "-".join(map(str, c)))
def test_torch_export_imports_and_matches_onnxruntime_and_torch(case, tmp_path):
    exporter, I, H, L, bi, C, V = case
    dynamo = exporter == "dynamo"
    m = make_torch_classifier(I, H, L, bi, C, embedding_vocab=V, seed=3)
    path = export_onnx(m, random_data(2, 6, I, V, seed=0), tmp_path / "m.onnx", dynamo=dynamo)
    x = random_data(5, 6, I, V, seed=4)  # 5 samples: a fixed batch of 2 needs a padded last chunk
    imp = assert_reproduces(path, x)
    fm = imp.model
    assert [len(layer.directions) for layer in fm.layers] == [2 if bi else 1] * L
    assert [layer.hidden_size for layer in fm.layers] == [H] * L
    assert fm.layers[0].input_size == I and fm.num_classes == C
    assert fm.is_token_model == bool(V)
    assert imp.input_name == "x"
    assert (imp.batch_size, imp.steps) == ((2, 6) if dynamo else (None, None))
    # the imported model is the torch model
    assert np.abs(fm.forward(x) - torch_logits(m, x)).max() < 1e-5
    assert np.abs(run_onnxruntime(path, x) - torch_logits(m, x)).max() < 1e-5


def test_torchscript_dynamic_axes_take_other_lengths_and_batches(tmp_path):
    m = make_torch_classifier(3, 4, 2, True, 3, seed=5)
    path = export_onnx(m, random_data(2, 5, 3), tmp_path / "m.onnx")
    for n, t in ((1, 3), (7, 11)):
        assert_reproduces(path, random_data(n, t, 3, seed=n + t))


@pytest.mark.parametrize("dynamo", [False, True])
def test_time_major_torch_model(dynamo, tmp_path):
    """batch_first=False: the graph input is [T, N, F]; data is still [N, T, F] and gets transposed."""
    m = make_torch_classifier(3, 4, 2, True, 3, seed=6, batch_first=False)
    path = export_onnx(m, random_data(2, 4, 3).transpose(1, 0, 2).copy(), tmp_path / "m.onnx", dynamo=dynamo)
    x = random_data(5, 4, 3, seed=7)
    imp = assert_reproduces(path, x)
    assert np.abs(imp.model.forward(x) - torch_logits(m, x)).max() < 1e-5
    if dynamo:
        assert (imp.batch_size, imp.steps) == (2, 4)


def test_read_onnx_is_structure_only(tmp_path):
    m = make_torch_classifier(3, 4, 1, True, 2)
    path = export_onnx(m, random_data(2, 5, 3), tmp_path / "m.onnx")
    imp = read_onnx(path)
    assert isinstance(imp, OnnxImport) and math.isnan(imp.max_abs_diff)
    diff = check_against_onnxruntime(imp, path, random_data(3, 5, 3))
    assert diff < 1e-5 and imp.max_abs_diff == diff


def test_onnxruntime_is_quiet(tmp_path, capfd):
    m = make_torch_classifier(3, 4, 2, False, 2)
    path = export_onnx(m, random_data(2, 5, 3), tmp_path / "m.onnx")
    capfd.readouterr()
    import_onnx(path, random_data(3, 5, 3))
    out, err = capfd.readouterr()
    assert out == "" and err == ""


# ----------------------------------------------------------------------------------------------------------
# hand-built graphs


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
@pytest.mark.parametrize("layout", [0, 1])
def test_hand_built_single_lstm(direction, layout, tmp_path):
    path = simple_graph(direction, layout).save(tmp_path / "m.onnx")
    imp = assert_reproduces(path, random_data(4, 6, 3))
    assert len(imp.model.layers[0].directions) == (2 if direction == "bidirectional" else 1)


def test_hand_built_two_layers_squeeze_glue_and_gemm_attributes(tmp_path):
    """Forward LSTM -> Squeeze -> LSTM (default attributes, no B) -> Squeeze -> Gemm(transB=0, alpha, beta)."""
    rng = np.random.default_rng(2)
    F, H, C = 3, 5, 4
    inits = lstm_params(rng, "a", 1, H, F) + lstm_params(rng, "b", 1, H, H)[:2]
    inits += [_init("fc_W", rng.normal(size=(H, C)).astype(np.float32)),
              _init("fc_b", rng.normal(size=(1, C)).astype(np.float32)),
              _init("ax1", np.array([1], np.int64)), _init("ax0", np.array([0], np.int64))]
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], name="t", perm=[1, 0, 2]),
             helper.make_node("LSTM", ["xt", "a_W", "a_R", "a_B"], ["ya"], name="lstm_a", hidden_size=H),
             helper.make_node("Squeeze", ["ya", "ax1"], ["sa"], name="sq_a"),
             helper.make_node("LSTM", ["sa", "b_W", "b_R"], ["", "hb"], name="lstm_b"),
             helper.make_node("Squeeze", ["hb", "ax0"], ["feat"], name="sq_b"),
             helper.make_node("Gemm", ["feat", "fc_W", "fc_b"], ["logits"], name="fc", alpha=0.5, beta=2.0)]
    g = Graph(nodes, inits, helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "t", F]),
              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", C])])
    imp = assert_reproduces(g.save(tmp_path / "m.onnx"), random_data(4, 7, F))
    assert len(imp.model.layers) == 2


def test_hand_built_layout1_matmul_add_head_and_embedding(tmp_path):
    """int32 token ids -> Cast -> Gather embedding -> LSTM(layout=1, bidirectional) -> Y_h -> Reshape ->
    MatMul + Add."""
    rng = np.random.default_rng(3)
    V, E, H, C = 10, 4, 3, 2
    inits = [_init("emb", rng.normal(size=(V, E)).astype(np.float32))] + lstm_params(rng, "l", 2, H, E)
    inits += [_init("head_W", rng.normal(size=(2 * H, C)).astype(np.float32)),
              _init("head_b", rng.normal(size=C).astype(np.float32)),
              _init("shape", np.array([0, -1], np.int64))]
    nodes = [helper.make_node("Cast", ["ids"], ["ids64"], name="cast", to=TensorProto.INT64),
             helper.make_node("Gather", ["emb", "ids64"], ["e"], name="embed"),
             helper.make_node("LSTM", ["e", "l_W", "l_R", "l_B"], ["", "h"], name="lstm", hidden_size=H,
                              direction="bidirectional", layout=1),
             helper.make_node("Reshape", ["h", "shape"], ["feat"], name="reshape"),
             helper.make_node("MatMul", ["feat", "head_W"], ["mm"], name="head_mm"),
             helper.make_node("Add", ["mm", "head_b"], ["logits"], name="head_add")]
    g = Graph(nodes, inits, helper.make_tensor_value_info("ids", TensorProto.INT32, ["n", "t"]),
              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", C])])
    imp = assert_reproduces(g.save(tmp_path / "m.onnx"), random_data(5, 6, vocab=V))
    assert imp.model.is_token_model and imp.input_name == "ids"


def test_hand_built_forward_plus_reverse_pair_with_zero_initial_state_and_fixed_batch(tmp_path):
    """A reverse LSTM next to a forward one on the same input is one bidirectional layer, whichever node
    comes first; zero initial_h/initial_c initializers are accepted; a fixed batch of 2 is run in chunks."""
    rng = np.random.default_rng(4)
    F, H, C, N, T = 3, 4, 3, 2, 5
    inits = lstm_params(rng, "r", 1, H, F) + lstm_params(rng, "f", 1, H, F)
    inits += [_init("fc_W", rng.normal(size=(C, 2 * H)).astype(np.float32)),
              _init("fc_b", rng.normal(size=C).astype(np.float32)),
              _init("h0", np.zeros((1, N, H), np.float32))]
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], name="t", perm=[1, 0, 2]),
             helper.make_node("LSTM", ["xt", "r_W", "r_R", "r_B", "", "h0", "h0"], ["", "hr"], name="bwd",
                              hidden_size=H, direction="reverse"),
             helper.make_node("LSTM", ["xt", "f_W", "f_R", "f_B", "", "h0"], ["", "hf"], name="fwd",
                              hidden_size=H),
             helper.make_node("Concat", ["hf", "hr"], ["h"], name="cat", axis=0),
             helper.make_node("Transpose", ["h"], ["hb"], name="tb", perm=[1, 0, 2]),
             helper.make_node("Flatten", ["hb"], ["feat"], name="flat"),
             helper.make_node("Gemm", ["feat", "fc_W", "fc_b"], ["logits"], name="fc", transB=1)]
    g = Graph(nodes, inits, helper.make_tensor_value_info("x", TensorProto.FLOAT, [N, T, F]),
              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [N, C])])
    imp = assert_reproduces(g.save(tmp_path / "m.onnx"), random_data(5, T, F))
    assert (imp.batch_size, imp.steps) == (N, T)
    assert len(imp.model.layers) == 1 and len(imp.model.layers[0].directions) == 2


# ----------------------------------------------------------------------------------------------------------
# refusals


def test_refuses_gru(tmp_path):
    g = simple_graph()
    old = g.node("lstm")
    rng = np.random.default_rng(0)
    g.inits += [_init("g_W", rng.normal(size=(1, 12, 3)).astype(np.float32)),
                _init("g_R", rng.normal(size=(1, 12, 4)).astype(np.float32))]
    g.nodes[g.nodes.index(old)] = helper.make_node("GRU", ["x_tm", "g_W", "g_R"], ["y", "y_h"], name="gru_1",
                                                   hidden_size=4)
    msg = refusal(g.save(tmp_path / "m.onnx"))
    assert "node 'gru_1' (GRU)" in msg and "op GRU is not supported" in msg


@pytest.mark.parametrize("attr, value, expect", [
    ("clip", 3.0, "attribute clip=3.0"),
    ("activations", ["Sigmoid", "Tanh", "Relu"], "attribute activations="),
    ("activations", ["HardSigmoid", "Tanh", "Tanh"], "attribute activations="),
    ("input_forget", 1, "attribute input_forget=1"),
])
def test_refuses_lstm_attributes(attr, value, expect, tmp_path):
    msg = refusal(simple_graph(**{attr: value}).save(tmp_path / "m.onnx"))
    assert "node 'lstm' (LSTM)" in msg and expect in msg


def test_accepts_explicit_default_activations(tmp_path):
    g = simple_graph("bidirectional", activations=["Sigmoid", "Tanh", "Tanh"] * 2, input_forget=0)
    assert_reproduces(g.save(tmp_path / "m.onnx"), random_data(3, 5, 3))


def test_refuses_peepholes(tmp_path):
    g = simple_graph()
    g.inits.append(_init("peep", np.ones((1, 12), np.float32)))
    g.set_input("lstm", 7, "peep")
    msg = refusal(g.save(tmp_path / "m.onnx"))
    assert "node 'lstm' (LSTM)" in msg and "input P" in msg and "peephole" in msg


def test_refuses_sequence_lens(tmp_path):
    g = simple_graph(batch=3, steps=5)
    g.inits.append(_init("lens", np.array([5, 4, 3], np.int32)))
    g.set_input("lstm", 4, "lens")
    msg = refusal(g.save(tmp_path / "m.onnx"))
    assert "node 'lstm' (LSTM)" in msg and "sequence_lens" in msg and "lengths in the data file" in msg


@pytest.mark.parametrize("which, index", [("initial_h", 5), ("initial_c", 6)])
def test_refuses_nonzero_initial_state(which, index, tmp_path):
    g = simple_graph(batch=3, steps=5)
    g.inits.append(_init("s0", np.full((1, 3, 4), 0.1, np.float32)))
    g.set_input("lstm", index, "s0")
    msg = refusal(g.save(tmp_path / "m.onnx"))
    assert "node 'lstm' (LSTM)" in msg and f"{which} ('s0') is not all zero" in msg


def test_refuses_relu_in_head(tmp_path):
    g = simple_graph()
    g.node("fc").output[0] = "pre"
    g.nodes.append(helper.make_node("Relu", ["pre"], ["logits"], name="head_relu"))
    msg = refusal(g.save(tmp_path / "m.onnx"))
    assert "node 'head_relu' (Relu)" in msg and "op Relu is not supported" in msg


def test_refuses_second_output_and_second_head(tmp_path):
    g = simple_graph()
    g.outputs.append(helper.make_tensor_value_info("feat", TensorProto.FLOAT, ["n", 4]))
    assert "2 outputs" in refusal(g.save(tmp_path / "a.onnx"))
    g = simple_graph()
    g.node("fc").output[0] = "mid"
    g.inits.append(_init("fc2_W", np.ones((2, 3), np.float32)))
    g.nodes.append(helper.make_node("Gemm", ["mid", "fc2_W"], ["logits"], name="fc2", transB=1))
    msg = refusal(g.save(tmp_path / "b.onnx"))
    assert "node 'fc2' (Gemm)" in msg and "second linear layer" in msg


def test_refuses_gemm_trans_a(tmp_path):
    g = simple_graph(batch=3, steps=5)
    fc = g.node("fc")
    g.nodes.insert(g.nodes.index(fc), helper.make_node("Transpose", ["feat"], ["feat_t"], name="tt"))
    fc.input[0] = "feat_t"
    fc.attribute.append(helper.make_attribute("transA", 1))
    msg = refusal(g.save(tmp_path / "m.onnx"))
    assert "node 'fc' (Gemm)" in msg and "transA=1" in msg


def test_lone_reverse_lstm_imports_as_a_reverse_layer(tmp_path):
    path = simple_graph("reverse").save(tmp_path / "m.onnx")
    x = random_data(5, 7, 3)
    assert_reproduces(path, x)
    layer = read_onnx(path).model.layers[0]
    assert layer.reverse and len(layer.directions) == 1


def test_refuses_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    msg = refusal(bad)
    assert msg.startswith(f"cannot read {bad}: not a valid ONNX model (")
    (tmp_path / "empty.onnx").write_bytes(b"")
    assert "not a valid ONNX model" in refusal(tmp_path / "empty.onnx")
    msg = refusal(tmp_path / "nope.onnx")
    assert "nope.onnx" in msg and "not found" in msg
    with pytest.raises(UserError, match="not found"):
        run_onnxruntime(tmp_path / "nope.onnx", random_data(1, 2, 3))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_refuses_non_finite_weight(bad, tmp_path):
    g = simple_graph()
    w = numpy_helper.to_array(g.inits[0]).copy()
    w[0, 1, 2] = bad
    g.inits[0] = _init("l0_W", w)
    msg = refusal(g.save(tmp_path / "m.onnx"))
    assert "initializer 'l0_W'" in msg and "NaN/Inf" in msg


def test_refuses_head_on_last_output_of_bidirectional_lstm(tmp_path):
    m = make_torch_classifier(3, 4, 1, True, 3, seed=8, head="last_output")
    path = export_onnx(m, random_data(2, 6, 3), tmp_path / "m.onnx")
    msg = refusal(path, random_data(6, 6, 3))
    assert "does not reproduce onnxruntime (max abs diff" in msg and "output[:, -1]" in msg
    # a unidirectional LSTM's last output *is* h_n, so that one imports
    m = make_torch_classifier(3, 4, 1, False, 3, seed=8, head="last_output")
    assert_reproduces(export_onnx(m, random_data(2, 6, 3), tmp_path / "u.onnx"), random_data(6, 6, 3))


def test_refuses_data_of_the_wrong_shape(tmp_path):
    m = make_torch_classifier(3, 4, 1, False, 2)
    path = export_onnx(m, random_data(2, 5, 3), tmp_path / "m.onnx")
    msg = refusal(path, random_data(4, 5, 4))
    assert "[4, 5, 4]" in msg and "features: data 4, graph 3" in msg
    msg = refusal(path, random_data(4, 5, 3)[:, :, 0])
    assert "[4, 5]" in msg and "features [N, T, F]" in msg
    fixed = simple_graph(batch=2, steps=5).save(tmp_path / "fixed.onnx")
    msg = refusal(fixed, random_data(4, 6, 3))
    assert "[4, 6, 3]" in msg and "[2, 5, 3]" in msg and "time steps: data 6, graph 5" in msg


def test_refuses_token_ids_outside_the_vocabulary(tmp_path):
    m = make_torch_classifier(3, 4, 1, False, 2, embedding_vocab=7)
    path = export_onnx(m, random_data(2, 5, vocab=7), tmp_path / "m.onnx")
    x = random_data(3, 5, vocab=7)
    x[1, 2] = 7
    assert "0..6" in refusal(path, x)
