"""The data file format every command reads: an .npz with ``x`` and optional ``y`` and ``lengths``.

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
