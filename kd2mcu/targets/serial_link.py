"""The serial runner's protocol (templates/firmware_main.c.j2, the board build) from the host, over
pyserial: a real board's port, or the pty QEMU connects the emulated STM32's USART to.

Frames, both ways, little-endian: ``A5 5A``, type (1 byte), payload length (uint32), payload,
CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF; ``binascii.crc_hqx(..., 0xFFFF)``) of type, length
and payload (uint16).

- host ``H`` (empty) -> board ``H``: uint32 version, input size, token input, classes, state size,
  max steps, core clock in Hz, timer (0: DWT cycles, 1: SysTick ticks of the core clock).
- host ``I``: uint32 steps, the inputs (int8 per feature, or int32 token ids) -> board ``R``: int32
  return code, int8 logits, int8 h, int16 c, uint32 timer ticks of the ``NAME_run`` call.
- the board answers ``E`` (uint8 code) to a frame it cannot take.
"""
from __future__ import annotations

import binascii
import struct
import time
from dataclasses import dataclass

import numpy as np

from kd2mcu.errors import UserError
from kd2mcu.quant.intmodel import IntModel

MAGIC = b"\xa5\x5a"
VERSION = 1
BOARD_ERRORS = {1: "a checksum error (line noise, or another baud rate than the board's 115200)",
                2: "a length it cannot hold", 3: "an unknown frame type", 4: "more steps than the build allows"}
HELLO_TRIES = 10


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    body = kind + struct.pack("<I", len(payload)) + payload
    return MAGIC + body + struct.pack("<H", binascii.crc_hqx(body, 0xFFFF))


@dataclass
class BoardInfo:
    version: int
    input_size: int
    token_input: bool
    classes: int
    state_size: int
    max_steps: int
    core_hz: int
    timer: str  # "dwt" or "systick"


class Link:
    """One open port to the serial runner; every failure is a one-line UserError."""

    def __init__(self, port: str, baud: int = 115200, timeout: float = 10.0):
        try:
            import serial
        except ImportError:  # pragma: no cover - a dependency of the package
            raise UserError("pyserial is not installed: pip install pyserial") from None
        self.port, self.timeout = port, timeout
        self._serial_error = serial.SerialException
        try:
            self.s = serial.Serial(port, baud, timeout=min(timeout, 1.0), write_timeout=timeout)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise UserError(f"--port {port}: cannot open it ({_reason(exc)}); give the board's serial port, e.g. "
                            "/dev/ttyACM0") from None

    def close(self) -> None:
        self.s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---------------------------------------------------------------------------------------- frames
    def _read(self, n: int, deadline: float) -> bytes:
        out = b""
        while len(out) < n:
            try:
                chunk = self.s.read(n - len(out))
            except (self._serial_error, OSError) as exc:
                raise UserError(f"--port {self.port}: the connection broke ({_reason(exc)})") from None
            out += chunk
            if len(out) < n and time.monotonic() > deadline:
                raise TimeoutError
        return out

    def receive(self, timeout: float) -> tuple[bytes, bytes]:
        """(type, payload) of the next frame; TimeoutError when none completes in time."""
        deadline = time.monotonic() + timeout
        window = b""
        while window != MAGIC:  # hunt for the start of a frame, as the board does
            window = (window + self._read(1, deadline))[-2:]
        head = self._read(5, deadline)
        kind, length = head[:1], struct.unpack("<I", head[1:])[0]
        if length > 1 << 24:
            raise UserError(f"--port {self.port}: a corrupted frame from the board (length {length}); check the baud "
                            "rate and that the board runs kd2mcu's runner firmware")
        payload = self._read(length, deadline)
        crc = struct.unpack("<H", self._read(2, deadline))[0]
        if crc != binascii.crc_hqx(head + payload, 0xFFFF):
            raise UserError(f"--port {self.port}: a corrupted frame from the board (checksum {crc:04x}, expected "
                            f"{binascii.crc_hqx(head + payload, 0xFFFF):04x}); check the baud rate and the cable")
        if kind == b"E":
            code = payload[0] if payload else 0
            raise UserError(f"--port {self.port}: the board refused a frame: {BOARD_ERRORS.get(code, f'error {code}')}")
        return kind, payload

    def send(self, data: bytes) -> None:
        try:
            self.s.write(data)
            self.s.flush()
        except (self._serial_error, OSError) as exc:
            raise UserError(f"--port {self.port}: cannot write to it ({_reason(exc)})") from None

    # -------------------------------------------------------------------------------------- requests
    def hello(self) -> BoardInfo:
        """Ask the runner what it runs; the board may still be starting, so ask a few times."""
        wait = max(self.timeout / HELLO_TRIES, 0.5)
        for _ in range(HELLO_TRIES):
            self.s.reset_input_buffer()
            self.send(frame(b"H"))
            try:
                kind, payload = self.receive(wait)
            except TimeoutError:
                continue
            if kind == b"H" and len(payload) == 32:
                v = struct.unpack("<8I", payload)
                return BoardInfo(v[0], v[1], bool(v[2]), v[3], v[4], v[5], v[6], "dwt" if v[7] == 0 else "systick")
            raise UserError(f"--port {self.port}: the board answered a hello with a {kind!r} frame; flash the runner "
                            "firmware (kd2mcu flash DIR)")
        raise UserError(f"--port {self.port}: no answer from the board within {wait * HELLO_TRIES:.0f} s; flash this "
                        "build's firmware (kd2mcu flash DIR), check the port and reset the board")

    def infer(self, model: IntModel, x_q: np.ndarray, steps: int):
        """One sample: (rc, logits int8 [C], h int8 [S], c int16 [S], timer ticks)."""
        dtype = "<i4" if model.is_token_model else "i1"
        self.send(frame(b"I", struct.pack("<I", steps) + np.ascontiguousarray(x_q[:steps]).astype(dtype).tobytes()))
        deadline = time.monotonic() + self.timeout
        kind = b"H"
        while kind == b"H":  # a late answer to a repeated hello (the board was still starting) is skipped
            try:
                kind, payload = self.receive(max(deadline - time.monotonic(), 0.0))
            except TimeoutError:
                raise UserError(f"--port {self.port}: no result from the board within {self.timeout:g} s (--timeout); "
                                "reset the board and check that it runs this build's firmware") from None
        C, S = model.num_classes, sum(model.state_sizes())
        if kind != b"R" or len(payload) != 4 + C + S + 2 * S + 4:
            raise UserError(f"--port {self.port}: an unexpected {kind!r} frame of {len(payload)} bytes from the board")
        rc = struct.unpack("<i", payload[:4])[0]
        logits = np.frombuffer(payload, np.int8, C, 4)
        h = np.frombuffer(payload, np.int8, S, 4 + C)
        c = np.frombuffer(payload, "<i2", S, 4 + C + S)
        ticks = struct.unpack("<I", payload[-4:])[0]
        return rc, logits, h, c, ticks


def check_board(info: BoardInfo, model: IntModel, port: str) -> None:
    """The runner on the board runs this build's model (its shapes), or the comparison means nothing."""
    mine = (VERSION, model.input_size, model.is_token_model, model.num_classes, sum(model.state_sizes()),
            model.max_steps)
    theirs = (info.version, info.input_size, info.token_input, info.classes, info.state_size, info.max_steps)
    if mine != theirs:
        raise UserError(f"--port {port}: the board runs another model's firmware (input {info.input_size}, "
                        f"{info.classes} classes, state {info.state_size}, max steps {info.max_steps}; this build: "
                        f"{model.input_size}, {model.num_classes}, {sum(model.state_sizes())}, {model.max_steps}); "
                        "flash this build first: kd2mcu flash DIR")


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
