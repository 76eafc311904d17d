"""Ctrl-C: one line and exit code 130, at any moment, and never a half-written output.

Until a command starts writing, a Ctrl-C ends the process at once (``quit_at_once``): the start-up
imports torch, onnxruntime and aeon, whose native code may be running Python when the signal lands,
and a ``KeyboardInterrupt`` raised there does not unwind: pybind11 turns it into ``std::terminate``
(SIGABRT, exit -6). Nothing is written yet, so there is nothing to clean up. From the moment a command
claims an output (``raise_from_now_on``, called by ``kd2mcu.outputs``) a Ctrl-C is Python's
``KeyboardInterrupt`` again, so the staging folder and temporary files are removed on the way out.

A ``KeyboardInterrupt`` raised while native code runs a Python callback through ctypes (numba's
compiler, inside MiniRocket, does) is printed and dropped by Python, and the run would go on to the
end. So the handler also records the Ctrl-C, such a dropped interrupt is not printed, and ``check()``,
called at safe points (every training batch, before an output is committed), raises it again.
"""
import os
import signal
import sys
import threading

MESSAGE = b"kd2mcu: interrupted (nothing was written)\n"


def _quit(signum, frame) -> None:
    os.write(2, MESSAGE)
    os._exit(130)


def quit_at_once() -> None:
    """Install the exiting handler (the ``kd2mcu`` command does this first thing)."""
    signal.signal(signal.SIGINT, _quit)


_pending = False


def _raise(signum, frame) -> None:
    global _pending
    _pending = True
    raise KeyboardInterrupt


def _unraisable(info) -> None:
    """Python's hook for exceptions it must drop; a dropped Ctrl-C stays silent (``check`` raises it)."""
    if not (_pending and isinstance(info.exc_value, KeyboardInterrupt)):
        sys.__unraisablehook__(info)


def raise_from_now_on() -> None:
    """Make Ctrl-C a ``KeyboardInterrupt`` again, if the exiting handler is installed (a library user's own
    handler is left alone)."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is _quit:
        signal.signal(signal.SIGINT, _raise)
        sys.unraisablehook = _unraisable


def check() -> None:
    """Raise the ``KeyboardInterrupt`` of a Ctrl-C that native code dropped (a no-op without one)."""
    if _pending:
        raise KeyboardInterrupt
