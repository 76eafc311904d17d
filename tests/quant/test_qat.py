"""kd2mcu.quant.qat: the QAT forward pass equals the integer reference bit for bit, and it trains.

- its integer building blocks (rq, input quantization) equal qmath's;
- ``float_model`` is the student (gate reordering, summed biases, embedding);
- ``int_model`` is what ptq, and the ONNX build of the exported student, make of it;
- ``qat_forward``'s logits, turned back into int8, equal ``reference.run``'s on many random students
  (uni/bi, 1/2 layers, features/tokens, hidden 8..48, lengths 1..T, saturation, a cell clip);
- gradients reach every student parameter, and SGD through ``qat_forward`` lowers the loss.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kd2mcu.quant import ptq, qat, qmath, reference  # noqa: E402
from kd2mcu.train.student import TinyLSTM  # noqa: E402

torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------------
# helpers


def make_case(seed, input_size=5, hidden=16, classes=4, layers=1, bi=False, vocab=0, n=12, steps=20,
              weight_gain=1.0):
    """A random student, inputs (numpy) and lengths (first sample full length, second length 1)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    student = TinyLSTM(input_size, hidden, classes, layers=layers, bidirectional=bi, vocab=vocab)
    if weight_gain != 1.0:
        with torch.no_grad():
            for p in student.parameters():
                p.mul_(weight_gain)
    if vocab:
        x = rng.integers(0, vocab, size=(n, steps)).astype(np.int64)
    else:
        x = (rng.normal(size=(n, steps, input_size)) * rng.uniform(0.3, 3.0)).astype(np.float32)
    lengths = rng.integers(1, steps + 1, size=n).astype(np.int64)
    lengths[0] = steps
    if n > 1:
        lengths[1] = 1
    return student, x, lengths


def reference_logits(model, x, lengths):
    x_q = x if model.is_token_model else reference.quantize_input(model, x)
    return reference.run(model, x_q, lengths)["logits"]


def recovered_int8(model, logits):
    out = model.head.output
    return (torch.round(logits.detach() / out.scale) + out.zero_point).numpy().astype(np.int64)


def assert_bit_exact(student, model, x, lengths):
    logits = qat.qat_forward(student, model, torch.from_numpy(x), torch.from_numpy(lengths))
    ref = reference_logits(model, x, lengths)
    np.testing.assert_array_equal(recovered_int8(model, logits), ref)
    # the values themselves are reference.dequantize_logits, bit for bit
    np.testing.assert_array_equal(logits.detach().numpy(), reference.dequantize_logits(model, ref))
    return logits


def random_configs(count, seed=123):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(count):
        vocab = 30 if k % 3 == 2 else 0
        out.append(dict(seed=1000 + k, input_size=int(rng.integers(1, 9)), hidden=int(rng.integers(8, 49)),
                        classes=int(rng.integers(2, 6)), layers=1 + (k // 2) % 2, bi=bool(k % 2), vocab=vocab,
                        n=int(rng.integers(1, 14)), steps=int(rng.integers(1, 26))))
    return out


CONFIGS = random_configs(24)


# ------------------------------------------------------------------------------------------------
# integer building blocks


def test_rq_matches_qmath():
    rng = np.random.default_rng(0)
    for _ in range(300):
        m = float(np.exp(rng.uniform(np.log(1e-9), np.log(300.0))))
        M, S = qmath.quantize_multiplier(m)
        bound = (2**31 - 1) >> max(S, 0)
        acc = rng.integers(-bound, bound + 1, size=200)
        acc[:3] = [0, bound, -bound]
        want = qmath.rq(acc, M, S)
        got_scalar = qat.rq(torch.from_numpy(acc), qat.Requant.scalar((M, S))).numpy()
        got_vector = qat.rq(torch.from_numpy(acc), qat.Requant.of([(M, S)], repeat=acc.size)).numpy()
        np.testing.assert_array_equal(got_scalar, want)
        np.testing.assert_array_equal(got_vector, want)
    # exact ties of the second rounding (half away from zero), both signs
    M, S = 2**30, -4  # rq(acc) = acc / 32 rounded
    acc = np.arange(-200, 201)
    np.testing.assert_array_equal(qat.rq(torch.from_numpy(acc), qat.Requant.scalar((M, S))).numpy(),
                                  qmath.rq(acc, M, S))


# ------------------------------------------------------------------------------------------------
# float and integer models


@pytest.mark.parametrize("cfg", [dict(layers=1), dict(bi=True), dict(layers=2, bi=True, hidden=24),
                                 dict(layers=2, vocab=30, input_size=8), dict(bi=True, vocab=30, hidden=9)],
                         ids=["uni", "bi", "bi2", "tok2", "tokbi"])
def test_float_model_is_the_student(cfg):
    student, x, lengths = make_case(7, **cfg)
    fm = qat.float_model(student, labels=[f"c{k}" for k in range(4)])
    ours = fm.forward(x, lengths)
    with torch.no_grad():
        want = student(torch.from_numpy(x), torch.from_numpy(lengths))[0].double().numpy()
    np.testing.assert_allclose(ours, want, rtol=0, atol=1e-5)
    assert fm.labels == ["c0", "c1", "c2", "c3"]
    assert (fm.embedding is not None) == bool(cfg.get("vocab"))
    assert all(not layer.reverse and len(layer.directions) == (2 if cfg.get("bi") else 1) for layer in fm.layers)


def test_int_model_is_what_ptq_builds():
    student, x, lengths = make_case(3, layers=2, bi=True)
    stats = qat.calibrate(student, x, lengths)
    im = qat.int_model(student, stats, 20, labels=list("abcd"))
    want = ptq.quantize(qat.float_model(student, list("abcd")), stats, 20)
    assert im.to_dict() == want.to_dict()
    assert im.labels == list("abcd") and im.max_steps == 20


@pytest.mark.parametrize("vocab", [0, 30])
def test_int_model_equals_the_build_of_the_exported_student(vocab, tmp_path):
    """``kd2mcu build`` of the student's ONNX export (import + calibration + ptq) gives the same integers."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from kd2mcu.quant.floatmodel import CalibrationStats
    from kd2mcu.quant.onnx_import import import_onnx
    from kd2mcu.train.student import export_onnx

    student, x, lengths = make_case(5, layers=2, bi=True, vocab=vocab, input_size=6)
    path = export_onnx(student, torch.from_numpy(x[:2]), tmp_path / "s.onnx")
    fm = import_onnx(path, x).model
    stats = CalibrationStats()
    fm.forward(x, lengths, stats=stats)
    built = ptq.quantize(fm, stats, 20)
    assert qat.int_model(student, qat.calibrate(student, x, lengths), 20).to_dict() == built.to_dict()


# ------------------------------------------------------------------------------------------------
# bit exactness


@pytest.mark.parametrize("cfg", CONFIGS, ids=[f"{'bi' if c['bi'] else 'uni'}{c['layers']}"
                                              f"{'-tok' if c['vocab'] else ''}-H{c['hidden']}-T{c['steps']}"
                                              for c in CONFIGS])
def test_qat_forward_equals_the_integer_reference(cfg):
    student, x, lengths = make_case(**cfg)
    stats = qat.calibrate(student, x, lengths)
    im = qat.int_model(student, stats, cfg["steps"])
    assert im.to_dict() == ptq.quantize(qat.float_model(student), stats, cfg["steps"]).to_dict()
    assert_bit_exact(student, im, x, lengths)
    # on other data than the calibration set too (ranges exceeded: input and logit saturation)
    _, x2, lengths2 = make_case(cfg["seed"] + 1, **{k: v for k, v in cfg.items() if k != "seed"})
    if not cfg["vocab"]:
        x2 = 3 * x2
    assert_bit_exact(student, im, x2, lengths2)


def test_saturation_everywhere_stays_bit_exact():
    """Large weights: Q3.12 pre-activations, the cell and int8 hidden/logits saturate; still bit-exact."""
    student, x, lengths = make_case(11, hidden=24, layers=2, bi=True, weight_gain=6.0, n=16, steps=25)
    im = qat.int_model(student, qat.calibrate(student, x[:4], lengths[:4]), 25)  # calibrated on a few samples
    x2 = 4 * x
    logits = assert_bit_exact(student, im, x2, lengths)
    # saturation really happened: in the logits and in the first layer's pre-activations and hidden state
    q = recovered_int8(im, logits)
    assert ((q == -128) | (q == 127)).any()
    steps = qat._Steps(torch.from_numpy(lengths), *x2.shape[:2])
    p = qat._IntDirection.of(im.layers[0], 0)
    tr = qat.exact_direction(p, qat.quantize_input(im, torch.from_numpy(x2)), steps, reverse=False)
    pre = torch.stack(tr.pre)
    assert ((pre == qmath.INT16_MIN) | (pre == qmath.INT16_MAX)).any()
    h = torch.stack(tr.hidden)
    assert ((h == -128) | (h == 127)).any()


def test_cell_clip_stays_bit_exact():
    student, x, lengths = make_case(12, hidden=20, bi=True, layers=2)
    im = qat.int_model(student, qat.calibrate(student, x, lengths), 20)
    for layer in im.layers:
        layer.cell_clip = 700
    assert_bit_exact(student, im, x, lengths)


def test_empty_sequences_match_the_reference():
    """Length 0 (no step at all) is not something the float student accepts, but the reference does."""
    student, x, lengths = make_case(13, layers=2, bi=True)
    im = qat.int_model(student, qat.calibrate(student, x, lengths), 20)
    lengths[2:4] = 0
    assert_bit_exact(student, im, x, lengths)
    assert_bit_exact(student, im, x, np.zeros_like(lengths))


# ------------------------------------------------------------------------------------------------
# gradients and training


@pytest.mark.parametrize("cfg", [dict(), dict(layers=2, bi=True), dict(vocab=30, layers=2, input_size=8)],
                         ids=["uni", "bi2", "tok2"])
def test_gradients_reach_every_parameter(cfg):
    student, x, lengths = make_case(21, **cfg)
    im = qat.int_model(student, qat.calibrate(student, x, lengths), 20)
    y = torch.from_numpy(np.random.default_rng(0).integers(0, 4, size=len(x)))
    logits = qat.qat_forward(student, im, torch.from_numpy(x), torch.from_numpy(lengths))
    torch.nn.functional.cross_entropy(logits, y).backward()
    total = nonzero = 0
    for name, p in student.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
        total += p.numel()
        nonzero += int((p.grad != 0).sum())
    assert nonzero >= 0.5 * total  # embedding rows of unseen tokens have no gradient


@pytest.mark.parametrize("cfg", [dict(), dict(hidden=24, layers=2, bi=True),
                                 dict(vocab=30, input_size=6, layers=2)], ids=["uni", "bi2", "tok2"])
def test_gradients_follow_the_float_student(cfg):
    """Where int8 is accurate, each parameter's STE gradient points where the float student's does
    (cosine > 0.999 here; a surrogate with the wrong gate order, activation or cell path falls below)."""
    student, x, lengths = make_case(22, n=32, **cfg)
    im = qat.int_model(student, qat.calibrate(student, x, lengths), 20)
    y = torch.from_numpy(np.random.default_rng(1).integers(0, 4, size=len(x)))
    xt, lt = torch.from_numpy(x), torch.from_numpy(lengths)

    def grads(logits):
        student.zero_grad()
        torch.nn.functional.cross_entropy(logits, y).backward()
        return {name: p.grad.flatten().clone() for name, p in student.named_parameters()}

    g_qat = grads(qat.qat_forward(student, im, xt, lt))
    g_float = grads(student(xt, lt)[0])
    for name in g_qat:
        cos = torch.nn.functional.cosine_similarity(g_qat[name], g_float[name], dim=0)
        assert cos > 0.999, (name, float(cos))


def test_sgd_through_qat_forward_lowers_the_loss():
    """A tiny separable task: the class is the sign of feature 0's mean. QAT training learns it."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n, steps = 64, 12
    y = rng.integers(0, 2, size=n)
    x = rng.normal(0, 1, size=(n, steps, 3)).astype(np.float32)
    x[:, :, 0] += np.where(y == 1, 1.0, -1.0)[:, None]
    lengths = rng.integers(4, steps + 1, size=n).astype(np.int64)
    student = TinyLSTM(3, 12, 2)
    opt = torch.optim.SGD(student.parameters(), lr=0.5)
    xt, lt, yt = torch.from_numpy(x), torch.from_numpy(lengths), torch.from_numpy(y)

    def qat_loss():
        im = qat.int_model(student, qat.calibrate(student, x, lengths), steps)  # rebuilt from current weights
        logits = qat.qat_forward(student, im, xt, lt)
        return torch.nn.functional.cross_entropy(logits, yt), im

    first, _ = qat_loss()
    for _ in range(30):
        loss, _ = qat_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
    last, im = qat_loss()
    assert last.item() < 0.5 * first.item()
    # and the integer model (what the build ships) classifies the task
    acc = np.mean(reference_logits(im, x, lengths).argmax(1) == y)
    assert acc >= 0.9
