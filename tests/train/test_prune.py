"""kd2mcu train with [prune] sparsity: the shipped student has the target share of zero blocks, and its
build is block-sparse C that the host simulator finds bit-exact."""
from __future__ import annotations

import json

import pytest
from clitools import kd2mcu
from conftest import require_gcc

QUICK = ["--teacher", "transformer", "--set", "teacher.epochs=5", "--set", "distill.warmup_epochs=3",
         "--set", "distill.epochs=8", "--set", "qat.epochs=2", "--set", "distill.transfer=0", "--quiet"]


def test_pruned_run_builds_block_sparse_and_bit_exact(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("aeon")
    require_gcc()
    proc = kd2mcu("train", "--dataset", "basic_motions", "--set", "prune.sparsity=0.5", "--set", "prune.end=1.0",
                  "--out", tmp_path / "r", *QUICK)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["block_sparsity"] == pytest.approx(0.5, abs=0.02)
    assert m["schedule"]["distill_best_epoch"] == 7  # the ramp ends with the stage: only the last epoch is at 50%
    assert proc.returncode == 0 and kd2mcu("build", tmp_path / "r", "--out", tmp_path / "b").returncode == 0
    assert "Block-sparse" in (tmp_path / "b" / "src" / "kd2mcu_model.c").read_text()
    r = json.loads(kd2mcu("sim", tmp_path / "b", "--inputs", tmp_path / "r" / "test.npz", "--json").stdout)
    assert r["mismatches"] == 0 and r["accuracy"] == m["int8_accuracy"]


def test_prune_settings_are_checked(tmp_path):
    proc = kd2mcu("train", "--set", "prune.sparsity=1.5", "--out", tmp_path / "r")
    assert proc.returncode == 2 and "[prune] sparsity must lie in 0..0.95" in proc.stderr
    proc = kd2mcu("train", "--set", "prune.start=0.7", "--set", "prune.end=0.5", "--out", tmp_path / "r")
    assert proc.returncode == 2 and "start < end" in proc.stderr


def test_a_pruning_stage_keeps_no_epoch_before_the_target_sparsity():
    pytest.importorskip("torch")
    from kd2mcu.train.prune import Pruner, ramp
    from kd2mcu.train.student import TinyLSTM

    student = TinyLSTM(6, 8, 4)
    cfg = {"sparsity": 0.5, "start": 0.1, "end": 0.6}
    first = Pruner(student, cfg, 100).full_from()
    assert first == 60 and ramp(59, 100, 0.5, 0.1, 0.6) < 0.5 == ramp(60, 100, 0.5, 0.1, 0.6)
    assert Pruner(student, cfg, 8).full_from() == 5
    assert Pruner(student, cfg, 1).full_from() == 0  # a one-epoch stage: its only epoch
    assert Pruner(student, dict(cfg, sparsity=0.0), 100).full_from() == 0  # dense: every epoch may be kept
