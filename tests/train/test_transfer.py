"""The rocket teacher, the augmented transfer set and the no-teacher fallback, on real data."""
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


def test_rocket_teacher_with_a_transfer_set_on_arrow_head(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("aeon")
    proc = kd2mcu("train", "--dataset", "arrow_head", "--teacher", "rocket", "--set", "distill.transfer=2",
                  "--out", tmp_path / "r", *QUICK)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["teacher"].startswith("MiniRocket")
    assert m["teacher_accuracy"] >= 0.75  # 175 held-out series, 3 classes: a teacher worth distilling
    assert m["int8_hostsim_accuracy"] == m["int8_accuracy"]  # the generated C, bit-exact
    assert "shipped_student" in m and "baseline_accuracy" in m  # the fallback trained the student alone too


def test_rocket_teacher_refuses_text(tmp_path):
    from clitools import assert_user_error

    assert_user_error(kd2mcu("train", "--dataset", "chinese_reviews", "--teacher", "rocket", "--set",
                             "data.subset=200", "--out", tmp_path / "r", "--quiet"), "rocket", "sensor")
