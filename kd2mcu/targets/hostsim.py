"""Host simulator: compile host_sim/harness.c with a build's sources using gcc, run it, compare.

Executables are cached per build folder under ``DIR/.sim-cache/`` by a hash of the sources,
the harness and the compiler flags, so a second ``kd2mcu sim`` does not recompile.
"""
from __future__ import annotations

import atexit
import functools
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from kd2mcu.errors import UserError
from kd2mcu.interrupt import raise_from_now_on
from kd2mcu.quant import reference
from kd2mcu.quant.intmodel import IntModel
from kd2mcu.resources import resource_dir

FLAG_STREAM = 1
FLAG_INITIAL_STATE = 2
FLAG_RAW_FLOAT = 4
FLAG_RAW_I16 = 8
FLAG_UTF8 = 16
WARNINGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"]


def find_compiler(cc: Optional[str] = None) -> str:
    cc = cc or os.environ.get("CC", "gcc")
    path = shutil.which(cc)
    if path is None:
        raise UserError(f"C compiler {cc!r} not found: install gcc (apt-get install gcc) or set CC")
    return path


def compile_harness(src_dir: Path, name: str, opt: str = "-O2", sanitize: bool = False,
                    cache_dir: Optional[Path] = None, cc: Optional[str] = None) -> Path:
    """Compile the harness with the model in ``src_dir``; return the executable (cached)."""
    cc = find_compiler(cc)
    harness = resource_dir("host_sim") / "harness.c"
    sources = sorted(p for p in Path(src_dir).iterdir() if p.suffix in (".c", ".h"))
    flags = WARNINGS + [opt] + (SANITIZE if sanitize else [])
    defines = [f"-DKD_SIM_NAME={name}", f"-DKD_SIM_NAME_UPPER={name.upper()}",
               f'-DKD_SIM_HEADER="{name}.h"']
    h = hashlib.sha256()
    for part in [cc, *flags, *defines]:
        h.update(part.encode() + b"\0")
    for p in [harness, *sources]:
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    key = h.hexdigest()[:20]
    cache_dir = Path(cache_dir) if cache_dir else Path(src_dir).parent / ".sim-cache"
    exe = cache_dir / key / "harness"
    if exe.is_file():
        return exe
    try:
        exe.parent.mkdir(parents=True, exist_ok=True)
        probe = exe.with_name(f".probe{os.getpid()}")
        probe.touch()
        probe.unlink()
    except OSError:  # a read-only build folder: compile into a private temporary folder, uncached
        exe = Path(_private_dir()) / key / "harness"
        exe.parent.mkdir(parents=True, exist_ok=True)
    tmp = exe.with_name(f"harness.tmp{os.getpid()}")
    cmd = [cc, *flags, *defines, "-I", str(src_dir), str(harness),
           *[str(p) for p in sources if p.suffix == ".c"], "-o", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError(f"gcc failed on the generated sources in {src_dir}: {first_line(proc.stderr)}")
    os.replace(tmp, exe)
    return exe


@functools.lru_cache(maxsize=None)
def _private_dir() -> str:
    raise_from_now_on()  # a Ctrl-C from here on must unwind, to remove what is written
    path = tempfile.mkdtemp(prefix="kd2mcu-sim-")
    atexit.register(shutil.rmtree, path, True)
    return path


def first_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln]
    return (errors or lines or ["(no output)"])[0]


def exit_status(code: int) -> str:
    """'exit status 3' or 'killed by signal 11 (SIGSEGV)' for a subprocess return code."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown signal"
        return f"killed by signal {-code} ({name})"
    return f"exit status {code}"


@dataclass
class SimResult:
    rc: np.ndarray  # int32 [N]
    logits: np.ndarray  # int8 [N, C]
    h: np.ndarray  # int8 [N, state]
    c: np.ndarray  # int16 [N, state]
    step_h: Optional[list] = None  # per sample int8 [steps, state] (stream mode)
    stderr: str = ""
    predicted: Optional[np.ndarray] = None  # int32 [N]: NAME_predict's class
    margin: Optional[np.ndarray] = None  # int32 [N]: and its margin over the runner-up
    x_q: Optional[list] = None  # per sample the int8 inputs [steps, F] the C quantized (raw modes)
    tokens: Optional[list] = None  # per text the token ids NAME_encode_utf8 wrote (utf8 mode)


def run_harness(exe: Path, model: IntModel, x_q: np.ndarray, lengths=None, stream: bool = False,
                h0: Optional[np.ndarray] = None, c0: Optional[np.ndarray] = None, raw: Optional[str] = None) -> SimResult:
    """Run every sample of int8 features [N, T, F] (or token ids [N, T]) through the compiled model.

    ``raw="float"`` (``"i16"``): ``x_q`` holds raw float32 (int16) samples instead, which the C quantizes
    with ``NAME_quantize_input`` (``NAME_quantize_raw_i16``); the result's ``x_q`` holds what it made."""
    x_q = np.asarray(x_q)
    N, T = x_q.shape[:2]
    lengths = np.full(N, T, dtype=np.int64) if lengths is None else np.asarray(lengths, dtype=np.int64)
    S = sum(model.state_sizes())
    C = model.num_classes
    flags = (FLAG_STREAM if stream else 0) | (FLAG_INITIAL_STATE if h0 is not None else 0)
    if h0 is not None and not stream:
        raise ValueError("an initial state needs stream=True (run always starts from the reset state)")
    in_dtype = np.dtype("<i4") if model.is_token_model else np.dtype("i1")
    if raw is not None:
        if model.is_token_model or raw not in ("float", "i16"):
            raise ValueError("raw samples are float or i16, for a feature model")
        flags |= FLAG_RAW_FLOAT if raw == "float" else FLAG_RAW_I16
        in_dtype = np.dtype("<f4") if raw == "float" else np.dtype("<i2")
    parts = [b"KDS1", np.array([N, flags], dtype="<i4").tobytes()]
    for n in range(N):
        steps = int(lengths[n])
        parts.append(np.array([steps], dtype="<i4").tobytes())
        parts.append(np.ascontiguousarray(x_q[n, :steps]).astype(in_dtype).tobytes())
        if h0 is not None:
            parts.append(np.asarray(h0[n], dtype=np.int8).tobytes())
            parts.append(np.asarray(c0[n], dtype="<i2").tobytes())
    out, stderr = _execute(exe, b"".join(parts))
    rc = np.empty(N, np.int32)
    logits = np.empty((N, C), np.int8)
    h = np.empty((N, S), np.int8)
    c = np.empty((N, S), np.int16)
    predicted, margin = np.empty(N, np.int32), np.empty(N, np.int32)
    step_h = [] if stream else None
    quantized = [] if raw is not None else None
    F = model.input_size
    pos = 0
    for n in range(N):
        pos = _read_outputs(out, pos, n, rc, logits, h, c, predicted, margin)
        steps = int(lengths[n])
        if stream:
            step_h.append(np.frombuffer(out, np.int8, steps * S, pos).reshape(steps, S))
            pos += steps * S
        if raw is not None:
            quantized.append(np.frombuffer(out, np.int8, steps * F, pos).reshape(steps, F))
            pos += steps * F
    if pos != len(out):
        raise RuntimeError(f"host simulator wrote {len(out)} bytes, expected {pos}")
    return SimResult(rc, logits, h, c, step_h, stderr, predicted, margin, quantized)


def run_utf8(exe: Path, model: IntModel, texts: list[bytes]) -> SimResult:
    """Encode and classify every UTF-8 text with the compiled model's ``NAME_encode_utf8`` and
    ``NAME_classify_utf8``; the result's ``tokens`` holds the ids it encoded."""
    N, S, C = len(texts), sum(model.state_sizes()), model.num_classes
    parts = [b"KDS1", np.array([N, FLAG_UTF8], dtype="<i4").tobytes()]
    for text in texts:
        parts += [np.array([len(text)], dtype="<i4").tobytes(), bytes(text)]
    out, stderr = _execute(exe, b"".join(parts))
    rc, logits = np.empty(N, np.int32), np.empty((N, C), np.int8)
    h, c = np.empty((N, S), np.int8), np.empty((N, S), np.int16)
    predicted, margin = np.empty(N, np.int32), np.empty(N, np.int32)
    tokens = []
    pos = 0
    for n in range(N):
        pos = _read_outputs(out, pos, n, rc, logits, h, c, predicted, margin)
        count = int(np.frombuffer(out, "<i4", 1, pos)[0])
        tokens.append(np.frombuffer(out, "<i4", count, pos + 4).copy())
        pos += 4 + 4 * count
    if pos != len(out):
        raise RuntimeError(f"host simulator wrote {len(out)} bytes, expected {pos}")
    return SimResult(rc, logits, h, c, None, stderr, predicted, margin, None, tokens)


def _execute(exe: Path, data: bytes) -> tuple[bytes, str]:
    raise_from_now_on()
    with tempfile.TemporaryDirectory(prefix="kd2mcu-sim-") as tmp:
        inp, outp = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
        inp.write_bytes(data)
        proc = subprocess.run([str(exe), str(inp), str(outp)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise UserError(f"the generated C failed in the host simulator ({exit_status(proc.returncode)}): "
                            f"{first_line(proc.stderr)[:300]}; this is a bug of the generated code, please report "
                            "it with the build folder")
        return outp.read_bytes(), proc.stderr


def _read_outputs(out: bytes, pos: int, n: int, rc, logits, h, c, predicted, margin) -> int:
    """One sample's fixed outputs (return code, logits, state, prediction) from ``pos``; returns the new pos."""
    C, S = logits.shape[1], h.shape[1]
    rc[n] = np.frombuffer(out, "<i4", 1, pos)[0]
    pos += 4
    logits[n] = np.frombuffer(out, np.int8, C, pos)
    pos += C
    h[n] = np.frombuffer(out, np.int8, S, pos)
    pos += S
    c[n] = np.frombuffer(out, "<i2", S, pos)
    pos += 2 * S
    predicted[n], margin[n] = np.frombuffer(out, "<i4", 2, pos)
    return pos + 8


@dataclass
class Mismatch:
    sample: int
    tensor: str
    index: int
    reference: int
    simulated: int

    def __str__(self) -> str:
        return (f"sample {self.sample}, tensor {self.tensor}, index {self.index}: "
                f"reference {self.reference}, C {self.simulated}")


def compare(ref: dict, sim: SimResult) -> tuple[int, Optional[Mismatch]]:
    """Number of samples with any differing bit, and the first difference."""
    bad = np.zeros(len(sim.rc), dtype=bool)
    first: Optional[Mismatch] = None
    for tensor in ("logits", "h", "c"):
        a, b = np.asarray(ref[tensor]), getattr(sim, tensor)
        diff = a != b
        bad |= diff.any(axis=1)
        if first is None and diff.any():
            n, i = np.argwhere(diff)[0]
            first = Mismatch(int(n), tensor, int(i), int(a[n, i]), int(b[n, i]))
    bad |= sim.rc != 0
    if first is None and (sim.rc != 0).any():
        n = int(np.argmax(sim.rc != 0))
        first = Mismatch(n, "return code", 0, 0, int(sim.rc[n]))
    return int(bad.sum()), first


def check(exe: Path, model: IntModel, x_q: np.ndarray, lengths=None) -> tuple[SimResult, int, Optional[Mismatch]]:
    """Run int8 inputs through the compiled model and the Python integer reference; return the simulator's
    outputs, the number of samples with any differing bit, and the first difference."""
    sim = run_harness(exe, model, x_q, lengths)
    mismatches, first = compare(reference.run(model, x_q, lengths), sim)
    return sim, mismatches, first
