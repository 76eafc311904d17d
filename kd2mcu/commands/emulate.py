"""``kd2mcu emulate``: the firmware, cross-compiled, run in qemu-system-arm and checked bit for bit.

The samples are baked into the firmware's flash (in batches that fit, ``kd2mcu.targets.qemu``), the
firmware prints every output over semihosting, and each is compared with the Python reference.
"""
from __future__ import annotations

import json
import zipfile

import click
import numpy as np

from kd2mcu.codegen.buildfolder import EMULATE_FILE, MODEL_FILE, find_build, read_build_info
from kd2mcu.codegen.render import PORTABLE_CFLAGS
from kd2mcu.commands.build import clipping, load_inputs
from kd2mcu.dataio import check_npz_sizes
from kd2mcu.errors import UserError
from kd2mcu.outputs import write_file_atomically
from kd2mcu.quant import preprocess, reference
from kd2mcu.quant.intmodel import IntModel
from kd2mcu.targets.firmware import DEFAULT_BOARD, FIRMWARE_DIR, VECTORS_FILE, kernel_path, load_board
from kd2mcu.targets.hostsim import compare
from kd2mcu.targets.qemu import input_hash, run_in_qemu


def emulate(build_dir, inputs=None, opt: str = "-O2", timeout: float = 600.0, portable: bool = False) -> dict:
    """Run the build's firmware in QEMU on ``inputs`` (or its baked-in vectors) and compare every output
    with the Python reference. ``portable``: compile the portable C path instead of the DSP path."""
    d = find_build(build_dir)
    model = IntModel.load(d / MODEL_FILE)
    info = read_build_info(d)
    board = load_board(info.get("target", DEFAULT_BOARD))
    project = d / FIRMWARE_DIR
    if not (project / "Makefile").is_file():
        raise UserError(f"{d} has no firmware project: rebuild with kd2mcu build ... --target {board.name}")
    data, x_q, lengths, y, clipped = board_inputs(model, inputs, project)
    N = len(x_q)
    ref = reference.run(model, x_q, lengths)
    sim, instructions, source, sizes = run_in_qemu(project, model, board, x_q, lengths, opt, timeout,
                                                   extra_cflags=PORTABLE_CFLAGS if portable else "")
    mismatches, first = compare(ref, sim)
    hz = float(board.emulator["systick_hz"])
    per_inference = float(instructions.mean())
    total_steps = float(lengths.mean())
    result = {
        "build": str(d), "target": board.name, "machine": board.emulator["machine"], "samples": N,
        "mismatches": mismatches, "first_mismatch": None if first is None else str(first),
        "compiler_flags": " ".join(board.cpu_flags) + f" {opt}" + (f" {PORTABLE_CFLAGS}" if portable else ""),
        "portable": portable,
        "kernel_path": kernel_path(board, portable),
        "instructions_per_inference": round(per_inference),
        "instructions_per_step": round(per_inference / max(total_steps, 1.0), 1),
        "measured_by": (f"SysTick at {hz / 1e6:g} MHz under qemu -icount shift=0 (1 instruction = 1 ns): "
                        f"instructions = ticks x {1e9 / hz:.3f}, resolution one tick" if source == "systick"
                        else "DWT cycle counter"),
        "flash_bytes": sizes["flash_bytes"], "ram_bytes": sizes["ram_bytes"],
        "size_note": ("whole test firmware (arm-none-eabi-size: text+data, data+bss, plus the weights copied to RAM "
                      "at start-up), test vectors included"),
    }
    if y is not None:
        result["accuracy"] = float(np.mean(sim.logits.argmax(1) == y))
    result.update(clipped)
    if data is not None and data.x_raw is not None and model.normalization is not None:
        result.update(_check_raw(project, model, board, data, lengths, opt, timeout, portable))
    if data is not None and data.texts is not None and model.text is not None and model.text.encodable:
        result.update(_check_utf8(project, model, board, data, opt, timeout, portable))
    try:
        write_file_atomically(d / EMULATE_FILE, lambda tmp: tmp.write_text(json.dumps(result, indent=2) + "\n"))
    except UserError as exc:  # the check itself succeeded: say what is lost, keep the verdict
        click.echo(f"kd2mcu: warning: {exc} (kd2mcu report will not show these instructions)", err=True)
    return result


def board_inputs(model: IntModel, inputs, project):
    """What emulate and validate run: the --inputs file (fitted to the model's frames, checked, quantized) or
    else the test vectors baked into the firmware. Returns (data or None, x_q, lengths, labels or None,
    the clipping counts)."""
    if inputs is not None:
        data, x_q = load_inputs(model, inputs)
        lengths, y, clipped = data.lengths, data.y, clipping(model, data) or {}
    else:
        data, (x_q, lengths), y, clipped = None, _baked_vectors(project / VECTORS_FILE, model), None, {}
    lengths = np.full(len(x_q), x_q.shape[1], np.int64) if lengths is None else np.asarray(lengths, np.int64)
    return data, x_q, lengths, y, clipped


def _check_raw(project, model: IntModel, board, data, lengths, opt, timeout, portable) -> dict:
    """The raw-unit samples (``x_raw``) quantized on the emulated board by the model's own pre-processing:
    samples whose int8 inputs (their hash) or outputs differ from kd2mcu.quant.preprocess and the reference."""
    kind = "i16" if data.x_raw.dtype == np.int16 else "float"
    q = preprocess.quantize_raw_i16(model, data.x_raw) if kind == "i16" else preprocess.quantize_raw(model, data.x_raw)
    sim, _, _, _ = run_in_qemu(project, model, board, data.x_raw, lengths, opt, timeout,
                               extra_cflags=PORTABLE_CFLAGS if portable else "", raw=kind)
    wrong_q = np.array([sim.x_q[n] != input_hash(q[n, :lengths[n]]) for n in range(len(lengths))], dtype=bool)
    ref = reference.run(model, q, lengths)
    wrong = wrong_q | np.any(ref["logits"] != sim.logits, 1) | np.any(ref["h"] != sim.h, 1) | \
        np.any(ref["c"] != sim.c, 1) | (sim.rc != 0)
    out = {"raw_inputs": "int16 (NAME_quantize_raw_i16)" if kind == "i16" else "float (NAME_quantize_input)",
           "raw_mismatches": int(wrong.sum()), "raw_input_mismatches": int(wrong_q.sum())}
    if data.y is not None:
        out["raw_accuracy"] = float(np.mean(sim.logits.argmax(1) == data.y))
    return out


def _check_utf8(project, model: IntModel, board, data, opt, timeout, portable) -> dict:
    """The raw texts encoded on the emulated board by NAME_encode_utf8 and classified: texts whose token
    ids (their hash) or outputs differ from kd2mcu.quant.preprocess.encode_utf8 and the reference."""
    encoded = [t.encode("utf-8") for t in data.texts]
    counts = np.array([len(b) for b in encoded], np.int64)
    raw = np.zeros((len(encoded), max(int(counts.max(initial=1)), 1)), np.uint8)
    for n, b in enumerate(encoded):
        raw[n, :len(b)] = np.frombuffer(b, np.uint8)
    ids = [preprocess.encode_utf8(model, b) for b in encoded]
    lengths = np.array([len(i) for i in ids], np.int64)
    x = np.zeros((len(ids), max(int(lengths.max(initial=1)), 1)), np.int32)
    for n, i in enumerate(ids):
        x[n, :len(i)] = i
    sim, _, _, _ = run_in_qemu(project, model, board, raw, counts, opt, timeout,
                               extra_cflags=PORTABLE_CFLAGS if portable else "", raw="utf8")
    wrong_ids = np.array([sim.x_q[n] != input_hash(ids[n].astype("<i4").view(np.int8)) for n in range(len(ids))],
                         dtype=bool)
    ref = reference.run(model, x, lengths)
    wrong = wrong_ids | np.any(ref["logits"] != sim.logits, 1) | np.any(ref["h"] != sim.h, 1) | \
        np.any(ref["c"] != sim.c, 1) | (sim.rc != 0)
    out = {"utf8_mismatches": int(wrong.sum()), "utf8_token_mismatches": int(wrong_ids.sum())}
    if data.y is not None:
        out["utf8_accuracy"] = float(np.mean(sim.logits.argmax(1) == data.y))
    return out


def _baked_vectors(path, model: IntModel):
    """The test vectors ``kd2mcu build`` baked into the firmware (x_q, lengths), checked."""
    fix = "rebuild the folder with kd2mcu build, or give --inputs"
    if not path.is_file():
        raise UserError(f"{path} is missing: {fix}")
    try:
        check_npz_sizes(path, "the firmware's test vectors")
        with np.load(path, allow_pickle=False) as f:
            x_q, lengths = f["x_q"], f["lengths"].astype(np.int64)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        raise UserError(f"{path} is damaged: {fix}") from None
    shape_ok = x_q.ndim == 2 if model.is_token_model else (x_q.ndim == 3 and x_q.shape[2] == model.input_size)
    if not shape_ok or lengths.shape != (len(x_q),) or not np.issubdtype(x_q.dtype, np.integer) or \
            (lengths.size and (lengths.min() < 1 or lengths.max() > min(x_q.shape[1], model.max_steps))):
        raise UserError(f"{path} does not fit the build's model: {fix}")
    lo, hi = (0, model.embedding.shape[0] - 1) if model.is_token_model else (-128, 127)
    if x_q.size and (int(x_q.min()) < lo or int(x_q.max()) > hi):
        raise UserError(f"{path} holds values outside {lo}..{hi}: {fix}")
    return x_q, lengths
