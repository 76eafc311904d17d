"""kd2mcu validate: the board firmware's serial runner over a real pty, bit-exact, and its errors.

The bit-exact checks run the very board firmware (full-clock set-up, the runner) in QEMU with the
emulated STM32F405's USART2 on a pty, through the same host code a board's port uses. The failure
tests put a stand-in board on a pty pair: line noise and a silent board cannot be made in QEMU.
"""
from __future__ import annotations

import binascii
import json
import os
import struct
import threading

import numpy as np
import pytest
from clitools import assert_user_error, kd2mcu
from conftest import require_arm, save_inputs, write_build

from kd2mcu.quant.random_model import ModelShape, random_inputs, random_model
from kd2mcu.targets.serial_link import frame

CASES = {
    "uni": ModelShape(input_size=6, hidden=16, steps=20, classes=4),
    "bi": ModelShape(input_size=5, hidden=8, steps=15, classes=3, layers=2, bidirectional=True),
    "text": ModelShape(input_size=8, hidden=12, steps=24, classes=2, vocab=40),
}


@pytest.mark.parametrize("kind", CASES)
def test_validate_in_qemu_is_bit_exact(kind, tmp_path):
    require_arm()
    rng = np.random.default_rng(21)
    model = random_model(rng, CASES[kind])
    write_build(model, tmp_path / "b")
    x, lengths = random_inputs(rng, model, 60, CASES[kind].steps)  # above 50: the progress bar runs too
    save_inputs(model, x, lengths, tmp_path / "d.npz")
    proc = kd2mcu("validate", tmp_path / "b", "--qemu", "--inputs", tmp_path / "d.npz", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(proc.stdout)
    assert r["samples"] == 60 and r["mismatches"] == 0
    assert r["instructions_per_inference"] > 0 and r["timer"] == "systick"
    assert (tmp_path / "b" / "firmware" / "build" / "board" / "firmware.elf").is_file()
    assert json.loads((tmp_path / "b" / "validate.json").read_text())["mismatches"] == 0


class StandIn:
    """The board end of a pty pair: answers frames with what ``respond(kind, payload)`` returns."""

    def __init__(self, respond):
        self.master, slave = os.openpty()
        self.port = os.ttyname(slave)
        self.slave = slave
        self.respond = respond
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        buf = b""
        while True:
            try:
                buf += os.read(self.master, 4096)
            except OSError:
                return
            while len(buf) >= 9 and buf[:2] == b"\xa5\x5a":
                length = struct.unpack("<I", buf[3:7])[0]
                if len(buf) < 9 + length:
                    break
                kind, payload, buf = buf[2:3], buf[7:7 + length], buf[9 + length:]
                answer = self.respond(kind, payload)
                if answer:
                    os.write(self.master, answer)

    def close(self):
        os.close(self.master)
        os.close(self.slave)


def _hello(model, **change) -> bytes:
    v = dict(version=1, input=model.input_size, tokens=0, classes=model.num_classes,
             state=sum(model.state_sizes()), steps=model.max_steps, hz=168_000_000, timer=0)
    v.update(change)
    return frame(b"H", struct.pack("<8I", *v.values()))


@pytest.fixture()
def build(tmp_path):
    require_arm()
    model = random_model(np.random.default_rng(22), CASES["uni"])
    write_build(model, tmp_path / "b")
    return model, tmp_path / "b"


def test_a_corrupted_frame_is_one_line(build):
    model, b = build

    def respond(kind, payload):
        good = _hello(model)
        return good[:-2] + bytes([good[-2] ^ 0xFF, good[-1]])  # one flipped checksum byte

    board = StandIn(respond)
    try:
        assert_user_error(kd2mcu("validate", b, "--port", board.port, "--timeout", "2"), "corrupted frame",
                          "checksum", "baud rate")
    finally:
        board.close()


def test_a_silent_board_times_out_in_one_line(build):
    model, b = build
    board = StandIn(lambda kind, payload: _hello(model) if kind == b"H" else None)  # never answers a sample
    try:
        assert_user_error(kd2mcu("validate", b, "--port", board.port, "--timeout", "1"), "no result from the board",
                          "within 1 s")
    finally:
        board.close()
    board = StandIn(lambda kind, payload: None)  # not even a hello
    try:
        assert_user_error(kd2mcu("validate", b, "--port", board.port, "--timeout", "1"), "no answer from the board",
                          "kd2mcu flash")
    finally:
        board.close()


def test_another_models_firmware_and_a_refused_frame(build):
    model, b = build
    board = StandIn(lambda kind, payload: _hello(model, classes=9))
    try:
        assert_user_error(kd2mcu("validate", b, "--port", board.port, "--timeout", "2"),
                          "another model's firmware", "9 classes")
    finally:
        board.close()
    board = StandIn(lambda kind, payload: _hello(model) if kind == b"H" else frame(b"E", b"\x01"))
    try:
        assert_user_error(kd2mcu("validate", b, "--port", board.port, "--timeout", "2"), "refused a frame",
                          "checksum error")
    finally:
        board.close()


def test_the_stand_in_speaks_the_firmwares_crc():
    """CRC-16/CCITT-FALSE: the check value of "123456789" is 0x29B1."""
    assert binascii.crc_hqx(b"123456789", 0xFFFF) == 0x29B1


def test_bad_ports_and_options(build, tmp_path):
    _, b = build
    assert_user_error(kd2mcu("validate", b, "--port", tmp_path / "nope"), "cannot open it")
    assert_user_error(kd2mcu("validate", b), "either --port")
    assert_user_error(kd2mcu("validate", b, "--port", "x", "--qemu"), "either --port")


def test_the_firmware_refuses_damaged_frames_and_keeps_going(build):
    """In QEMU, the runner answers a request with a bad checksum, an unknown type and too many steps with
    its error codes, then still answers a good request."""
    from kd2mcu.commands.validate import _qemu_pty
    from kd2mcu.errors import UserError
    from kd2mcu.quant.intmodel import IntModel
    from kd2mcu.targets.firmware import load_board, make
    from kd2mcu.targets.serial_link import Link

    model, b = build
    model = IntModel.load(b / "model.json")
    elf = make(b / "firmware", emulate=False)
    with _qemu_pty(load_board("stm32f405"), elf) as pty, Link(pty, timeout=5) as link:
        link.hello()
        bad = bytearray(frame(b"H"))
        bad[-1] ^= 0x55
        for request, code in ((bytes(bad), "checksum error"), (frame(b"Q"), "unknown frame type"),
                              (frame(b"I", struct.pack("<I", model.max_steps + 1)), "more steps")):
            link.send(request)
            with pytest.raises(UserError, match=code):
                link.receive(5)
        rc, logits, h, c, ticks = link.infer(model, np.zeros((3, model.input_size), np.int8), 3)
        assert rc == 0 and ticks > 0


def test_a_late_second_hello_answer_is_skipped(build):
    """A board still starting answers the repeated hellos late: those answers are not taken for results."""
    from kd2mcu.quant import reference
    from kd2mcu.quant.intmodel import IntModel

    _, b = build
    model = IntModel.load(b / "model.json")
    C, S = model.num_classes, sum(model.state_sizes())

    def respond(kind, payload):
        if kind == b"H":
            return _hello(model) * 2
        steps = struct.unpack("<I", payload[:4])[0]
        x = np.frombuffer(payload[4:], np.int8).reshape(1, steps, model.input_size)
        r = reference.run(model, x, np.array([steps]))
        body = struct.pack("<i", 0) + r["logits"][0].tobytes() + r["h"][0].tobytes() + \
            r["c"][0].astype("<i2").tobytes() + struct.pack("<I", 1000)
        assert len(body) == 4 + C + S + 2 * S + 4
        return frame(b"R", body)

    board = StandIn(respond)
    try:
        proc = kd2mcu("validate", b, "--port", board.port, "--timeout", "3", "--json")
        assert proc.returncode == 0, proc.stderr
        r = json.loads(proc.stdout)
        assert r["mismatches"] == 0 and r["cycles_per_inference"] == 1000 and r["ms_per_inference"] == pytest.approx(1000 / 168e3)
    finally:
        board.close()
