"""The data files every command reads: an .npz with ``x`` and optional ``y`` and ``lengths`` (below), and
the CSV layout of ``kd2mcu train`` (``read_csv``: one row per time step, kd2mcu.train.datasets documents it).

- ``x``: float [N, T, F] feature sequences, or integer token ids [N, T] for an embedding model.
- ``y``: integer labels [N] (optional).
- ``lengths``: integer true lengths [N] in 1..T when sequences are padded (optional).
- ``x_raw``: the same samples as ``x`` in raw units, float [N, T, F] or int16 counts (optional; ``kd2mcu sim``
  then also checks the generated C's own pre-processing, ``NAME_quantize_input`` / ``NAME_quantize_raw_i16``).
- ``texts``: the raw strings of a text set, str [N] (optional; ``kd2mcu sim`` then also checks
  ``NAME_encode_utf8``).

Limits, checked before anything is allocated: each array at most ``MAX_ARRAY_BYTES`` and no larger than
the bytes the file really holds (a crafted header cannot make kd2mcu allocate what is not there);
labels in 0..``MAX_CLASSES - 1``; feature values finite in float32.
"""
from __future__ import annotations

import csv
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from kd2mcu.errors import UserError

MAX_ARRAY_BYTES = 4 << 30  # 4 GiB per array
MAX_CLASSES = 1000


@dataclass
class Dataset:
    x: np.ndarray
    y: Optional[np.ndarray]
    lengths: Optional[np.ndarray]
    path: str
    x_raw: Optional[np.ndarray] = None  # float32 or int16, the shape of x
    texts: Optional[list] = None  # str, one per sample

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def steps(self) -> int:
        return int(self.x.shape[1])

    @property
    def is_tokens(self) -> bool:
        return self.x.ndim == 2


def load_npz(path, option: str = "--inputs", names: bool = False) -> Dataset:
    """The data file at ``path``, checked; ``names``: labels may be class names (str y) as well as numbers."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{option} {path}: no such file")
    try:
        check_npz_sizes(p, option)
        with np.load(p, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UserError(f"{option} {path}: not a readable .npz file ({exc})") from None
    if "x" not in arrays:
        keys = ", ".join(sorted(arrays)) or "none"
        raise UserError(f"{option} {path}: no array 'x' (keys: {keys}); save with np.savez(path, x=..., y=...)")
    x = arrays["x"]
    if x.ndim not in (2, 3):
        raise UserError(f"{option} {path}: x has shape {list(x.shape)}; expected [N, T, F] features or [N, T] "
                        "token ids")
    if x.shape[0] == 0 or x.shape[1] == 0 or (x.ndim == 3 and x.shape[2] == 0):
        raise UserError(f"{option} {path}: x is empty (shape {list(x.shape)})")
    if x.ndim == 3:
        if not np.issubdtype(x.dtype, np.floating):
            raise UserError(f"{option} {path}: feature x must be float32 [N, T, F], got {x.dtype}")
        if not np.isfinite(x).all():
            bad = np.argwhere(~np.isfinite(x))[0]
            raise UserError(f"{option} {path}: x holds NaN or Inf (first at sample {bad[0]}, step {bad[1]}, "
                            f"feature {bad[2]})")
        with np.errstate(over="ignore"):
            x = x.astype(np.float32)
        if not np.isfinite(x).all():
            bad = np.argwhere(~np.isfinite(x))[0]
            raise UserError(f"{option} {path}: x holds a value beyond float32's range (first at sample {bad[0]}, "
                            f"step {bad[1]}, feature {bad[2]}); scale your features")
    elif not np.issubdtype(x.dtype, np.integer):
        raise UserError(f"{option} {path}: 2-D x must hold integer token ids [N, T], got {x.dtype}")
    N, T = x.shape[:2]
    y = arrays.get("y")
    if y is not None and names and y.dtype.kind == "U" and y.ndim == 1 and y.shape[0] == N:
        if any(not str(v).strip() for v in y):
            raise UserError(f"{option} {path}: a class name in y is empty; give every sample its class")
        y = np.array([str(v).strip() for v in y], dtype=str)
    elif y is not None:
        if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
            raise UserError(f"{option} {path}: y must be integer labels [N], got {y.dtype} {list(y.shape)}")
        if y.shape[0] != N:
            raise UserError(f"{option} {path}: x has {N} samples but y has {y.shape[0]}")
        check_labels(y, f"{option} {path}")
    lengths = arrays.get("lengths")
    if lengths is not None:
        if not np.issubdtype(lengths.dtype, np.integer) or lengths.shape != (N,):
            raise UserError(f"{option} {path}: lengths must be integers [N={N}], got {lengths.dtype} "
                            f"{list(lengths.shape)}")
        if lengths.min() < 1 or lengths.max() > T:
            raise UserError(f"{option} {path}: lengths must lie in 1..{T} (the padded length)")
        lengths = lengths.astype(np.int64)
    x_raw = arrays.get("x_raw")
    if x_raw is not None:
        if x.ndim != 3 or x_raw.shape != x.shape or not (np.issubdtype(x_raw.dtype, np.floating) or x_raw.dtype == np.int16):
            raise UserError(f"{option} {path}: x_raw must hold x's samples in raw units, float or int16 of shape "
                            f"{list(x.shape)}; got {x_raw.dtype} {list(x_raw.shape)}")
        if x_raw.dtype != np.int16:
            with np.errstate(over="ignore"):
                x_raw = x_raw.astype(np.float32)  # NaN and Inf allowed: the C's handling of them is checked too
    texts = arrays.get("texts")
    if texts is not None:
        if texts.dtype.kind != "U" or texts.shape != (N,):
            raise UserError(f"{option} {path}: texts must be strings [N={N}], got {texts.dtype} {list(texts.shape)}")
        texts = [str(t) for t in texts]
    if y is not None and y.dtype.kind != "U":
        y = y.astype(np.int64)
    return Dataset(x, y, lengths, str(path), x_raw, texts)


MAX_FRAME_STACK = 64


def stack_frames(x: np.ndarray, lengths, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame stacking: k consecutive samples of F features become one time step of k*F features
    (oldest sample first), so a T-step sequence runs ceil(T/k) LSTM steps. The last, partial frame is
    padded with zeros; a sequence of length L becomes ceil(L/k) steps. Row-major [T, F] memory is
    already [T/k, k*F]: firmware that buffers k samples passes them to NAME_step unchanged."""
    x = np.asarray(x)
    N, T, F = x.shape
    lengths = np.full(N, T, np.int64) if lengths is None else np.asarray(lengths, np.int64)
    if k == 1:
        return x, lengths
    steps = -(-T // k)
    padded = np.zeros((N, steps * k, F), dtype=x.dtype)
    padded[:, :T] = x
    valid = np.arange(steps * k)[None, :] < lengths[:, None]
    padded[~valid] = 0
    return padded.reshape(N, steps, k * F), -(-lengths // k)


def check_labels(y: np.ndarray, where: str) -> None:
    """Labels are class numbers 0..C-1 with C at most MAX_CLASSES."""
    if y.size and int(y.min()) < 0:
        raise UserError(f"{where}: labels must be integers 0..C-1, found {int(y.min())}")
    if y.size and int(y.max()) >= MAX_CLASSES:
        raise UserError(f"{where}: label {int(y.max())} is outside 0..{MAX_CLASSES - 1}; labels must be class "
                        f"numbers 0..C-1 (kd2mcu handles at most {MAX_CLASSES} classes)")


def check_npz_sizes(path: Path, option: str) -> None:
    """Read each member's .npy header (not its data) and refuse arrays above the limit or larger than the
    bytes stored for them."""
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with z.open(info) as f:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0  # 2.0 and 3.0 differ only in the header's encoding
                shape, _, dtype = read(f)
                header = f.tell()
            if dtype.hasobject:
                raise UserError(f"{option} {path}: {info.filename[:-4]} holds Python objects; save plain numbers")
            count = 1
            for s in shape:
                count *= int(s)
            size = count * dtype.itemsize
            name = info.filename[:-4]
            if size > MAX_ARRAY_BYTES:
                raise UserError(f"{option} {path}: {name} declares shape {list(shape)} ({size:,} bytes), above "
                                f"kd2mcu's limit of {MAX_ARRAY_BYTES:,} bytes per array; split the data")
            if size > info.file_size - header:
                raise UserError(f"{option} {path}: {name} declares shape {list(shape)} ({size:,} bytes) but the file "
                                f"holds {max(info.file_size - header, 0):,}: the file is damaged; save it again")


def csv_feature_names(path: str | Path) -> list[str]:
    """The feature columns of a CSV header (every column but sample, label and step), in file order."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        header = next(csv.reader(f), [])
    return [name.strip() for name in header if name.strip() not in ("sample", "label", "step")]


def read_csv(path: str | Path, option: str, labels: bool = True) -> tuple[list, np.ndarray]:
    """The samples of a CSV file (the layout ``kd2mcu train`` documents: a header row, columns ``sample``,
    ``label``, optional ``step``, the rest numeric features; one row per time step), in row order of first
    appearance: (float64 [T_i, F] arrays, labels: int64, or str where they are class names).
    ``labels=False``: the label column may be missing (the labels are then None). Any defect is a UserError."""
    try:
        return _read_csv(path, option, labels)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{option} {path}: not a readable UTF-8 .csv file ({exc})") from None


def _read_csv(path: str | Path, option: str, labels: bool) -> tuple[list, np.ndarray]:
    where = f"{option} {path}"
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [name.strip() for name in next(reader, [])]
        if not header:
            raise UserError(f"{where}: the file is empty; expected a header row like 'sample,label,feature1,...'")
        if len(header) == 1:
            sep = next((s for s in (";", "\t", "|") if s in header[0]), None)
            if sep is not None:
                raise UserError(f"{where}: the columns are separated by {sep!r}, not commas; save the file as "
                                "comma-separated CSV (pandas: df.to_csv(path, index=False))")
        twice = next((name for k, name in enumerate(header) if name in header[:k]), None)
        if twice is not None:
            raise UserError(f"{where}: the header names column '{twice[:40]}' twice; give every column its own name")
        missing = [name for name in ("sample", "label") if name not in header and (labels or name == "sample")]
        if missing:
            raise UserError(f"{where}: no column {' or '.join(repr(m) for m in missing)} in the header "
                            f"({', '.join(header)}); name the sequence id column 'sample' and the class 'label'")
        features = [k for k, name in enumerate(header) if name not in ("sample", "label", "step")]
        if not features:
            raise UserError(f"{where}: no feature columns besides sample, label and step; add at least one")
        sample_col = header.index("sample")
        label_col = header.index("label") if "label" in header else None
        step_col = header.index("step") if "step" in header else None
        rows: dict[str, list[tuple[float, int, list[str]]]] = {}  # sample -> (step, line, feature texts)
        labels: dict[str, tuple[int, int]] = {}  # sample -> (label, first line)
        previous = None  # the sample of the row before
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise UserError(f"{where}: line {line} has {len(row)} fields but the header has {len(header)}")
            sample = row[sample_col].strip()
            label = _csv_label(row[label_col], where, line) if label_col is not None else 0
            first = labels.setdefault(sample, (label, line))
            if first[0] != label:
                raise UserError(f"{where}: sample '{sample}' has label {first[0]} on line {first[1]} but {label} "
                                f"on line {line}; give every row of a sample the same label")
            if step_col is None and sample in rows and sample != previous:
                raise UserError(f"{where}: sample '{sample}' starts again on line {line} after other samples "
                                f"(its rows began on line {first[1]}); without a 'step' column the rows of a sample "
                                "must be consecutive: add a step column or give each sequence its own id")
            previous = sample
            step = _csv_number(row[step_col], where, line, "step") if step_col is not None else 0.0
            rows.setdefault(sample, []).append((step, line, [row[k] for k in features]))
    if not rows:
        raise UserError(f"{where}: no data rows after the header; add one row per time step")
    items = []
    for sample, steps in rows.items():
        if step_col is not None:
            steps.sort(key=lambda entry: entry[0])  # stable: equal steps are caught below
            for (a, line_a, _), (b, line_b, _) in zip(steps, steps[1:]):
                if a == b:
                    raise UserError(f"{where}: sample '{sample}' has step {a:g} twice (lines {line_a} and {line_b}); "
                                    "give each step once")
        items.append(_csv_features(sample, steps, [header[k] for k in features], where))
    if label_col is None:
        return items, None
    values = [labels[sample][0] for sample in rows]
    if any(isinstance(v, str) for v in values):  # class names: every label is a name, "0" too
        return items, np.array([str(v) for v in values], dtype=str)
    return items, np.array(values, dtype=np.int64)


def _csv_label(text: str, where: str, line: int) -> int | str:
    """A class number 0..C-1, or a class name (a label that is not a number at all)."""
    name = text.strip()
    try:
        value = int(name)
    except ValueError:
        try:
            float(name)
        except ValueError:
            if not name:
                raise UserError(f"{where}: the label on line {line} is empty; give every row its class") from None
            return name
        raise UserError(f"{where}: label '{text[:40]}' on line {line} is a number but not an integer; labels must "
                        "be class numbers 0..C-1 or class names") from None
    if value >= MAX_CLASSES:
        raise UserError(f"{where}: label {text.strip()[:40]} on line {line} is outside 0..{MAX_CLASSES - 1}; labels "
                        f"must be class numbers 0..C-1 (kd2mcu handles at most {MAX_CLASSES} classes)")
    return value


def _csv_number(text: str, where: str, line: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value):
        raise UserError(f"{where}: {column} '{text}' on line {line} is not a finite number")
    return value


def _csv_features(sample: str, steps: list[tuple[float, int, list[str]]], names: list[str], where: str) -> np.ndarray:
    """One sample's rows as float64 [T, F], with the exact cell named when a value is bad."""
    try:
        x = np.asarray([values for _, _, values in steps], dtype=str).astype(np.float64)
    except ValueError:  # the slow path finds the cell and says which
        x = np.array([[_csv_number(value, where, line, f"feature '{name}'") for name, value in zip(names, values)]
                      for _, line, values in steps])
    if not np.isfinite(x).all():
        step, feature = np.argwhere(~np.isfinite(x))[0]
        raise UserError(f"{where}: feature '{names[feature]}' is NaN or Inf on line {steps[step][1]} (sample "
                        f"'{sample}', step {step}); clean or drop that value")
    return x
