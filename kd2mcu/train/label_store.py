"""A folder of teacher labels (``kd2mcu label --out LABELS``): shards plus a manifest.

Layout::

    LABELS/.kd2mcu          marker: a folder kd2mcu made (kind "labels")
    LABELS/manifest.json    rows, shard size, classes, the teacher's and the corpus's SHA-256, the
                            kd2mcu version; "complete" once every shard is there, with each shard's SHA-256
    LABELS/shard-00000.npz  rows [start, stop): logits float32 [n, C], optional hidden_K float16 [n, D]

Every file is written under a temporary name and renamed into place, so a shard that exists under
its own name is whole: a rerun after an interruption (Ctrl-C, a killed process, a lost machine) keeps
the shards that match the manifest and computes only the others. A folder holding another teacher's
or another corpus's labels is never mixed in: it is refused, or replaced with ``--force``.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np

from kd2mcu import __version__
from kd2mcu.errors import UserError
from kd2mcu.interrupt import raise_from_now_on
from kd2mcu.outputs import MARKER, _Lock, check_output, made_by_kd2mcu, write_file_atomically

MANIFEST = "manifest.json"
FORMAT = 1
DEFAULT_SHARD_ROWS = 4096


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.npz"


def shard_bounds(rows: int, shard_rows: int) -> list[tuple[int, int]]:
    return [(s, min(s + shard_rows, rows)) for s in range(0, rows, shard_rows)]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class LabelFolder:
    """The labels folder being written: claimed (checked and locked), resumed where it matches ``identity``."""

    def __init__(self, out, identity: dict, force: bool, inputs=()):
        """``identity``: what the labels depend on (teacher and corpus hashes, rows, shard size, hidden layers)."""
        raise_from_now_on()
        self.out = Path(out)
        check_output(self.out, True, inputs)  # refuses inputs, files and folders kd2mcu did not make
        kind = made_by_kd2mcu(self.out) if self.out.is_dir() else None
        if kind not in (None, "labels"):
            raise UserError(f"--out {out} is a kd2mcu {kind} folder, not labels: choose another folder")
        self.out.mkdir(parents=True, exist_ok=True)
        self._lock = _Lock(self.out.resolve(), self.out, "--out")
        try:
            self.identity = identity
            old = self._manifest()
            if old is None and any(self.out.glob("shard-*.npz")):
                self._clear()  # shards without a manifest (a --force interrupted half-way): never trusted
            if old is not None and old.get("identity") != identity:
                if not force:
                    raise UserError(f"--out {out} holds labels of another teacher, corpus or setting "
                                    f"({_difference(old.get('identity') or {}, identity)}): pass --force to replace "
                                    "them, or choose another folder")
                self._clear()
                old = None
            elif old is not None and force:
                self._clear()
                old = None
            self._remove_temporary()
            (self.out / MARKER).write_text(json.dumps({"kind": "labels", "kd2mcu_version": __version__}) + "\n")
            self.bounds = shard_bounds(identity["rows"], identity["shard_rows"])
            self._write_manifest(complete=False)
        except BaseException:
            self._lock.release()
            raise

    # -- state
    def _manifest(self) -> Optional[dict]:
        path = self.out / MANIFEST
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # damaged: treated as another run's, so never trusted

    def _clear(self) -> None:
        """Remove the shards, then the manifest (so that an interruption never leaves shards that look trusted)."""
        for p in sorted(self.out.iterdir()):
            if p.name.startswith("shard-") or p.name.startswith(".shard-"):
                p.unlink()
        for p in sorted(self.out.iterdir()):
            if p.name == MANIFEST or p.name.startswith(f".{MANIFEST}"):
                p.unlink()

    def _remove_temporary(self) -> None:
        for p in self.out.iterdir():
            if p.name.startswith(".") and ".tmp-" in p.name and p.is_file():
                p.unlink(missing_ok=True)

    def done(self) -> list[int]:
        """The shards already written whole (in a previous, interrupted run with the same identity)."""
        return [k for k in range(len(self.bounds)) if _readable_shard(self.out / shard_name(k), self.bounds[k])]

    # -- writing
    def write_shard(self, k: int, arrays: dict) -> None:
        start, stop = self.bounds[k]
        if len(arrays["logits"]) != stop - start:
            raise RuntimeError(f"shard {k}: {len(arrays['logits'])} rows of logits for rows {start}:{stop}")
        write_file_atomically(self.out / shard_name(k),
                          lambda tmp: _savez(tmp, rows=np.array([start, stop], np.int64), **arrays))

    def finish(self, extra: dict) -> dict:
        try:
            shards = [{"file": shard_name(k), "start": s, "stop": e, "sha256": _sha256(self.out / shard_name(k))}
                      for k, (s, e) in enumerate(self.bounds)]
            return self._write_manifest(complete=True, shards=shards, **extra)
        finally:
            self._lock.release()

    def release(self) -> None:
        self._lock.release()

    def _write_manifest(self, complete: bool, **fields) -> dict:
        manifest = {"format": FORMAT, "kd2mcu_version": __version__, "complete": complete,
                    "rows": self.identity["rows"], "shard_rows": self.identity["shard_rows"],
                    "num_shards": len(self.bounds), "identity": self.identity, **fields}
        write_file_atomically(self.out / MANIFEST,
                          lambda tmp: tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n"))
        return manifest


def _savez(path: Path, **arrays) -> None:
    """An .npz that np.load reads, byte for byte the same for the same arrays (np.savez stamps the time)."""
    import io

    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, value in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(value), allow_pickle=False)
            z.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())


def _readable_shard(path: Path, bounds: tuple[int, int]) -> bool:
    if not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as f:
            return tuple(int(v) for v in f["rows"]) == tuple(bounds) and len(f["logits"]) == bounds[1] - bounds[0]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return False


def _difference(old: dict, new: dict) -> str:
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return "different " + ", ".join(keys) if keys else "a damaged manifest"


# ---- reading -------------------------------------------------------------------------------------------------


def is_label_folder(path) -> bool:
    return Path(path).is_dir() and (Path(path) / MANIFEST).is_file()


def read_labels(path, option: str = "[teacher] path") -> tuple[np.ndarray, dict, dict]:
    """(logits [N, C] in the corpus's row order, {layer: pooled hidden [N, D]}, the manifest), every shard
    checked against the manifest's SHA-256."""
    folder = Path(path)
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{option} {path}: its {MANIFEST} is not readable ({exc}); run kd2mcu label again") from None
    if manifest.get("format") != FORMAT or "identity" not in manifest:
        raise UserError(f"{option} {path}: {MANIFEST} is not a kd2mcu labels manifest (format {FORMAT})")
    if not manifest.get("complete"):
        have = sum(1 for k in range(manifest.get("num_shards", 0)) if (folder / shard_name(k)).is_file())
        raise UserError(f"{option} {path}: the labels are incomplete ({have} of {manifest.get('num_shards')} shards); "
                        "run the same kd2mcu label command again to finish them")
    logits, hidden = [], {}
    if "shards" not in manifest:
        raise UserError(f"{option} {path}: {MANIFEST} lists no shards; run kd2mcu label again with --force")
    for entry in manifest["shards"]:
        p = folder / entry["file"]
        if not p.is_file() or _sha256(p) != entry["sha256"]:
            raise UserError(f"{option} {path}: {entry['file']} is missing or changed since kd2mcu label wrote it; run "
                            "kd2mcu label again with --force")
        with np.load(p, allow_pickle=False) as f:
            logits.append(f["logits"])
            for name in f.files:
                if name.startswith("hidden_"):
                    hidden.setdefault(int(name[len("hidden_"):]), []).append(f[name])
    out = np.concatenate(logits).astype(np.float32)
    if not np.isfinite(out).all():
        raise UserError(f"{option} {path}: the logits hold NaN or Inf; check the teacher")
    hidden = {k: np.concatenate(v) for k, v in sorted(hidden.items())}
    if any(not np.isfinite(h).all() for h in hidden.values()):
        raise UserError(f"{option} {path}: the pooled hidden states overflow float16 (NaN or Inf); label without "
                        "--hidden")
    return out, hidden, manifest
