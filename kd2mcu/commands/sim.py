"""``kd2mcu sim``: the generated C, compiled for the host, against the Python integer reference."""
from __future__ import annotations

from typing import Optional

import numpy as np

from kd2mcu.codegen.buildfolder import MODEL_FILE, SRC_DIR, find_build, model_name
from kd2mcu.commands.build import clipping, load_inputs
from kd2mcu.errors import UserError
from kd2mcu.quant import preprocess, reference
from kd2mcu.quant.intmodel import IntModel
from kd2mcu.targets import hostsim


def simulate(build_dir, inputs, opt: str = "-O2", sanitize: bool = False, cc: Optional[str] = None) -> dict:
    d = find_build(build_dir)
    model = IntModel.load(d / MODEL_FILE)
    data, x_q = load_inputs(model, inputs)
    exe = hostsim.compile_harness(d / SRC_DIR, model_name(d), opt=opt, sanitize=sanitize, cc=cc)
    sim, mismatches, first = hostsim.check(exe, model, x_q, data.lengths)
    result = {
        "build": str(d), "inputs": str(inputs), "samples": data.n, "mismatches": mismatches,
        "first_mismatch": None if first is None else str(first), "compiler_flags": opt + (" +sanitizers" if sanitize else ""),
    }
    result.update(clipping(model, data) or {})
    result["predict_mismatches"] = int(np.sum(sim.predicted != sim.logits.argmax(1)))
    if data.x_raw is not None and not model.is_token_model:
        result.update(check_raw(exe, model, data) if model.normalization is not None else
                      {"raw_skipped": "x_raw not checked: the model holds no normalization (build it from the "
                                      "training run, kd2mcu build RUN)"})
    if data.texts is not None and model.is_token_model:
        result.update(check_utf8(exe, model, data) if model.text is not None and model.text.encodable else
                      {"utf8_skipped": "texts not checked: the model holds no character vocabulary (build it from "
                                       "the training run, kd2mcu build RUN)"})
    if data.y is not None:
        result["accuracy"] = float(np.mean(sim.logits.argmax(1) == data.y))
    result["_logits"] = sim.logits
    result["_dequantized"] = reference.dequantize_logits(model, sim.logits)
    return result


def check_raw(exe, model: IntModel, data) -> dict:
    """The same samples in raw units through the generated C's own pre-processing (``NAME_quantize_input``
    for float, ``NAME_quantize_raw_i16`` for int16 ``x_raw``): samples where the int8 inputs it made, or the
    outputs, differ from ``kd2mcu.quant.preprocess`` and the reference by any bit."""
    if model.is_token_model:
        raise UserError(f"{data.path}: x_raw is for a feature model; this one reads token ids")
    kind = "i16" if data.x_raw.dtype == np.int16 else "float"
    q = preprocess.quantize_raw_i16(model, data.x_raw) if kind == "i16" else preprocess.quantize_raw(model, data.x_raw)
    lengths = np.full(data.n, data.steps, np.int64) if data.lengths is None else data.lengths
    sim = hostsim.run_harness(exe, model, data.x_raw, lengths, raw=kind)
    bad_q = np.array([np.any(sim.x_q[n] != q[n, :lengths[n]]) for n in range(data.n)], dtype=bool)
    ref = reference.run(model, q, lengths)
    bad = bad_q | np.any(ref["logits"] != sim.logits, 1) | np.any(ref["h"] != sim.h, 1) | np.any(ref["c"] != sim.c, 1)
    out = {"raw_inputs": "int16 (NAME_quantize_raw_i16)" if kind == "i16" else "float (NAME_quantize_input)",
           "raw_mismatches": int(bad.sum()), "raw_input_mismatches": int(bad_q.sum())}
    if data.y is not None:
        out["raw_accuracy"] = float(np.mean(sim.logits.argmax(1) == data.y))
    return out


def check_utf8(exe, model: IntModel, data) -> dict:
    """The raw texts through the generated ``NAME_encode_utf8`` and ``NAME_classify_utf8``: texts whose token
    ids differ from ``kd2mcu.quant.preprocess.encode_utf8`` or from the ids in x (the training encoding), or
    whose outputs differ from the reference, by any bit."""
    if model.text is None or not model.text.encodable:
        raise UserError(f"{data.path}: texts need a text model with a character vocabulary (a run on text data "
                        "has one); this model has none")
    encoded = [t.encode("utf-8") for t in data.texts]
    sim = hostsim.run_utf8(exe, model, encoded)
    mine = [preprocess.encode_utf8(model, b) for b in encoded]
    lengths = np.array([len(m) for m in mine], np.int64)
    bad_tokens = np.array([not np.array_equal(a, b) for a, b in zip(sim.tokens, mine)], dtype=bool)
    x_len = data.lengths if data.lengths is not None else np.full(data.n, data.steps, np.int64)
    differs_from_x = np.array([len(m) != x_len[n] or np.any(data.x[n, :len(m)] != m) for n, m in enumerate(mine)],
                              dtype=bool)
    ids = np.zeros((data.n, max(int(lengths.max(initial=0)), 1)), np.int32)
    for n, m in enumerate(mine):
        ids[n, :len(m)] = m
    ref = reference.run(model, ids, lengths)
    bad = bad_tokens | np.any(ref["logits"] != sim.logits, 1) | np.any(ref["h"] != sim.h, 1) | (sim.rc != 0)
    out = {"utf8_mismatches": int(bad.sum()), "utf8_token_mismatches": int(bad_tokens.sum()),
           "utf8_differs_from_x": int(differs_from_x.sum())}
    if data.y is not None:
        out["utf8_accuracy"] = float(np.mean(sim.logits.argmax(1) == data.y))
    return out
