"""The STM32 firmware project: it builds warning-free for every board, runs in QEMU with outputs
equal to the Python reference bit for bit, flashes through stand-in probes, and reports its footprint."""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess

import numpy as np
import pytest
from clitools import assert_user_error, kd2mcu
from conftest import require_arm, save_inputs, write_build

from kd2mcu.commands.emulate import emulate
from kd2mcu.quant.random_model import ModelShape, random_inputs, random_model
from kd2mcu.targets import firmware

EMULATED = [
    ModelShape(input_size=6, hidden=32, steps=40, classes=4),
    ModelShape(input_size=3, hidden=8, steps=30, classes=3, bidirectional=True),
    ModelShape(input_size=8, hidden=16, steps=25, classes=5, vocab=60),
    ModelShape(input_size=4, hidden=12, steps=20, classes=2, vocab=30, bidirectional=True),
    ModelShape(input_size=5, hidden=10, steps=30, classes=6, layers=2, regime="large"),
    ModelShape(input_size=2, hidden=6, steps=35, classes=3, layers=2, bidirectional=True, vocab=20),
    ModelShape(input_size=12, hidden=20, steps=15, classes=10, reverse=True),
    ModelShape(input_size=1, hidden=1, steps=10, classes=2, regime="large"),
    ModelShape(input_size=32, hidden=64, steps=8, classes=7, bidirectional=True, regime="large"),
    ModelShape(input_size=7, hidden=24, steps=20, classes=4, layers=2, vocab=100),
    ModelShape(input_size=16, hidden=40, steps=12, classes=3, layers=2, bidirectional=True),
]
TARGETS = ["stm32f405", "stm32f746", "stm32l476", "stm32f205"]
DSP_TARGETS = TARGETS[:3]  # Cortex-M4 / M7; the stm32f205 (Cortex-M3) has its own test in test_dsp.py


@pytest.mark.slow
@pytest.mark.parametrize("portable", [False, True], ids=["dsp", "portable"])
@pytest.mark.parametrize("index", range(len(EMULATED)))
def test_qemu_matches_reference_on_random_models(index, portable, tmp_path):
    require_arm()
    shape = EMULATED[index]
    rng = np.random.default_rng(500 + index)
    model = random_model(rng, shape)
    target = DSP_TARGETS[index % len(DSP_TARGETS)]
    from kd2mcu.commands.build import write_build

    write_build(model, {"name": "kd2mcu_model"}, tmp_path / "b", True, "kd2mcu_model", firmware.load_board(target))
    x, lengths = random_inputs(rng, model, 24, shape.steps)
    save_inputs(model, x, lengths, tmp_path / "d.npz")
    result = emulate(tmp_path / "b", tmp_path / "d.npz", portable=portable)
    assert result["kernel_path"] == ("portable C" if portable else "DSP (SMLAD)")
    assert result["samples"] == 24
    assert result["mismatches"] == 0, result["first_mismatch"]
    assert result["instructions_per_inference"] > 0 and result["flash_bytes"] > 0 and result["ram_bytes"] > 0


@pytest.mark.parametrize("target", TARGETS)
def test_firmware_builds_warning_free_for_every_target(target, tmp_path):
    require_arm()
    model = random_model(np.random.default_rng(9), ModelShape(input_size=6, hidden=16, steps=20, bidirectional=True,
                                                              layers=2))
    from kd2mcu.commands.build import write_build

    write_build(model, {"name": "kd2mcu_model"}, tmp_path / "b", True, "kd2mcu_model", firmware.load_board(target))
    project = tmp_path / "b" / "firmware"
    for opt in ("-Os", "-O2", "-O0"):
        for emulate_flag in (False, True):
            elf = firmware.make(project, emulate=emulate_flag, opt=opt, extra_cflags="-pedantic")
            assert elf.is_file()
            if not emulate_flag:
                assert (elf.parent / "firmware.bin").stat().st_size > 0
                assert (elf.parent / "firmware.hex").read_text().startswith(":")
            subprocess.run(["make", "-s", "-C", str(project), "clean"], check=True)


def test_default_vectors_and_cli_json(tmp_path):
    """Without --inputs the vectors baked in at build time run; --json carries the measures."""
    require_arm()
    model = random_model(np.random.default_rng(12), ModelShape(input_size=6, hidden=32, steps=100))
    write_build(model, tmp_path / "b")
    proc = kd2mcu("emulate", tmp_path / "b", "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["samples"] == firmware.DEFAULT_VECTORS and r["mismatches"] == 0
    for key in ("instructions_per_inference", "measured_by", "flash_bytes", "ram_bytes", "machine"):
        assert key in r
    assert "icount" in r["measured_by"]
    report = json.loads(kd2mcu("report", tmp_path / "b", "--json").stdout)
    assert report["macs_per_step"] == 4 * 32 * (6 + 32)
    assert report["instructions_per_inference"] == r["instructions_per_inference"]
    assert 0 < report["flash_code_bytes"] < 8192
    head = 4 * 32 + 4 * 4
    weights = 32 * (4 + 8 * (2 + 8)) * 4 + head  # fast layout: 4 biases + pair words for 2 + 8 groups per unit
    assert weights - 4 * 4 <= report["flash_weight_bytes"] <= weights  # the head bias may fold into code
    write_build(model, tmp_path / "c", layout="compact")
    compact = json.loads(kd2mcu("report", tmp_path / "c", "--json").stdout)
    weights = 32 * (4 + 4 * (2 + 8)) * 4 + head  # compact layout: 4 biases + one int8 word per gate and group
    assert weights - 4 * 4 <= compact["flash_weight_bytes"] <= weights
    assert report["ram_state_bytes"] == 32 + 2 * 32 and report["ram_static_buffer_bytes"] == 0
    text = kd2mcu("report", "b", cwd=tmp_path).stdout  # a relative build path, as the main job gives
    assert "instructions per MAC" in text and "flash: code" in text


def test_emulate_refuses_bad_input(tmp_path):
    require_arm()
    model = random_model(np.random.default_rng(13), ModelShape(input_size=3, hidden=4, steps=10))
    write_build(model, tmp_path / "b")
    np.savez(tmp_path / "long.npz", x=np.zeros((2, 11, 3), np.float32))
    assert_user_error(kd2mcu("emulate", tmp_path / "b", "--inputs", tmp_path / "long.npz"), "11 steps")
    assert_user_error(kd2mcu("emulate", tmp_path, "--inputs", tmp_path / "long.npz"), "not a kd2mcu build")
    assert_user_error(kd2mcu("build", tmp_path / "b" / "model.json", "--out", tmp_path / "c", "--target", "esp32"),
                      "unknown target", "stm32f405")


def _stand_in(bin_dir, name, exit_code=0, said=""):
    """An executable that records its arguments (one per line) and exits with exit_code."""
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > \"{bin_dir}/{name}.args\"\necho '{said}'\nexit {exit_code}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.mark.parametrize("probe,tool,expect", [
    ("stlink", "st-flash", ["--reset", "write", "firmware.bin", "0x08000000"]),
    ("openocd", "openocd", ["-f", "interface/stlink.cfg", "target/stm32f4x.cfg", "verify reset exit"]),
    ("cubeprog", "STM32_Programmer_CLI", ["port=SWD", "-w", "firmware.hex", "-v", "-rst"]),
])
def test_flash_through_stand_in_probes(probe, tool, expect, tmp_path, monkeypatch):
    model = random_model(np.random.default_rng(14), ModelShape(input_size=3, hidden=4, steps=10))
    write_build(model, tmp_path / "b")
    dry = kd2mcu("flash", tmp_path / "b", "--probe", probe, "--dry-run")
    assert dry.returncode == 0 and dry.stdout.startswith(tool)
    for word in expect:
        assert word in dry.stdout
    require_arm()
    image = tmp_path / "b" / "firmware" / "build" / "board"
    assert "nothing was programmed" in dry.stdout.splitlines()[1]  # --dry-run built what it names
    assert all((image / f"firmware.{ext}").is_file() for ext in ("elf", "bin", "hex"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stand_in(bin_dir, tool)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    proc = kd2mcu("flash", tmp_path / "b", "--probe", probe)
    assert proc.returncode == 0, proc.stderr
    args = (bin_dir / f"{tool}.args").read_text().splitlines()
    assert " ".join(args) in dry.stdout.replace("'", "")
    image = next(w for a in args for w in a.split() if "firmware." in w)
    assert os.path.getsize(image) > 0  # the image it was given was really built
    _stand_in(bin_dir, tool, exit_code=1, said="Error: no ST-LINK device found")
    assert_user_error(kd2mcu("flash", tmp_path / "b", "--probe", probe), "could not program",
                      "connected", "no ST-LINK device found")


def test_flash_without_the_tool_says_what_to_install(tmp_path, monkeypatch):
    model = random_model(np.random.default_rng(15), ModelShape(input_size=3, hidden=4, steps=10))
    write_build(model, tmp_path / "b")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    import sys

    proc = subprocess.run([sys.executable, "-m", "kd2mcu.cli", "flash", str(tmp_path / "b"), "--probe", "stlink"],
                          capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(firmware.resource_dir("templates").parent)))
    assert_user_error(proc, "st-flash not found", "stlink-tools")


@pytest.mark.slow
def test_qemu_matches_reference_on_the_trained_basic_motions_model(tmp_path):
    """The main job's model: a float LSTM trained on BasicMotions, PTQ-built, its test split run in QEMU."""
    require_arm()
    torch = pytest.importorskip("torch")
    from test_build_onnx import QUALITY_CASES, train
    from test_onnx_import import export_onnx

    xtr, ytr, xte, yte, module, fit = QUALITY_CASES["basic_motions_lstm32"]()
    module = train(module, xtr, ytr, **fit)
    export_onnx(module, torch.from_numpy(xtr[:1]), tmp_path / "m.onnx")
    np.savez(tmp_path / "train.npz", x=xtr, y=ytr)
    np.savez(tmp_path / "test.npz", x=xte, y=yte)
    proc = kd2mcu("build", tmp_path / "m.onnx", "--calib", tmp_path / "train.npz", "--out", tmp_path / "b")
    assert proc.returncode == 0, proc.stderr
    proc = kd2mcu("emulate", tmp_path / "b", "--inputs", tmp_path / "test.npz", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(proc.stdout)
    assert r["samples"] == len(yte) and r["mismatches"] == 0
    assert r["accuracy"] >= 0.8


@pytest.mark.parametrize("portable", [False, True])
def test_qemu_quantizes_raw_samples_as_python_does(portable, tmp_path):
    """Raw float (NaN and Inf included) and int16 samples through the model's own pre-processing on the
    emulated board: the int8 inputs it made (their hash) and every output equal Python's."""
    require_arm()
    from kd2mcu.quant.intmodel import Normalization

    rng = np.random.default_rng(11)
    model = random_model(rng, ModelShape(input_size=6, hidden=8, steps=12, classes=3))
    model.frame_stack = 2
    model.normalization = Normalization([120.0, -3.5, 0.25], [30.0, 0.5, 0.01], ["a", "b", "c"])
    model.validate()
    write_build(model, tmp_path / "b")
    std, mean = np.tile([30.0, 0.5, 0.01], 2), np.tile([120.0, -3.5, 0.25], 2)
    x_raw = (rng.normal(0, 2, (20, 12, 6)) * std + mean).astype(np.float32)
    x_raw[0, 0, :3] = [np.nan, np.inf, -np.inf]
    lengths = rng.integers(1, 13, 20)
    for raw in (x_raw, rng.integers(-32768, 32768, (20, 12, 6)).astype(np.int16)):
        np.savez(tmp_path / "d.npz", x=np.zeros((20, 12, 6), np.float32), lengths=lengths, x_raw=raw)
        r = emulate(tmp_path / "b", tmp_path / "d.npz", portable=portable)
        assert r["mismatches"] == 0 and r["raw_mismatches"] == 0 and r["raw_input_mismatches"] == 0, r
        assert r["raw_inputs"].startswith("int16" if raw.dtype == np.int16 else "float")


def test_users_own_main_with_printf_links(tmp_path):
    """newlib's printf needs the heap's start (`end`) from the linker script: a user's own main links."""
    require_arm()
    model = random_model(np.random.default_rng(13), ModelShape(input_size=4, hidden=8, steps=10))
    write_build(model, tmp_path / "b")
    project = tmp_path / "b" / "firmware"
    (project / "src" / "main.c").write_text(
        '#include <stdio.h>\n#include <stdlib.h>\n#include "kd2mcu_model.h"\n#include "platform.h"\n'
        "int main(void)\n{\n    static kd2mcu_model_state_t s;\n    int8_t x[4 * 2] = {0}, logits[KD2MCU_MODEL_NUM_CLASSES];\n"
        "    char *heap = malloc(16);\n    kd_platform_init();\n    kd2mcu_model_run(&s, x, 2, logits);\n"
        '    printf("%s %d\\n", KD2MCU_MODEL_CLASS_NAMES[kd2mcu_model_predict(logits, NULL)], heap != NULL);\n'
        "    return 0;\n}\n")
    elf = firmware.make(project, emulate=False)
    assert elf.is_file()


def test_report_prefers_cycles_measured_on_a_board(tmp_path):
    require_arm()
    model = random_model(np.random.default_rng(14), ModelShape(input_size=4, hidden=8, steps=50))
    write_build(model, tmp_path / "b")
    (tmp_path / "b" / "validate.json").write_text(json.dumps(
        {"samples": 10, "mismatches": 0, "core_hz": 168_000_000, "timer": "dwt", "ticks_per_inference": 84000.0,
         "cycles_per_inference": 84000.0, "steps_per_inference": 25.0}))
    r = json.loads(kd2mcu("report", tmp_path / "b", "--json").stdout)
    assert r["latency_basis"].startswith("measured on the board")
    assert r["latency_typical_ms"] == pytest.approx(0.5) and r["latency_longest_ms"] == pytest.approx(1.0)
    assert 0 < r["flash_share"] < 0.05 and r["part_flash_bytes"] == 1024 * 1024
    assert "of the part's 1,024 KB" in kd2mcu("report", tmp_path / "b").stdout
    assert r["energy_typical_uj"] == pytest.approx(40e-3 * 3.3 * 0.5e3) and "DocID022152" in r["energy_basis"]


def test_qemu_encodes_utf8_texts_as_python_does(tmp_path):
    """Raw texts baked into the emulated board, encoded by NAME_encode_utf8 there: same ids and outputs."""
    require_arm()
    from kd2mcu.quant.intmodel import TextEncoding

    vocab = ["<pad>", "<oov>", "好", "的", "a", "b", " ", "😀"]
    model = random_model(np.random.default_rng(15), ModelShape(input_size=8, hidden=8, steps=16, classes=2,
                                                               vocab=len(vocab)))
    model.text = TextEncoding(vocab, 12)
    write_build(model, tmp_path / "b")
    rng = np.random.default_rng(16)
    texts = ["".join(rng.choice(vocab[2:] + ["x", "中"], rng.integers(1, 20))) for _ in range(30)]
    np.savez(tmp_path / "d.npz", x=np.ones((30, 16), np.int64), texts=np.array(texts))
    r = emulate(tmp_path / "b", tmp_path / "d.npz")
    assert r["utf8_mismatches"] == 0 and r["utf8_token_mismatches"] == 0, r


def _symbols(elf) -> dict:
    out = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True, check=True).stdout
    return {parts[2]: int(parts[0], 16) for parts in (line.split() for line in out.splitlines()) if len(parts) == 3}


@pytest.mark.parametrize("layout", ["fast", "compact"])
def test_weights_in_ram_are_copied_at_start_up_and_stay_bit_exact(layout, tmp_path):
    """--weights ram: the board firmware reads its weights from the F405's CCM (0x10000000), the emulated one
    (QEMU has no CCM) from SRAM; both hold their load image in flash, and QEMU's outputs are the reference's."""
    require_arm()
    rng = np.random.default_rng(77)
    shape = ModelShape(input_size=6, hidden=24, steps=30, classes=4, layers=2)
    model = random_model(rng, shape)
    from kd2mcu.codegen.render import weight_bytes
    from kd2mcu.commands.build import write_build

    write_build(model, {"name": "kd2mcu_model", "layout": layout, "weights": "ram"}, tmp_path / "b", True,
                "kd2mcu_model", firmware.load_board("stm32f405"))
    project = tmp_path / "b" / "firmware"
    for emulate_flag, base in ((False, 0x10000000), (True, 0x20000000)):
        elf = firmware.make(project, emulate=emulate_flag, opt="-O2", extra_cflags="-pedantic")
        syms = _symbols(elf)
        size = syms["_eweights"] - syms["_sweights"]  # the head's biases may become immediates: at most 16 B fewer
        assert syms["_sweights"] == base and weight_bytes(model, layout) - 16 <= size <= weight_bytes(model, layout)
        assert base <= syms["L0F_W"] < syms["_eweights"] and base <= syms["KD2MCU_MODEL_HEAD_W"] < syms["_eweights"]
        assert 0x08000000 <= syms["_siweights"] < 0x08100000
        assert firmware.elf_size(elf)["ram_weight_bytes"] == size  # emulate's RAM figure counts the copy
    x, lengths = random_inputs(rng, model, 12, shape.steps)
    save_inputs(model, x, lengths, tmp_path / "d.npz")
    result = emulate(tmp_path / "b", tmp_path / "d.npz")
    assert result["samples"] == 12 and result["mismatches"] == 0, result["first_mismatch"]


def test_weights_split_between_ccm_and_flash_stay_bit_exact(tmp_path):
    """--weights auto with weights larger than the CCM: the tables and the first units there, the rest in flash;
    the RAM part is what build.json says, and QEMU's outputs are the reference's."""
    require_arm()
    rng = np.random.default_rng(79)
    shape = ModelShape(input_size=64, hidden=128, steps=8, classes=4)
    model = random_model(rng, shape)
    from kd2mcu.commands.build import write_build

    info = write_build(model, {"name": "kd2mcu_model", "layout": "fast", "weights": "auto"}, tmp_path / "b", True,
                       "kd2mcu_model", firmware.load_board("stm32f405"))
    assert info["weights"] == "split" and 60_000 < info["ram_weight_bytes"] <= 65_536, info
    assert info["ram_weight_bytes"] + info["flash_weight_bytes"] == 207_376
    for emulate_flag, base in ((False, 0x10000000), (True, 0x20000000)):
        elf = firmware.make(tmp_path / "b" / "firmware", emulate=emulate_flag, opt="-O2", extra_cflags="-pedantic")
        syms = _symbols(elf)
        size = syms["_eweights"] - syms["_sweights"]
        assert info["ram_weight_bytes"] - 16 <= size <= info["ram_weight_bytes"]
        assert base <= syms["L0F_W"] < syms["_eweights"] and base <= syms["kd2mcu_sigmoid_table"] < syms["_eweights"]
        assert 0x08000000 <= syms["L0F_W_FLASH"] < 0x08100000
    x, lengths = random_inputs(rng, model, 8, shape.steps)
    save_inputs(model, x, lengths, tmp_path / "d.npz")
    result = emulate(tmp_path / "b", tmp_path / "d.npz")
    assert result["samples"] == 8 and result["mismatches"] == 0, result["first_mismatch"]
    text = kd2mcu("report", tmp_path / "b").stdout
    assert re.search(r"^weights read from +CCM \(6\d,\d{3} B with the activation tables.*; the other 14\d,\d{3} B of "
                     r"weights from flash$", text, re.M), text


def test_validate_in_qemu_runs_a_build_with_its_weights_in_ccm(tmp_path):
    """QEMU's STM32F405 has no CCM: validate --qemu links the board firmware with the emulator's memory map."""
    require_arm()
    rng = np.random.default_rng(78)
    shape = ModelShape(input_size=4, hidden=12, steps=20, classes=3)
    model = random_model(rng, shape)
    from kd2mcu.commands.build import write_build

    write_build(model, {"name": "kd2mcu_model", "weights": "ram"}, tmp_path / "b", True, "kd2mcu_model",
                firmware.load_board("stm32f405"))
    x, lengths = random_inputs(rng, model, 8, shape.steps)
    save_inputs(model, x, lengths, tmp_path / "d.npz")
    proc = kd2mcu("validate", tmp_path / "b", "--qemu", "--inputs", tmp_path / "d.npz", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(proc.stdout)
    assert r["samples"] == 8 and r["mismatches"] == 0 and r["firmware"].endswith("build/qemu/firmware.elf")
    assert 0x20000000 <= _symbols(r["firmware"])["_sweights"] < 0x20020000  # SRAM, not CCM


def test_weights_too_large_for_ram_are_refused_in_one_line(tmp_path):
    model = random_model(np.random.default_rng(5), ModelShape(input_size=64, hidden=128, steps=10, classes=4))
    (tmp_path / "m.json").write_text(model.to_json())
    proc = kd2mcu("build", tmp_path / "m.json", "--out", tmp_path / "b", "--weights", "ram")
    assert_user_error(proc, "--weights ram", "weights and activation tables take 207,376 bytes", "CCM has room for 65,536", "--weights flash",
                      "--layout compact")
    proc = kd2mcu("build", tmp_path / "m.json", "--out", tmp_path / "b", "--weights", "ram", "--layout", "compact",
                  "--target", "stm32l476")  # no fast RAM: its 96 KB RAM, less 16 KB for the application
    assert_user_error(proc, "take 101,392 bytes", "RAM has room for 81,920", "--weights flash")
    assert "compact" not in proc.stderr.split("room for")[1] and not (tmp_path / "b").exists()


def test_a_split_whose_fixed_part_does_not_fit_is_refused_or_left_in_flash(tmp_path):
    """A token model whose embedding alone overfills the CCM: --weights split stops in one line and writes
    nothing; --weights auto keeps everything in flash and says why."""
    model = random_model(np.random.default_rng(9), ModelShape(input_size=8, hidden=8, steps=10, classes=3, vocab=9000))
    (tmp_path / "m.json").write_text(model.to_json())
    proc = kd2mcu("build", tmp_path / "m.json", "--out", tmp_path / "b", "--weights", "split")
    assert_user_error(proc, "--weights split", "embedding, head and indices alone do not fit the stm32f405's CCM",
                      "--weights flash")
    assert not (tmp_path / "b").exists()
    proc = kd2mcu("build", tmp_path / "m.json", "--out", tmp_path / "c")
    assert proc.returncode == 0, proc.stderr
    info = json.loads((tmp_path / "c" / "build.json").read_text())
    assert info["weights"] == "flash" and "alone would not fit the stm32f405's CCM" in info["placement"]["weights"]


def test_build_places_weights_in_ccm_where_they_fit_and_says_why(tmp_path):
    """--weights auto (the default): the F405's CCM when the weights fit it, flash where the part has no
    core-coupled RAM or they do not fit; an explicit choice is kept; build.json and report say why."""
    small = random_model(np.random.default_rng(6), ModelShape(input_size=6, hidden=16, steps=10, classes=4))
    big = random_model(np.random.default_rng(5), ModelShape(input_size=64, hidden=128, steps=10, classes=4))
    (tmp_path / "small.json").write_text(small.to_json())
    (tmp_path / "big.json").write_text(big.to_json())
    cases = [("small", [], "ram", ["fit the stm32f405's CCM", "of 65,536 B", "0.72-0.75x"]),
             ("small", ["--target", "stm32l476"], "flash", ["no core-coupled RAM", "the application's"]),
             ("big", [], "split", ["207,376 B, more than the stm32f405's CCM (65,536 B)", "the rest stays in flash"]),
             ("small", ["--weights", "flash"], "flash", ["as asked (--weights flash)"])]
    for k, (which, args, where, words) in enumerate(cases):
        out = tmp_path / f"b{k}"
        proc = kd2mcu("build", tmp_path / f"{which}.json", "--out", out, *args)
        assert proc.returncode == 0, proc.stderr
        info = json.loads((out / "build.json").read_text())
        assert info["weights"] == where and info["layout"] == "fast", info
        assert all(w in info["placement"]["weights"] for w in words), info["placement"]
        assert "fewest modelled cycles" in info["placement"]["layout"]
        assert f"weights in {'flash' if where == 'flash' else 'RAM'}" in proc.stdout
        board_mk = (out / "firmware" / "board.mk").read_text()
        assert ("-DKD2MCU_WEIGHTS_IN_RAM" in board_mk) == (where != "flash")
    require_arm()
    text = kd2mcu("report", tmp_path / "b0").stdout
    assert "placement chosen because" in text and "fit the stm32f405's CCM" in text
    assert re.search(r"^weights read from +CCM \(", text, re.M), text
    assert "RAM: weights and activation tables copied from flash (CCM)" in text and "; the weights in the CCM apart)" in text
    text = kd2mcu("report", tmp_path / "b1").stdout  # L476, flash: no such line
    assert "RAM: weights copied" not in text and "apart" not in text


def test_layout_auto_gives_compact_only_where_fast_crowds_the_flash():
    from kd2mcu.codegen.render import weight_bytes
    from kd2mcu.commands.build import FLASH_KEPT, choose_layout

    model = random_model(np.random.default_rng(5), ModelShape(input_size=64, hidden=128, steps=10, classes=4))
    board = firmware.load_board("stm32f405")
    assert choose_layout(model, board)[0] == "fast"
    fast, compact = weight_bytes(model, "fast"), weight_bytes(model, "compact")
    board.memory = dict(board.memory, flash_size=str(compact + FLASH_KEPT))  # compact fits exactly, fast does not
    layout, why = choose_layout(model, board)
    assert layout == "compact" and f"({fast:,} B)" in why and f"{compact:,} B" in why
    board.memory = dict(board.memory, flash_size=str(compact + FLASH_KEPT - 1))  # neither fits: fast, the fastest
    assert choose_layout(model, board)[0] == "fast"


def test_weights_ram_with_layout_auto_takes_compact_where_only_compact_fits(tmp_path):
    from kd2mcu.codegen.render import weight_bytes

    model = random_model(np.random.default_rng(8), ModelShape(input_size=32, hidden=96, steps=10, classes=4))
    assert weight_bytes(model, "compact") <= 65536 < weight_bytes(model, "fast")
    (tmp_path / "m.json").write_text(model.to_json())
    proc = kd2mcu("build", tmp_path / "m.json", "--out", tmp_path / "b", "--weights", "ram")
    assert proc.returncode == 0, proc.stderr
    info = json.loads((tmp_path / "b" / "build.json").read_text())
    assert info["layout"] == "compact" and info["weights"] == "ram"
    assert "only the compact layout's weights fit the stm32f405's CCM" in info["placement"]["layout"]
    proc = kd2mcu("build", tmp_path / "m.json", "--out", tmp_path / "c", "--weights", "ram", "--layout", "fast")
    assert_user_error(proc, "--weights ram", "CCM has room for 65,536", "--layout compact")
    proc = kd2mcu("build", tmp_path / "m.json", "--out", tmp_path / "d")  # auto, auto: fast, split with flash
    info = json.loads((tmp_path / "d" / "build.json").read_text())
    assert (info["layout"], info["weights"]) == ("fast", "split") and "more than the stm32f405's CCM" in \
        info["placement"]["weights"]
