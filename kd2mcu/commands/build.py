"""``kd2mcu build``: a training run, a float ONNX model + calibration data, a student checkpoint or an
integer model.json -> a build folder (``kd2mcu.codegen.buildfolder``): quantization where needed
(``kd2mcu.quant``), the C sources (``kd2mcu.codegen.render``) and the firmware project
(``kd2mcu.targets.firmware``)."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

import numpy as np

from kd2mcu import __version__
from kd2mcu.codegen import render
from kd2mcu.codegen.buildfolder import BUILD_FILE, MODEL_FILE, SRC_DIR
from kd2mcu.dataio import Dataset, csv_feature_names, load_npz, read_csv, stack_frames
from kd2mcu.errors import UserError
from kd2mcu.outputs import OutputFolder, check_output, read_json, write_json
from kd2mcu.quant import reference
from kd2mcu.quant.floatmodel import CalibrationStats
from kd2mcu.quant.intmodel import IntModel
from kd2mcu.quant.ptq import quantize
from kd2mcu.targets import firmware


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def quality(model: IntModel, float_logits: np.ndarray, data: Dataset) -> dict:
    """How close the int8 model's dequantized logits are to the float model's on ``data``."""
    x_q = quantize_data(model, data)
    q = reference.run(model, x_q, data.lengths)["logits"]
    deq = reference.dequantize_logits(model, q).astype(np.float64)
    rel_l2 = float(np.linalg.norm(deq - float_logits) / max(np.linalg.norm(float_logits), 1e-12))
    agree = float(np.mean(deq.argmax(1) == float_logits.argmax(1)))
    out = {"samples": data.n, "relative_l2_error": rel_l2, "argmax_agreement": agree}
    if data.y is not None:
        out["float_accuracy"] = float(np.mean(float_logits.argmax(1) == data.y))
        out["int8_accuracy"] = float(np.mean(q.argmax(1) == data.y))
    return out


def quantize_data(model: IntModel, data: Dataset) -> np.ndarray:
    """The int8 input [N, T, F] of a feature model, or the token ids of a token model, checked."""
    if model.is_token_model:
        if not data.is_tokens:
            raise UserError(f"{data.path}: the model reads token ids, but x holds features {list(data.x.shape)}")
        V = model.embedding.shape[0]
        if data.x.min() < 0 or data.x.max() >= V:
            raise UserError(f"{data.path}: token ids must lie in 0..{V - 1} (the embedding has {V} rows)")
        return data.x.astype(np.int32)
    if data.is_tokens:
        raise UserError(f"{data.path}: the model reads float features [N, T, {model.input_size}], but x holds "
                        f"token ids {list(data.x.shape)}")
    if data.x.shape[2] != model.input_size:
        raise UserError(f"{data.path}: x has {data.x.shape[2]} features per step, the model expects "
                        f"{model.input_size}")
    return reference.quantize_input(model, data.x)


# Above this share of clipped input values sim and emulate warn: real data the model was calibrated on
# clips a few outliers at most; raw sensor counts or unnormalized features clip most values.
CLIPPED_WARNING = 0.01


def clipping(model: IntModel, data: Dataset) -> Optional[dict]:
    """Input values of a feature model saturated at -128/127 by the input quantization, over each sample's
    valid steps: {"clipped_inputs": n, "clipped_fraction": n / values}; None for a token model."""
    if model.is_token_model:
        return None
    from kd2mcu.quant.qmath import clipped_inputs

    N, T = data.x.shape[:2]
    lengths = np.full(N, T, np.int64) if data.lengths is None else np.asarray(data.lengths)
    steps = np.arange(T)[None, :] < lengths[:, None]
    valid = np.broadcast_to(steps[:, :, None], data.x.shape)
    n = clipped_inputs(data.x, 1.0 / model.input.scale, model.input.zero_point, valid)
    return {"clipped_inputs": n, "clipped_fraction": n / max(int(valid.sum()), 1)}


def clipping_warning(result: dict) -> Optional[str]:
    """The warning for a result with a clipped share above ``CLIPPED_WARNING``, or None."""
    share = result.get("clipped_fraction")
    if share is None or share <= CLIPPED_WARNING:
        return None
    return (f"kd2mcu: warning: {share:.1%} of the input values ({result['clipped_inputs']:,}) were clipped at "
            "-128/127 by the int8 input quantization: the inputs are likely not normalized as in training "
            "(the run's data.json holds the mean and std) or in other units than the training data")


def fit_frames(model: IntModel, data: Dataset) -> Dataset:
    """Inputs of a frame-stacked model given one sample per step ([N, T, F]) are stacked as in training;
    inputs that already hold k*F features per step are used as they are."""
    k = model.frame_stack
    if k == 1 or data.is_tokens or data.x.shape[2] != model.input_size // k:
        return data
    x, lengths = stack_frames(data.x, data.lengths, k)
    x_raw = data.x_raw
    if x_raw is not None and x_raw.dtype == np.int16:
        x_raw = stack_frames(x_raw.astype(np.float32), data.lengths, k)[0].astype(np.int16)
    elif x_raw is not None:  # the last frame padded with the mean (real 0), as in training
        mean = np.zeros(x_raw.shape[2], np.float32) if model.normalization is None else \
            np.asarray(model.normalization.mean, np.float32)
        N, T, F = x_raw.shape
        steps = -(-T // k)
        padded = np.tile(mean, (N, steps * k, 1))
        padded[:, :T] = x_raw
        n_len = np.full(N, T, np.int64) if data.lengths is None else np.asarray(data.lengths, np.int64)
        padded[np.arange(steps * k)[None, :] >= n_len[:, None]] = mean
        x_raw = padded.reshape(N, steps, k * F)
    return Dataset(x, data.y, lengths, data.path, x_raw, data.texts)


def load_inputs(model: IntModel, inputs) -> tuple[Dataset, np.ndarray]:
    """An --inputs file (.npz, or .csv as ``kd2mcu train`` reads it) for sim, emulate and validate: read,
    fitted to the model's frames, checked against its maximum steps and classes, quantized.
    Returns (data, x_q)."""
    data = csv_inputs(model, inputs) if Path(inputs).suffix.lower() == ".csv" else load_npz(inputs, "--inputs")
    data = fit_frames(model, data)
    if data.steps > model.max_steps:
        raise UserError(f"--inputs {inputs}: sequences have {data.steps} steps but the model was built for at most "
                        f"{model.max_steps}; rebuild with --max-steps {data.steps}")
    x_q = quantize_data(model, data)
    check_labels_fit(model, data)
    return data, x_q


def csv_inputs(model: IntModel, path) -> Dataset:
    """--inputs data.csv, in the layout ``kd2mcu train`` reads (``sample``, optional ``label`` and ``step``,
    the feature columns) and in the training's raw units: standardized with the model's own normalization
    exactly as training standardized its data (x), and kept raw (x_raw), so that sim, emulate and validate
    also check the generated C's ``NAME_quantize_input`` on them. Class-name labels are mapped to the
    model's classes; the feature columns must be the model's, in its order."""
    if model.is_token_model:
        raise UserError(f"--inputs {path}: a .csv holds sensor samples but this model reads token ids; give an .npz "
                        "with x (token ids) or texts")
    items, y = read_csv(path, "--inputs", labels=False)
    names = csv_feature_names(path)
    F = model.sample_features
    trained = model.normalization.features if model.normalization is not None else None
    if len(names) != F or (trained and list(trained) != names):
        want = ", ".join(trained) if trained else f"{F} feature columns"
        raise UserError(f"--inputs {path}: feature columns {', '.join(names)[:200]} but the model reads {want[:200]}; "
                        "give the columns it was trained on, in that order")
    if y is not None and y.dtype.kind == "U":
        index = {name: k for k, name in enumerate(model.labels or [])}
        unknown = next((v for v in y if v not in index), None)
        if unknown is not None:
            known = ", ".join(model.labels) if model.labels else "none: its labels are numbers"
            raise UserError(f"--inputs {path}: label {unknown[:40]!r} is not a class of the model (its class names: "
                            f"{known[:200]})")
        y = np.array([index[v] for v in y], np.int64)
    if y is not None and y.size and int(y.min()) < 0:
        raise UserError(f"--inputs {path}: label {int(y.min())} is not a class; labels are class numbers 0..C-1 "
                        "or class names")
    lengths = np.array([len(item) for item in items], np.int64)
    mean, std = (np.zeros(F), np.ones(F)) if model.normalization is None else \
        (np.asarray(model.normalization.mean, np.float64), np.asarray(model.normalization.std, np.float64))
    values = np.tile(mean, (len(items), int(lengths.max()), 1))  # float64 as parsed; padding: the mean
    for n, item in enumerate(items):
        values[n, :len(item)] = item
    with np.errstate(over="ignore"):
        x_raw = values.astype(np.float32)  # what firmware would hold: the raw path's input
    if not np.isfinite(x_raw).all():
        raise UserError(f"--inputs {path}: a value is beyond float32's range; give values in the training units")
    x = ((values - mean) / std).astype(np.float32)  # as training standardizes its float64 data
    x[np.arange(x.shape[1])[None, :] >= lengths[:, None]] = 0.0
    return Dataset(x, y, lengths, str(path), x_raw if model.normalization is not None else None)


def check_labels_fit(model: IntModel, data: Dataset) -> None:
    """Labels in an --inputs file are classes of the model, or its accuracy would be scored silently wrong."""
    if data.y is not None and data.y.size and int(data.y.max()) >= model.num_classes:
        raise UserError(f"{data.path}: label {int(data.y.max())} is not a class of the model (0.."
                        f"{model.num_classes - 1}); give the labels the model was trained with")


def build_from_onnx(onnx_path: Path, calib_path: Path, out: Path, force: bool, name: str,
                    max_steps: Optional[int] = None, tol: float = 1e-4,
                    target: str = firmware.DEFAULT_BOARD, vectors_from: Optional[Dataset] = None,
                    layout: str = "fast", inputs: tuple = (), frame_stack: int = 1, weights: str = "flash") -> dict:
    """Post-training quantization of a float ONNX model on ``calib_path``; the firmware's test vectors come
    from ``vectors_from`` (a held-out split) or else from the calibration data. ``inputs``: further files
    the build is made from (which ``out`` may not replace)."""
    from kd2mcu.quant.onnx_import import import_onnx

    render.check_c_name(name)
    check_layout_choice(layout)
    board = firmware.load_board(target)
    inputs = (*inputs, onnx_path, calib_path)  # the inputs are checked first, --out when writing
    data = load_npz(calib_path, "--calib")
    imp = import_onnx(onnx_path, data.x, tol=tol)
    fm = imp.model
    if fm.is_token_model != data.is_tokens:
        raise UserError(f"--calib {calib_path}: x shape {list(data.x.shape)} does not fit the model's input "
                        f"({'token ids [N, T]' if fm.is_token_model else 'features [N, T, F]'})")
    if not data.is_tokens and float(np.ptp(data.x)) == 0.0:
        raise UserError(f"--calib {calib_path}: every feature value is {float(data.x.flat[0]):g}; calibration needs "
                        "data that varies like the real input (e.g. your training split)")
    stats = CalibrationStats()
    float_logits = fm.forward(data.x, data.lengths, stats=stats)
    steps = int(max_steps or data.steps)
    if steps < data.steps:
        raise UserError(f"--max-steps {steps} is shorter than the calibration sequences ({data.steps} steps)")
    model = quantize(fm, stats, steps, source=f"{Path(onnx_path).name} (sha256 {_sha256(onnx_path)[:16]})")
    if frame_stack != 1:
        model.frame_stack = frame_stack
        model.validate()
    report = quality(model, float_logits, data)
    info = {
        "kd2mcu_version": __version__, "name": name, "source": str(onnx_path), "source_sha256": _sha256(onnx_path),
        "calibration": {"file": str(calib_path), "sha256": _sha256(calib_path), "samples": data.n},
        "import_max_abs_diff_vs_onnxruntime": imp.max_abs_diff, "quantization": report, "layout": layout,
        "weights": weights,
    }
    return write_build(model, info, out, force, name, board, _vectors(model, vectors_from or data), inputs)


def _vectors(model: IntModel, data: Dataset):
    """The first samples of ``data`` as the firmware's test vectors (x_q, lengths)."""
    k = min(firmware.DEFAULT_VECTORS, data.n)
    return quantize_data(model, data)[:k], None if data.lengths is None else data.lengths[:k]


def build_from_run(run: Path, out: Path, force: bool, name: str, target: str = firmware.DEFAULT_BOARD,
                   layout: str = "fast", max_steps: Optional[int] = None, weights: str = "flash") -> dict:
    """A training run's student: its integer model from quantization-aware training when the run has one
    (no second calibration), else post-training quantization of student.onnx on the run's training split.
    The firmware's test vectors come from the run's held-out test split."""
    run = Path(run)
    if not (run / "student.onnx").is_file() or not (run / "test.npz").is_file():
        raise UserError(f"{run} is not a kd2mcu training run (no student.onnx / test.npz): run kd2mcu train first")
    run_files = [p for p in sorted(run.iterdir()) if p.is_file()]  # what the build reads; --out may hold none
    check_output(out, force, run_files)
    test = load_npz(run / "test.npz", "the run's test split")
    if not (run / MODEL_FILE).is_file():  # (a run without QAT; frame stacking comes from its data.json)
        return build_from_onnx(run / "student.onnx", run / "calib.npz", out, force, name, max_steps,
                               target=target, vectors_from=test, layout=layout, inputs=tuple(run_files),
                               frame_stack=_run_frame_stack(run), weights=weights)
    render.check_c_name(name)
    check_layout_choice(layout)
    board = firmware.load_board(target)
    model = _with_max_steps(IntModel.load(run / MODEL_FILE), max_steps, test.steps, "the run's test split")
    model.source = _run_source(run)
    info = {"kd2mcu_version": __version__, "name": name, "source": str(run / MODEL_FILE),
            "source_sha256": _sha256(run / MODEL_FILE),
            "quantization": {"method": "quantization-aware training (the run's integer model)"}, "layout": layout,
            "weights": weights}
    return write_build(model, info, out, force, name, board, _vectors(model, test), run_files)


def _run_source(run: Path) -> str:
    """What the header's ``Source:`` line says of a build from a run: the run folder's name, its dataset
    and the digest of its model.json (no absolute path: the same run gives the same sources anywhere)."""
    info = read_json(run / "data.json", "train the run again") if (run / "data.json").is_file() else {}
    dataset = info.get("name") if isinstance(info, dict) and isinstance(info.get("name"), str) else "unknown"
    return (f"kd2mcu train run {Path(run).resolve().name} (dataset {dataset}; model.json sha256 "
            f"{_sha256(run / MODEL_FILE)[:16]})")


def _run_frame_stack(run: Path) -> int:
    info = read_json(run / "data.json", "train the run again") if (run / "data.json").is_file() else {}
    k = info.get("frame_stack", 1) if isinstance(info, dict) else 1
    if not isinstance(k, int) or not 1 <= k <= 64:
        raise UserError(f"{run / 'data.json'} is damaged (frame_stack {k!r}): train the run again")
    return k


def _with_max_steps(model: IntModel, max_steps: Optional[int], data_steps: int, what: str) -> IntModel:
    """The model with ``--max-steps`` applied (the longest sequence the C accepts)."""
    if max_steps is None:
        return model
    if max_steps < data_steps:
        raise UserError(f"--max-steps {max_steps} is shorter than {what} ({data_steps} steps)")
    model.max_steps = int(max_steps)
    return model.validate()


def build_from_intmodel(json_path: Path, out: Path, force: bool, name: str,
                        target: str = firmware.DEFAULT_BOARD, layout: str = "fast",
                        max_steps: Optional[int] = None, weights: str = "flash") -> dict:
    render.check_c_name(name)
    check_layout_choice(layout)
    board = firmware.load_board(target)
    check_output(out, force, [json_path])
    model = _with_max_steps(IntModel.load(json_path), max_steps, 1, "one step")
    info = {"kd2mcu_version": __version__, "name": name, "source": str(json_path),
            "source_sha256": _sha256(json_path), "layout": layout, "weights": weights}
    return write_build(model, info, out, force, name, board, inputs=[json_path])


def write_build(model: IntModel, info: dict, out: Path, force: bool, name: str,
                board: Optional["firmware.Board"] = None, vectors=None, inputs=()) -> dict:
    """Write model.json, src/, build.json and the firmware project (test vectors: ``vectors`` =
    (x_q, lengths), or seeded random inputs when the build has no data) into the build folder ``out``,
    atomically (``inputs``: the files it was made from, which ``out`` may not replace). A layout or weights
    placement of ``auto`` is chosen for the board (``resolve_placement``); returns the build.json written."""
    board = board or firmware.load_board(firmware.DEFAULT_BOARD)
    if vectors is None:
        from kd2mcu.quant.random_model import random_inputs

        steps = min(model.max_steps, 50)
        vectors = random_inputs(np.random.default_rng(0), model, firmware.DEFAULT_VECTORS, steps)
    layout, weights, why = resolve_placement(model, board, info.get("layout", "fast"), info.get("weights", "flash"))
    check_weights(model, layout, weights, board)
    info = dict(info, target=board.name, layout=layout, weights=weights, placement=why)
    if weights == "split":
        info["ram_weight_bytes"], info["flash_weight_bytes"] = render.split_bytes(model, layout, ram_room(board))
    with OutputFolder(out, force, "build", inputs) as folder:
        stage = folder.stage
        (stage / MODEL_FILE).write_text(model.to_json())
        render.write_sources(model, name, stage / SRC_DIR, layout, ram_room(board) if weights == "split" else None)
        firmware.write_project(model, name, board, stage / SRC_DIR, stage / firmware.FIRMWARE_DIR, *vectors,
                               weights=weights)
        write_json(stage / BUILD_FILE, info)
    return info


WEIGHTS_CHOICES = (firmware.AUTO, *firmware.WEIGHTS)
FLASH_KEPT = 64 * 1024  # --layout auto leaves at least this much of the part's flash to the application's code


def check_layout_choice(layout: str) -> None:
    if layout != firmware.AUTO:
        render.check_layout(layout)


def choose_layout(model: IntModel, board: "firmware.Board") -> tuple[str, str]:
    """``--layout auto``: (layout, why). The fast layout had the fewest modelled cycles on every size the
    memory-system cycle model measured (benchmarks/cycle_model/layouts.py: with flash wait states on the
    stm32f405 and on the stm32l476 it wins all four sizes, by 3-22%; with no wait state, or its weights in
    RAM, compact runs 1.4-1.5x its instructions). Compact is
    chosen only where fast's weights would not leave ``FLASH_KEPT`` of the part's flash and compact's do."""
    flash = firmware.memory_bytes(board.memory["flash_size"])
    fast, compact = render.weight_bytes(model, "fast"), render.weight_bytes(model, "compact")
    if fast > flash - FLASH_KEPT and compact <= flash - FLASH_KEPT:
        return "compact", (f"the fast layout's weights ({fast:,} B) would leave less than {FLASH_KEPT // 1024} KB of "
                           f"the {board.name}'s {flash // 1024:,} KB flash; compact's take {compact:,} B")
    return "fast", ("the fewest modelled cycles, or a tie with compact, on every size that "
                    "benchmarks/cycle_model/layouts.py measured, with and without flash wait states")


def resolve_placement(model: IntModel, board: "firmware.Board", layout: str, weights: str) -> tuple[str, str, dict]:
    """(layout, weights, why): ``auto`` choices made for the board (``choose_layout``, then
    ``firmware.choose_weights`` for that layout's weight bytes), the others kept as asked."""
    check_layout_choice(layout)
    if weights not in WEIGHTS_CHOICES:
        raise UserError(f"--weights {weights}: choose auto, flash, ram or split")
    why = {}
    if layout == firmware.AUTO and weights == "ram" and not _fits_ram(model, "fast", board) \
            and _fits_ram(model, "compact", board):
        layout, why["layout"] = "compact", ("--weights ram: only the compact layout's weights fit the "
                                            f"{board.name}'s {firmware.weights_ram_bytes(board)[1]}")
    elif layout == firmware.AUTO:
        layout, why["layout"] = choose_layout(model, board)
    else:
        why["layout"] = f"as asked (--layout {layout})"
    if weights == firmware.AUTO:
        weights, why["weights"] = firmware.choose_weights(board, render.weight_bytes(model, layout), layout)
        if weights == "split" and render.split_bytes(model, layout, ram_room(board))[0] > ram_room(board):
            weights, why["weights"] = "flash", (
                f"they take {render.weight_bytes(model, layout):,} B, and the activation tables, embedding and head "
                f"alone would not fit the {board.name}'s {firmware.weights_ram_bytes(board)[1]}")
    else:
        why["weights"] = f"as asked (--weights {weights})"
    return layout, weights, why


RAM_KEPT = 16 * 1024  # --weights ram into the board's only RAM leaves at least this for the application


def ram_room(board: "firmware.Board") -> int:
    """Bytes --weights ram or split may fill: the board's fast RAM, else its RAM less ``RAM_KEPT``."""
    size, region = firmware.weights_ram_bytes(board)
    return size if region != "RAM" else size - RAM_KEPT


def _fits_ram(model: IntModel, layout: str, board: "firmware.Board") -> bool:
    return render.weight_bytes(model, layout) <= ram_room(board)


def check_weights(model: IntModel, layout: str, weights: str, board: "firmware.Board") -> None:
    """``--weights ram``: the weights must fit the RAM they are copied to (the board's fast RAM, else its RAM
    less ``RAM_KEPT``)."""
    if weights not in firmware.WEIGHTS:
        raise UserError(f"--weights {weights}: choose flash, ram or split")
    if weights == "flash":
        return
    if weights == "split":
        if render.split_bytes(model, layout, ram_room(board))[0] > ram_room(board):
            raise UserError(f"--weights split: the {layout} layout's activation tables, embedding, head and indices alone "
                            "do not "
                            f"fit the {board.name}'s {firmware.weights_ram_bytes(board)[1]}; keep them in flash "
                            "(--weights flash)")
        return
    need = render.weight_bytes(model, layout)
    region, room = firmware.weights_ram_bytes(board)[1], ram_room(board)
    if need > room:
        raise UserError(f"--weights ram: the {layout} layout's weights and activation tables take {need:,} bytes but "
                        f"the {board.name}'s "
                        f"{region} has room for {room:,}; keep them in flash (--weights flash)"
                        f"{' or try --layout compact' if layout == 'fast' else ''}")


def build_from_checkpoint(checkpoint: Path, calib_path: Path, out: Path, force: bool, name: str,
                          max_steps: Optional[int] = None, target: str = firmware.DEFAULT_BOARD,
                          layout: str = "fast", weights: str = "flash") -> dict:
    """A TinyLSTM checkpoint (student.pt): exported to ONNX, then quantized post-training on ``calib_path``."""
    import tempfile

    from kd2mcu.train.student import example_input, export_onnx
    from kd2mcu.train.student import load as load_student

    check_layout_choice(layout)
    if not Path(checkpoint).is_file():
        raise UserError(f"{checkpoint}: no such student checkpoint")
    check_output(out, force, [checkpoint, calib_path])
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / f"{Path(checkpoint).stem}.onnx"
        student = load_student(checkpoint)
        export_onnx(student, example_input(student), onnx_path)
        return build_from_onnx(onnx_path, calib_path, out, force, name, max_steps, target=target, layout=layout,
                               inputs=(checkpoint,), weights=weights)
