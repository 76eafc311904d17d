"""C code generation: the integer model rendered through the Jinja templates in templates/.

This module only lays the model out (weight order, effective biases, constants as C literals);
the C itself lives in the templates. The output depends on nothing but the model and the name,
so building the same model twice gives byte-identical files.
"""
from __future__ import annotations

import keyword
import re
from pathlib import Path
from typing import Optional

import jinja2
import numpy as np

from kd2mcu import __version__
from kd2mcu.errors import UserError
from kd2mcu.quant import preprocess
from kd2mcu.quant.intmodel import GATES, IntModel
from kd2mcu.quant.qmath import SIGMOID_LUT, activation_tables
from kd2mcu.resources import resource_dir

KERNEL_HEADER = "kd2mcu_int8.h"
# The compiler flag that selects the portable C path of the kernel header instead of the DSP path.
PORTABLE_CFLAGS = "-DKD2MCU_PORTABLE"

# C99 keywords and names a generated symbol must not shadow (emlearn checks the same).
C_RESERVED = {
    "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else", "enum", "extern",
    "float", "for", "goto", "if", "inline", "int", "long", "register", "restrict", "return", "short", "signed",
    "sizeof", "static", "struct", "switch", "typedef", "union", "unsigned", "void", "volatile", "while",
    "_Bool", "_Complex", "_Imaginary", "main", "kd2mcu_int8",
} | set(keyword.kwlist)
# The model is written as NAME.h / NAME.c: a name that is a header of the C library (C99, POSIX, newlib)
# or of the firmware project would shadow it (compared case-insensitively, for case-insensitive disks).
HEADER_NAMES = {
    "assert", "complex", "ctype", "errno", "fenv", "float", "inttypes", "iso646", "limits", "locale", "math",
    "setjmp", "signal", "stdarg", "stdbool", "stddef", "stdint", "stdio", "stdlib", "string", "tgmath", "time",
    "wchar", "wctype", "stdalign", "stdatomic", "stdnoreturn", "threads", "uchar", "unistd", "fcntl", "strings",
    "malloc", "alloca", "endian", "reent", "newlib", "sys", "types", "cmsis_gcc", "arm_math", "arm_acle",
    "platform", "startup", "test_vectors", "harness", "firmware", "model",
}
# Identifiers and macros of the C library that a model name (and the NAME macro prefix) must not be.
LIBC_NAMES = {
    "NULL", "EOF", "errno", "stdin", "stdout", "stderr", "bool", "true", "false", "offsetof", "size_t",
    "ptrdiff_t", "wchar_t", "FILE", "abort", "exit", "system", "printf", "puts", "putchar", "malloc", "calloc",
    "realloc", "free", "memcpy", "memset", "memmove", "memcmp", "strlen", "strcpy", "strcmp", "abs", "labs",
    "div", "rand", "srand", "signal", "raise", "setjmp", "longjmp", "environ", "assert", "static_assert",
    "INT8_MIN", "INT8_MAX", "INT16_MIN", "INT16_MAX", "INT32_MIN", "INT32_MAX", "UINT8_MAX", "SIZE_MAX",
    "unix", "linux", "arm", "thumb",
}


def check_c_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,31}", name):
        raise UserError(f"--name {name!r} is not a C identifier: use letters, digits and _ (starting with a "
                        "letter, at most 32 characters)")
    if name in C_RESERVED or name.startswith("kd2mcu_int8"):
        raise UserError(f"--name {name!r} is a reserved C word: pick another model name")
    if name.lower() in HEADER_NAMES:
        raise UserError(f"--name {name!r} would write {name}.h, which shadows the C library's or the firmware's "
                        "header of that name: pick another model name, e.g. my_model")
    if name in LIBC_NAMES or name.upper() in {n.upper() for n in LIBC_NAMES if n.isupper()}:
        raise UserError(f"--name {name!r} is a name of the C library: pick another model name, e.g. my_model")
    return name


def c_comment(text: str, limit: int = 200) -> str:
    """Text safe inside a C block comment: printable ASCII only, no comment delimiters, one line.
    Anything else (newlines, ``*/``, non-ASCII) becomes ``?``; long texts are cut with ``...``."""
    out = "".join(ch if " " <= ch <= "~" else "?" for ch in str(text))
    while "*/" in out or "/*" in out:
        out = out.replace("*/", "*?").replace("/*", "/?")
    while "??" in out:  # no trigraphs (??/ would be a backslash)
        out = out.replace("??", "? ?")
    return out if len(out) <= limit else out[:limit - 3] + "..."


def c_array(values, per_line: int = 16) -> str:
    vals = [str(int(v)) if v != -(2**31) else "(-2147483647 - 1)" for v in np.asarray(values).ravel()]
    if not vals:
        return "    0"
    lines = [", ".join(vals[i:i + per_line]) for i in range(0, len(vals), per_line)]
    return "    " + ",\n    ".join(lines)


def c_int32(v: int) -> str:
    """An int32 literal that is valid C99 even for INT32_MIN."""
    v = int(v)
    return "INT32_C(-2147483647) - 1" if v == -(2**31) else f"INT32_C({v})" if abs(v) > 32767 else str(v)


C_STRING_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-.,:;/+()[]=#%&!*<>@^{}|~'")


def c_string(text: str) -> str:
    """A C string literal of ``text``'s UTF-8 bytes: letters, digits and plain punctuation as they are, every
    other byte (quotes, backslashes, ?, control and non-ASCII bytes) as a three-digit octal escape."""
    return '"' + "".join(chr(b) if chr(b) in C_STRING_SAFE else f"\\{b:03o}" for b in str(text).encode("utf-8")) + '"'


def c_float(v: float) -> str:
    """A float literal that is exactly the float32 nearest v (hex float, C99)."""
    return float(np.float32(v)).hex() + "f"


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resource_dir("templates"))),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        autoescape=False)


def _summary(model: IntModel) -> str:
    parts = []
    if model.is_token_model:
        parts.append(f"embedding {model.embedding.shape[0]}x{model.embedding.shape[1]}")
    else:
        parts.append(f"{model.input_size} features")
    for k, layer in enumerate(model.layers):
        kind = "bidirectional" if layer.bidirectional else "reverse" if layer.reverse else "unidirectional"
        parts.append(f"LSTM {layer.hidden_size} ({kind}, P={layer.cell_scale_power})")
    parts.append(f"{model.num_classes} classes")
    return " -> ".join(parts) + f"; up to {model.max_steps} steps."


def pair_words(w: np.ndarray) -> np.ndarray:
    """Weights [4 gates, H, n] in the fast layout of kd2mcu_int8.h: int32 words [H, groups, 2, 4 gates],
    each word two int16 (hi * 65536 + (lo & 0xFFFF)); within a group of 4 columns the two words of a
    gate hold columns (0, 2) and (1, 3), the order SXTB16 unpacks an int8 word into. Zero-padded."""
    G, H, n = w.shape
    groups = -(-n // 4)
    padded = np.zeros((G, H, groups * 4), np.int64)
    padded[:, :, :n] = w
    quad = padded.reshape(G, H, groups, 4)
    lo = quad[..., [0, 1]]
    hi = quad[..., [2, 3]]
    words = hi * 65536 + (lo & 0xFFFF)
    return words.transpose(1, 2, 3, 0)  # [H, groups, pair, gate]


def compact_words(w: np.ndarray) -> np.ndarray:
    """Weights [4 gates, H, n] in the compact layout of kd2mcu_int8.h: int32 words [H, groups, 4 gates],
    each word the int8 weights of 4 consecutive columns, column 4q + k in byte k. Zero-padded."""
    G, H, n = w.shape
    groups = -(-n // 4)
    padded = np.zeros((G, H, groups * 4), np.int64)
    padded[:, :, :n] = w
    b = padded.reshape(G, H, groups, 4) & 0xFF
    words = b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16) | (b[..., 3] << 24)
    words = np.where(words >= 2**31, words - 2**32, words)
    return words.transpose(1, 2, 0)  # [H, groups, gate]


def unpack_pairs(v: np.ndarray) -> np.ndarray:
    """What kd2mcu_unpack writes for the vector v (already minus its zero point): the pair words."""
    n = len(v)
    groups = -(-n // 4)
    padded = np.zeros(groups * 4, np.int64)
    padded[:n] = v
    quad = padded.reshape(groups, 4)
    return (quad[:, [2, 3]] * 65536 + (quad[:, [0, 1]] & 0xFFFF)).reshape(-1)


def fits_fast_rq(acc_bound: int, shift: int) -> bool:
    """kd2mcu_rq_fast needs |acc| * 2^(max(shift, 0) + 1) < 2^31 for every reachable acc."""
    return int(acc_bound) * 2 ** (max(int(shift), 0) + 1) < 2**31


LAYOUTS = ("fast", "compact")


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise UserError(f"unknown --layout {layout!r}: choose fast (int16 weight pairs for SMLAD, fastest) or "
                        "compact (int8 weights, half the weight flash)")
    return layout


# A direction whose weights hold at least this share of zero blocks (4 inputs x 4 gates of one unit: the
# granularity of the generated loops) is stored block-sparse: only the surviving blocks, with an index.
SPARSE_MIN = 0.25


def sparse_blocks(wx: np.ndarray, wh: np.ndarray) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(keep_x [H, x groups], keep_h [H, h groups]) where a direction of weights wx [H, 4, I], wh [H, 4, H]
    is sparse enough to store block-sparse (``SPARSE_MIN``), else None. A block survives unless its 16
    weights (4 gates x 4 columns of one unit) are all zero."""
    def keep(w):
        H, G, n = w.shape
        padded = np.zeros((H, G, -(-n // 4) * 4), np.int64)
        padded[:, :, :n] = w
        return np.any(padded.reshape(H, G, -1, 4) != 0, axis=(1, 3))
    kx, kh = keep(wx), keep(wh)
    zero = 1.0 - (kx.sum() + kh.sum()) / max(kx.size + kh.size, 1)
    return (kx, kh) if zero >= SPARSE_MIN else None


def _sparse_run(words: np.ndarray, keep: np.ndarray) -> list:
    """One run of the fast layout's self-describing block-sparse stream (kd2mcu_mac4_sparse): the first
    surviving group's number plus one, then per surviving group its first 4 words, the next group's number
    plus one (0 after the last) and its last 4 words."""
    groups = [int(g) + 1 for g in np.flatnonzero(keep)]
    run = [groups[0] if groups else 0]
    for k, g in enumerate(groups):
        run += [*words[g - 1, :4], groups[k + 1] if k + 1 < len(groups) else 0, *words[g - 1, 4:]]
    return run


def _direction_weights(bx, wxw, whw, blocks, fast: bool) -> dict:
    """The template's weight arrays of one direction, as per-unit ``rows`` of words: the 4 biases and every
    group's words (dense), or only the surviving groups' words (block-sparse): in the fast layout a stream
    that carries each group's number beside its words, in the compact one the words with a separate index
    and counts per unit."""
    H = len(bx)
    if blocks is None:
        return {"sparse": False, "indexed": False,
                "rows": list(np.concatenate([bx, wxw.reshape(H, -1), whw.reshape(H, -1)], axis=1))}
    kx, kh = blocks
    counts = {"kept_blocks": int(kx.sum() + kh.sum()), "blocks": int(kx.size + kh.size)}
    if fast:
        rows = [np.array([*bx[r], *_sparse_run(wxw[r], kx[r]), *_sparse_run(whw[r], kh[r])], dtype=np.int64)
                for r in range(H)]
        return {"sparse": True, "indexed": False, "rows": rows, **counts}
    rows, idx = [], []
    for r in range(H):
        gx, gh = np.flatnonzero(kx[r]), np.flatnonzero(kh[r])
        rows.append(np.concatenate([bx[r], wxw[r, gx].ravel(), whw[r, gh].ravel()]))
        idx += [*gx, *gh]
    return {"sparse": True, "indexed": True, "rows": rows, "idx": c_array(idx), "idx_len": max(len(idx), 1),
            "idx_bytes": 2 * max(len(idx), 1) + 2 * 2 * H, "nx": c_array(kx.sum(1)), "nh": c_array(kh.sum(1)), **counts}


def _place_rows(layers: list, room: Optional[int], fixed: int) -> None:
    """Split each direction's rows into the array marked KD2MCU_WEIGHTS (``w``: copied to RAM with
    --weights ram or split) and one always in flash (``w_flash``). ``room`` None: every row in the first.
    Else the RAM gets ``fixed`` bytes (tables, embedding, head, indices) and then whole units, layer by layer
    and direction by direction, while they fit ``room``; everything after the first unit that does not fit
    stays in flash."""
    budget = None if room is None else room - fixed
    for layer in layers:
        for d in layer["directions"]:
            rows = d.pop("rows")
            n = len(rows)
            if budget is not None:
                n = 0
                while n < len(rows) and budget >= 4 * len(rows[n]):
                    budget -= 4 * len(rows[n])
                    n += 1
                if n < len(rows):
                    budget = -1  # a strict prefix: nothing after this unit goes to RAM
            a, b = rows[:n], rows[n:]

            def dim(part):  # a dense direction's array size as units x words per unit
                return f"{len(part)} * {len(part[0])}" if part and not d["sparse"] else str(sum(map(len, part)))
            d.update(ram_units=n, w=c_array(np.concatenate(a)) if a else "", w_len=sum(map(len, a)), w_dim=dim(a),
                     w_flash=c_array(np.concatenate(b)) if b else "", w_flash_len=sum(map(len, b)), w_flash_dim=dim(b))


def context(model: IntModel, name: str, layout: str = "fast", ram_room: Optional[int] = None) -> dict:
    """The templates' context. ``ram_room``: bytes of RAM for --weights split (the hottest part: the tables
    and the first units' weights), None when the weights go all to one place (``_place_rows``)."""
    check_layout(layout)
    fast = layout == "fast"
    words = pair_words if fast else compact_words
    group_words = 8 if fast else 4
    layers = []
    offset = 0
    for k, layer in enumerate(model.layers):
        H, I = layer.hidden_size, layer.input_size
        begin = offset
        dirs = []
        z_x, z_h = layer.input.zero_point, layer.hidden.zero_point
        h_span = max(abs(-128 - z_h), abs(127 - z_h))
        fast_gates = True
        for dn, d in enumerate(layer.directions):
            g = [d.gates[n] for n in GATES]
            wx = np.stack([x.wx for x in g], axis=1).astype(np.int64)  # [H, 4, I]
            wh = np.stack([x.wh for x in g], axis=1).astype(np.int64)  # [H, 4, H]
            bx = np.stack([x.bias for x in g], axis=1).astype(np.int64) - z_x * wx.sum(2)
            # Largest |acc| a gate can reach: raw int8 input (|x| <= 128), h minus its zero point.
            bound_x = (np.abs(bx) + 128 * np.abs(wx).sum(2)).max(0)
            bound_h = (h_span * np.abs(wh).sum(2)).max(0)
            fast_gates &= all(fits_fast_rq(bound_x[n], x.input_mult[1]) and fits_fast_rq(bound_h[n], x.hidden_mult[1])
                              for n, x in enumerate(g))
            reverse = dn == 1 or layer.reverse
            label = "backward" if reverse else "forward"
            wxw = words(wx.transpose(1, 0, 2)).reshape(H, -(-I // 4), group_words)
            whw = words(wh.transpose(1, 0, 2)).reshape(H, -(-H // 4), group_words)
            blocks = sparse_blocks(wx, wh)
            dirs.append({
                "label": label, "reverse": reverse, "prefix": f"L{k}{label[0].upper()}",
                "fn": f"{name}_layer{k}_{label}_step", "state_offset": offset, "output_offset": dn * H,
                **_direction_weights(bx, wxw, whw, blocks, fast),
                "gates": [{"name": n, "activation": "kd2mcu_tanh16" if n == "g" else "kd2mcu_sigmoid16",
                           "mx": c_int32(x.input_mult[0]), "sx": x.input_mult[1],
                           "mh": c_int32(x.hidden_mult[0]), "sh": x.hidden_mult[1]} for n, x in zip(GATES, g)],
            })
            offset += H
        # The cell and hidden requantizations always take the fast path: |f * c|, |i * g|, |o * tanh| < 2^30
        # and IntModel.validate() allows them no left shift.
        layers.append({
            "index": k, "input_size": I, "hidden": H, "output_width": layer.output_size, "directions": dirs,
            "x_groups": -(-I // 4), "h_groups": -(-H // 4), "unit_words": 4 + group_words * (-(-I // 4) + -(-H // 4)),
            "group_words": group_words, "mac": "kd2mcu_mac4" if fast else "kd2mcu_mac4_compact",
            "state_begin": begin, "state_end": offset,
            "input_offset": begin - model.layers[k - 1].output_size if k else 0,
            "m_ig": c_int32(layer.input_to_cell[0]), "s_ig": layer.input_to_cell[1], "clip": layer.cell_clip,
            "tanh_shift": layer.cell_scale_power + 12, "m_h": c_int32(layer.hidden_out[0]),
            "s_h": layer.hidden_out[1], "z_h": z_h,
            "gate_pre": "kd2mcu_gate_pre_fast" if fast_gates else "kd2mcu_gate_pre",
        })
    hd = model.head
    head_w = hd.weight.astype(np.int64)
    # Bytes that go to RAM whenever any weight does: the tables, the embedding, the head, the sparse indices.
    fixed = TABLE_BYTES[layout] + head_w.size + 4 * model.num_classes + \
        (model.embedding.size if model.is_token_model else 0) + \
        sum(d.get("idx_bytes", 0) for layer in layers for d in layer["directions"])
    _place_rows(layers, ram_room, fixed)
    last = model.layers[-1]
    tokens = model.is_token_model
    streaming = model.streaming
    return {
        **_preprocess_context(model),
        "version": __version__, "name": name, "NAME": name.upper(), "source": c_comment(model.source or "(unnamed)"),
        "frame_stack": model.frame_stack, "sample_features": model.input_size // model.frame_stack,
        "fast": fast, "layout": layout,
        "summary": _summary(model), "tokens": tokens, "streaming": streaming,
        "input_size": model.input_size, "max_steps": model.max_steps, "num_classes": model.num_classes,
        "state_size": offset,
        "state_doc": ", ".join(f"layer {k} {d['label']} at {d['state_offset']}" for k, l in enumerate(layers)
                               for d in l["directions"]),
        "input_size_doc": "embedding width (one token id per step)" if tokens else "features per time step",
        "input_layout_doc": "steps token ids" if tokens else "steps x INPUT_SIZE int8, time-major",
        "step_doc": "one token id" if tokens else "INPUT_SIZE int8 features",
        "input_stride": 1 if tokens else model.input_size,
        "vocab_size": int(model.embedding.shape[0]) if tokens else 0,
        "embedding": c_array(model.embedding) if tokens else "",
        "input_scale": c_float(model.input.scale), "input_zero_point": model.input.zero_point,
        "input_inv_scale": c_float(1.0 / model.input.scale),
        "output_scale": c_float(hd.output.scale), "output_zero_point": hd.output.zero_point,
        "layers": layers, "ram_fixed_bytes": fixed,
        "seq_buffers": not streaming and len(layers) > 1,
        "seq_width": max((l["output_width"] for l in layers[:-1]), default=0),
        "head": {
            "width": int(hd.weight.shape[1]), "w": c_array(head_w),
            "b": c_array(hd.bias.astype(np.int64) - hd.input.zero_point * head_w.sum(1)),
            "z_out": hd.output.zero_point, "state_offset": offset - last.output_size,
            "classes": [{"index": c, "m": c_int32(hd.mult[c]), "s": int(hd.shift[c])}
                        for c in range(model.num_classes)],
        },
    }


# Bytes of the activation tables in kd2mcu_int8.h: the fast layout's two (base, slope) tables of 512 pairs,
# the compact one's 256-entry uint16 LUT. --weights ram copies them with the weights.
TABLE_BYTES = {"fast": 2 * 512 * 2 * 4, "compact": 256 * 2}


def weight_bytes(model: IntModel, layout: str = "fast") -> int:
    """Bytes of the arrays the generated C marks KD2MCU_WEIGHTS (weights, biases, sparse indices, embedding,
    head) and of the activation tables (``TABLE_BYTES``): what ``--weights ram`` copies to RAM, at most (the
    compiler may turn the head's biases into immediates)."""
    return sum(split_bytes(model, layout, None))


def split_bytes(model: IntModel, layout: str, ram_room: Optional[int]) -> tuple[int, int]:
    """(bytes copied to RAM, weight bytes left in flash) of ``weight_bytes`` with --weights split into
    ``ram_room`` bytes (None: all of them copied)."""
    ctx = context(model, "m", layout, ram_room)
    directions = [d for layer in ctx["layers"] for d in layer["directions"]]
    return (ctx["ram_fixed_bytes"] + sum(4 * d["w_len"] for d in directions),
            sum(4 * d["w_flash_len"] for d in directions))


def _preprocess_context(model: IntModel) -> dict:
    """What the templates need for the input's pre-processing and the class names (kd2mcu.quant.preprocess)."""
    labels = model.labels or [str(c) for c in range(model.num_classes)]
    ctx = {"class_names": [{"index": c, "literal": c_string(s), "comment": c_comment(s, 60)} for c, s in enumerate(labels)],
           "normalized": model.normalization is not None, "encoder": False}
    if model.is_token_model:
        if model.text is not None and model.text.encodable:
            cps, ids = preprocess.code_point_table(model)
            ctx.update(encoder=True, text_max_len=preprocess.text_max_len(model), code_points=c_array(cps, per_line=12),
                       code_point_ids=c_array(ids, per_line=12), code_point_count=len(cps),
                       code_point_slots=max(len(cps), 1))
        return ctx
    F = model.sample_features
    mean, inv = preprocess.raw_float_constants(model)
    mult, offset, shift = preprocess.raw_i16_constants(model)
    names = model.normalization.features if model.normalization else [f"feature {f}" for f in range(F)]
    stats = [f" (training mean {model.normalization.mean[f]:.6g}, std {model.normalization.std[f]:.6g})"
             if model.normalization else "" for f in range(F)]
    ctx.update(features=[{"doc": c_comment(f"{f}: {names[f]}", 60) + stats[f]} for f in range(F)],
               raw_mean=", ".join(c_float(v) for v in mean), raw_inv=", ".join(c_float(v) for v in inv),
               raw_mult=c_array(mult, per_line=8), raw_offset=c_array(offset, per_line=8),
               raw_shift=c_array(shift, per_line=16))
    return ctx


def render(model: IntModel, name: str, layout: str = "fast", ram_room: Optional[int] = None) -> dict[str, str]:
    """The generated sources: file name -> text (``ram_room``: for --weights split, see ``context``)."""
    check_c_name(name)
    env = _environment()
    ctx = context(model, name, layout, ram_room)
    sigmoid, tanh = activation_tables()
    tables = {"sigmoid_table": c_array(sigmoid, per_line=8), "tanh_table": c_array(tanh, per_line=8),
              "lut": c_array(SIGMOID_LUT, per_line=12)}
    return {
        KERNEL_HEADER: env.get_template("kd2mcu_int8.h.j2").render(version=__version__, **tables),
        f"{name}.h": env.get_template("model.h.j2").render(**ctx),
        f"{name}.c": env.get_template("model.c.j2").render(**ctx),
    }


def write_sources(model: IntModel, name: str, src_dir: Path, layout: str = "fast",
                  ram_room: Optional[int] = None) -> list[Path]:
    src_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fname, text in sorted(render(model, name, layout, ram_room).items()):
        p = src_dir / fname
        p.write_text(text)
        paths.append(p)
    return paths
