"""The model's footprint on its target and its measured speed.

Flash and RAM come from compiling the model's C alone for the board with arm-none-eabi-gcc and
reading its symbols (arm-none-eabi-nm): code, constants (weights, effective biases, the activation
table), static buffers; the state is the size of the state struct; the stack from gcc's
-fstack-usage. MACs are counted from the shapes. Instructions come from the last ``kd2mcu emulate``.
"""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Optional

from kd2mcu.codegen.buildfolder import (
    MODEL_FILE,
    SRC_DIR,
    model_name,
    read_build_info,
    read_emulate_info,
    read_validate_info,
)
from kd2mcu.codegen.render import PORTABLE_CFLAGS
from kd2mcu.interrupt import raise_from_now_on
from kd2mcu.quant.intmodel import IntModel
from kd2mcu.targets.firmware import (
    DEFAULT_BOARD,
    arm_tool,
    kernel_path,
    load_board,
    memory_bytes,
    weights_ram_bytes,
)


def macs(model: IntModel) -> dict:
    per_step = sum(4 * layer.hidden_size * (layer.input_size + layer.hidden_size) * len(layer.directions)
                   for layer in model.layers)
    head = model.head.num_classes * int(model.head.weight.shape[1])
    return {"macs_per_step": per_step, "head_macs": head,
            "macs_per_inference_at_max_steps": per_step * model.max_steps + head}


def footprint(build_dir: Path, opt: str = "-O2", portable: Optional[bool] = None) -> dict:
    """Flash and RAM of the model alone, compiled for the build's board; with the portable C path when
    ``portable`` (default: as the last ``kd2mcu emulate`` ran, whose instruction counts are merged in)."""
    d = Path(build_dir).resolve()  # the compiler runs in a temporary folder
    emulated = read_emulate_info(d)
    if portable is None:
        portable = bool(emulated and emulated.get("portable"))
    extra_cflags = [PORTABLE_CFLAGS] if portable else []
    model = IntModel.load(d / MODEL_FILE)
    name = model_name(d)
    board = load_board(read_build_info(d).get("target", DEFAULT_BOARD))
    gcc, nm = arm_tool("arm-none-eabi-gcc"), arm_tool("arm-none-eabi-nm")
    raise_from_now_on()  # a Ctrl-C from here on must unwind, to remove the work folder
    with tempfile.TemporaryDirectory() as tmp:
        obj = Path(tmp) / "model.o"
        subprocess.run([gcc, *board.cpu_flags, "-std=c99", opt, "-ffunction-sections", "-fdata-sections",
                        "-fstack-usage", *extra_cflags, "-I", str(d / SRC_DIR), "-c", str(d / SRC_DIR / f"{name}.c"), "-o", str(obj)],
                       check=True, capture_output=True, cwd=tmp)
        symbols = subprocess.run([nm, "-S", "--size-sort", str(obj)], capture_output=True, text=True,
                                 check=True).stdout.splitlines()
        frames = {}
        for line in (Path(tmp) / "model.su").read_text().splitlines():
            where, size, _ = line.split("\t")
            frames[where.rsplit(":", 1)[-1]] = int(size)
    sizes = {"code": 0, "constants": 0, "weights": 0, "flash_only": 0, "tables": 0, "preprocess": 0, "static_ram": 0}
    for line in symbols:
        _, size, kind, _sym = line.split()
        size = int(size, 16)
        if kind in "tT":
            sizes["code"] += size
        elif kind in "rR":
            sizes["constants"] += size
            if any(part in _sym for part in ("_RAW_", "_CLASS_NAMES", "_CODE_POINT")):
                sizes["preprocess"] += size  # normalization, class names, the UTF-8 code point table
            elif _sym.startswith(("kd2mcu_sigmoid_", "kd2mcu_tanh_")):  # the activation tables
                sizes["tables"] += size
            else:  # weights, embedding, biases
                sizes["weights"] += size
                if _sym.endswith("_W_FLASH"):  # --weights split: the units never copied to RAM
                    sizes["flash_only"] += size
        elif kind in "bBdD":
            sizes["static_ram"] += size
    S = sum(model.state_sizes())
    state = S + (S % 2) + 2 * S
    steps = [v for k, v in frames.items() if k.endswith("_step")]
    stack = frames.get(f"{name}_run", 0) + max(steps + [frames.get(f"{name}_head", 0)])
    out = {
        "target": board.name, "compiler_flags": " ".join(board.cpu_flags + [opt] + extra_cflags),
        "layout": read_build_info(d).get("layout", "fast"),
        "weights": read_build_info(d).get("weights", "flash"),
        "placement": read_build_info(d).get("placement", {}),
        "kernel_path": kernel_path(board, portable),
        "flash_code_bytes": sizes["code"], "flash_constant_bytes": sizes["constants"],
        "flash_weight_bytes": sizes["weights"], "flash_preprocess_bytes": sizes["preprocess"],
        "flash_total_bytes": sizes["code"] + sizes["constants"],
        "ram_state_bytes": state, "ram_static_buffer_bytes": sizes["static_ram"], "ram_stack_bytes": stack,
        "ram_total_bytes": state + sizes["static_ram"] + stack,
        **macs(model), "max_steps": model.max_steps,
    }
    if out["weights"] in ("ram", "split"):  # copied at start-up; flash keeps the load image
        room, region = weights_ram_bytes(board)
        copied = sizes["weights"] - sizes["flash_only"] + sizes["tables"]  # the activation tables go with them
        out.update({"ram_weight_bytes": copied, "flash_only_weight_bytes": sizes["flash_only"], "weights_ram": region,
                    "weights_ram_share": copied / room})
        if region == "RAM":  # the board's only RAM: the weights count in the model's RAM
            out["ram_total_bytes"] += copied
    flash, ram = memory_bytes(board.memory["flash_size"]), memory_bytes(board.memory["ram_size"])
    out.update({"part_flash_bytes": flash, "part_ram_bytes": ram, "core_clock_hz": board.core_clock_hz,
                "flash_share": out["flash_total_bytes"] / flash, "ram_share": out["ram_total_bytes"] / ram})
    if emulated is not None and bool(emulated.get("portable")) == portable:
        e = emulated
        out.update({k: e[k] for k in ("instructions_per_inference", "instructions_per_step", "measured_by",
                                      "samples", "mismatches") if k in e})
        mean_steps = e["instructions_per_inference"] / max(e["instructions_per_step"], 1e-9)
        out["instructions_per_mac"] = round(e["instructions_per_inference"] /
                                            (out["macs_per_step"] * mean_steps + out["head_macs"]), 2)
        if board.core_clock_hz:  # an estimate: one instruction a cycle, flash wait states not modelled
            hz = board.core_clock_hz
            longest = e["instructions_per_inference"] + e["instructions_per_step"] * (model.max_steps - mean_steps)
            out.update({"latency_basis": (f"estimate: the emulated instruction counts at {hz / 1e6:g} MHz, one "
                                          "instruction per cycle (flash wait states and stalls not modelled; "
                                          "no board measurement yet)"),
                        "latency_typical_ms": e["instructions_per_inference"] / hz * 1e3,
                        "typical_steps": round(mean_steps, 1),
                        "latency_longest_ms": longest / hz * 1e3})
    validated = read_validate_info(d)
    if validated is not None and "cycles_per_inference" in validated and validated.get("core_hz"):
        v = validated  # measured on a board: these replace the estimate
        hz, steps = float(v["core_hz"]), max(float(v["steps_per_inference"]), 1e-9)
        longest = v["cycles_per_inference"] * model.max_steps / steps
        out.update({"latency_basis": (f"measured on the board by kd2mcu validate ({v['timer']} cycles at "
                                      f"{hz / 1e6:g} MHz, {v['samples']} inputs; the longest input scaled by steps)"),
                    "latency_typical_ms": v["cycles_per_inference"] / hz * 1e3, "typical_steps": round(steps, 1),
                    "latency_longest_ms": longest / hz * 1e3, "board_cycles_per_inference": v["cycles_per_inference"]})
    if "latency_typical_ms" in out and board.power:
        watts = board.power["run_current_ma"] * 1e-3 * board.power["supply_v"]
        out.update({"energy_typical_uj": watts * out["latency_typical_ms"] * 1e3,
                    "energy_longest_uj": watts * out["latency_longest_ms"] * 1e3,
                    "energy_basis": (f"{board.power['run_current_ma']:g} mA x {board.power['supply_v']:g} V x latency; "
                                     f"{board.power['source']}")})
    return out


def format_report(r: dict) -> str:
    rows = [
        ("target", f"{r['target']} ({r['compiler_flags']})"),
        ("weight layout, kernel path", f"{r['layout']}, {r['kernel_path']}"),
        ("weights read from", "flash" if r.get("weights", "flash") == "flash" else
         f"{r['weights_ram']} ({r['ram_weight_bytes']:,} B with the activation tables, copied there at start-up "
         "from flash: no flash wait states on their reads)" + (
             f"; the other {r['flash_only_weight_bytes']:,} B of weights "
             "from flash" if r.get("weights") == "split" else "")),
        *[(f"{what} chosen because", why) for what, why in (("layout", r.get("placement", {}).get("layout")),
                                                           ("placement", r.get("placement", {}).get("weights"))) if why],
        ("flash: code", f"{r['flash_code_bytes']:,} B"),
        ("flash: weights + biases", f"{r['flash_weight_bytes']:,} B"),
        ("flash: pre-processing and class names", f"{r['flash_preprocess_bytes']:,} B"),
        ("flash: all constants (with the activation tables)", f"{r['flash_constant_bytes']:,} B"),
        ("flash: model total", f"{r['flash_total_bytes']:,} B ({r['flash_share']:.2%} of the part's "
                                f"{r['part_flash_bytes'] // 1024:,} KB)"),
        ("RAM: state (h, c)", f"{r['ram_state_bytes']:,} B"),
        ("RAM: static sequence buffer", f"{r['ram_static_buffer_bytes']:,} B"),
        ("RAM: stack (gcc -fstack-usage)", f"{r['ram_stack_bytes']:,} B"),
        *([(f"RAM: weights and activation tables copied from flash ({r['weights_ram']})",
            f"{r['ram_weight_bytes']:,} B ({r['weights_ram_share']:.2%} of it)")] if "ram_weight_bytes" in r else []),
        ("RAM: model total", f"{r['ram_total_bytes']:,} B ({r['ram_share']:.2%} of the part's "
                              f"{r['part_ram_bytes'] // 1024:,} KB"
                              f"{'; the weights in the ' + r['weights_ram'] + ' apart' if r.get('weights_ram') not in (None, 'RAM') else ''})"),
        ("MACs per time step", f"{r['macs_per_step']:,}"),
        (f"MACs per inference ({r['max_steps']} steps)", f"{r['macs_per_inference_at_max_steps']:,}"),
    ]
    if "instructions_per_inference" in r:
        rows += [("instructions per inference (last emulate)", f"{r['instructions_per_inference']:,}"),
                 ("instructions per time step", f"{r['instructions_per_step']:,}"),
                 ("instructions per MAC", f"{r['instructions_per_mac']}"),
                 ("measured by", r["measured_by"])]
        if "latency_typical_ms" in r:
            rows += [(f"latency, typical input ({r['typical_steps']:g} steps)", f"{r['latency_typical_ms']:.3f} ms"),
                     (f"latency, longest input ({r['max_steps']} steps)", f"{r['latency_longest_ms']:.3f} ms"),
                     ("latency from", r["latency_basis"])]
        if "energy_typical_uj" in r:
            rows += [("energy per inference, typical / longest", f"{r['energy_typical_uj']:.1f} / "
                                                                 f"{r['energy_longest_uj']:.1f} uJ (estimate)"),
                     ("energy from", r["energy_basis"])]
        else:
            rows.append(("energy per inference", "no run-mode current in the board file"))
    else:
        rows.append(("instructions", "not measured yet: run kd2mcu emulate DIR"))
    width = max(len(a) for a, _ in rows)
    return "\n".join(f"{a:<{width}}  {b}" for a, b in rows)
