"""Output folders and files: the one rule for every command that writes.

- A folder is written atomically: everything goes to a staging folder beside it first
  (``.NAME.staging-PID``) and replaces the old folder only when complete, so a failed or
  interrupted command never leaves a half-written folder.
- ``--force`` replaces only what kd2mcu made: every build and run folder carries a marker file
  (``.kd2mcu``); a non-empty folder without it is never replaced, with or without ``--force``.
- An output never is, holds, or lies inside one of the command's inputs, nor holds the current folder.
- One writer at a time: a lock file beside the output (``.NAME.lock``, holding the writer's PID)
  refuses a second command writing the same output; locks and staging folders left by dead
  processes (``kill -9``) are removed by the next command that writes there.
- Single files (``sim --save``, ``export-onnx``) are written to a temporary name and renamed, and
  an existing file is replaced only with ``--force``.
- Every failure to write (read-only or missing locations) is one ``UserError`` line.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Iterable, Optional

from kd2mcu import __version__
from kd2mcu.errors import UserError
from kd2mcu.interrupt import check as check_interrupt
from kd2mcu.interrupt import raise_from_now_on

MARKER = ".kd2mcu"
KINDS = ("build", "run", "labels")


def _abs(p) -> Path:
    """The absolute path with symlinks and ``..`` resolved (the path need not exist)."""
    return Path(os.path.realpath(os.path.abspath(os.fspath(p))))


def _inside(child: Path, parent: Path) -> bool:
    return child != parent and parent in child.parents


def made_by_kd2mcu(folder: Path) -> Optional[str]:
    """The kind (``build`` or ``run``) of a folder kd2mcu wrote, or None."""
    try:
        kind = json.loads((Path(folder) / MARKER).read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None
    return kind if kind in KINDS else None


def cannot(action: str, path, exc: OSError) -> UserError:
    """One line for an OSError while reading or writing ``path``."""
    why = exc.strerror or str(exc)
    fix = {errno.EACCES: "choose a location you can write", errno.EPERM: "choose a location you can write",
           errno.EROFS: "the file system is read-only: choose another location",
           errno.ENOSPC: "the disk is full: free some space or choose another location"}.get(exc.errno, "")
    return UserError(f"cannot {action} {path}: {why}" + (f"; {fix}" if fix else ""))


def check_output(out, force: bool, inputs: Iterable = (), option: str = "--out") -> None:
    """Refuse an output that would replace an input, the current folder, a file or a folder kd2mcu
    did not make; refuse a non-empty one without ``force``."""
    out = Path(out)
    target = _abs(out)
    for item in inputs:
        if item is None or str(item) == "":
            continue
        src = _abs(item)
        if src == target:
            raise UserError(f"{option} {out} is the input {item} itself: writing there would destroy what "
                            "the command reads; choose another folder")
        if _inside(src, target):
            raise UserError(f"{option} {out} holds the input {item}: replacing it would delete that input; "
                            "choose another folder")
        if _inside(target, src):
            raise UserError(f"{option} {out} lies inside the input {item}: choose a folder outside it")
    if out.exists() and not out.is_dir():
        raise UserError(f"{option} {out} is a file, not a folder: choose a folder path")
    if not out.is_dir():
        return
    try:
        empty = not any(out.iterdir())
    except OSError as exc:
        raise cannot("read", out, exc) from None
    cwd = _abs(Path.cwd())
    if cwd == target or _inside(cwd, target):
        raise UserError(f"{option} {out} is (or holds) the current folder: run kd2mcu from outside it, "
                        "or choose another folder")
    if empty:
        return
    kind = made_by_kd2mcu(out)
    if kind is None:
        raise UserError(f"{option} {out} is not empty and is not a folder kd2mcu made (no {MARKER} marker): "
                        "kd2mcu never replaces such a folder, even with --force; choose a new or empty folder")
    if not force:
        raise UserError(f"{option} {out} exists and is not empty (a kd2mcu {kind} folder): pass --force to "
                        "replace it, or choose another folder")


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid_suffix(name: str, stem: str) -> Optional[int]:
    tail = name[len(stem):]
    return int(tail) if name.startswith(stem) and tail.isdigit() else None


def remove_stale(parent: Path, name: str) -> None:
    """Remove the staging and old folders (``.NAME.staging-PID``, ``.NAME.old-PID``) of dead processes."""
    try:
        entries = list(parent.iterdir())
    except OSError:
        return
    for entry in entries:
        for stem in (f".{name}.staging-", f".{name}.old-"):
            pid = _pid_suffix(entry.name, stem)
            if pid is not None and pid != os.getpid() and not _alive(pid) and entry.is_dir() \
                    and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)


class _Lock:
    """``.NAME.lock`` beside the output, created exclusively; a lock of a dead process is taken over."""

    def __init__(self, target: Path, out: Path, option: str):
        self.path = target.parent / f".{target.name}.lock"
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and _alive(pid):
                    raise UserError(f"{option} {out}: another kd2mcu (pid {pid}) is writing it now; wait for it "
                                    "to finish or choose another folder") from None
                try:
                    self.path.unlink()  # left by a process that died
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise cannot("write", self.path, exc) from None
                continue
            except OSError as exc:
                raise cannot("write", out, exc) from None
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
            return
        raise UserError(f"{option} {out}: another kd2mcu keeps taking its lock; try again")

    def release(self) -> None:
        try:
            self.path.unlink()
        except OSError:
            pass


class OutputFolder:
    """Claim ``out`` for writing: checks, the lock and a fresh staging folder, all before any work.

    Write into ``.stage``; ``commit()`` marks it as a kd2mcu folder of ``kind`` and moves it into place;
    leaving the ``with`` block by an exception (or ``abort()``) removes the staging folder.
    """

    def __init__(self, out, force: bool, kind: str, inputs: Iterable = (), option: str = "--out"):
        assert kind in KINDS
        raise_from_now_on()  # from here on a Ctrl-C must unwind, to remove the lock and the staging folder
        self.out, self.kind, self.option = Path(out), kind, option
        inputs = list(inputs)
        check_output(self.out, force, inputs, option)
        self.target = _abs(self.out)
        parent = self.target.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise cannot("create", self.out.parent, exc) from None
        self._lock = _Lock(self.target, self.out, option)
        try:
            check_output(self.out, force, inputs, option)  # again, now that no other writer can race us
            remove_stale(parent, self.target.name)
            self.stage = parent / f".{self.target.name}.staging-{os.getpid()}"
            if self.stage.exists():
                shutil.rmtree(self.stage)
            try:
                self.stage.mkdir()
            except OSError as exc:
                raise cannot("write", self.out, exc) from None
        except BaseException:
            self._lock.release()
            raise
        self._done = False

    def commit(self) -> Path:
        try:
            check_interrupt()  # never commit a run whose Ctrl-C native code dropped
        except KeyboardInterrupt:
            self.abort()
            raise
        try:
            (self.stage / MARKER).write_text(json.dumps({"kind": self.kind, "kd2mcu_version": __version__}) + "\n")
            if self.target.exists():
                old = self.target.parent / f".{self.target.name}.old-{os.getpid()}"
                os.rename(self.target, old)
                os.rename(self.stage, self.target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(self.stage, self.target)
        except OSError as exc:
            self.abort()
            raise cannot("write", self.out, exc) from None
        self._done = True
        self._lock.release()
        return self.out

    def abort(self) -> None:
        if not self._done:
            shutil.rmtree(self.stage, ignore_errors=True)
            self._done = True
            self._lock.release()

    def __enter__(self) -> "OutputFolder":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def check_output_file(path, force: bool, inputs: Iterable = (), option: str = "--save") -> Path:
    """Refuse an output file that is a folder, one of the inputs, or an existing file without ``force``."""
    path = Path(path)
    for item in inputs:
        if item is not None and _abs(item) == _abs(path):
            raise UserError(f"{option} {path} is the input {item} itself: choose another file name")
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder: give a file name")
    if path.exists() and not force:
        raise UserError(f"{option} {path} exists: pass --force to replace it, or choose another file name")
    return path


def write_file_atomically(path: Path, write) -> None:
    """Call ``write(tmp_path)`` on a temporary name beside ``path``, then rename it into place."""
    raise_from_now_on()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        check_interrupt()
        os.replace(tmp, path)
    except OSError as exc:
        raise cannot("write", path, exc) from None
    finally:
        if tmp.exists():
            try:
                tmp.unlink()
            except OSError:
                pass


def read_json(path, fix: str = "make it again with kd2mcu"):
    """A JSON file kd2mcu wrote, read back; a damaged or unreadable one is one ``UserError`` line."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
        return json.loads(text)
    except OSError as exc:
        raise cannot("read", path, exc) from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        why = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else \
            "nested too deeply" if isinstance(exc, RecursionError) else "not valid JSON"
        raise UserError(f"{path} is damaged ({why}): {fix}") from None
