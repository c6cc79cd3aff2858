"""Ctrl-C that stops a run whatever native code it is in."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def ctrl_c_raises(keep_callers: bool = True) -> Iterator[None]:
    """Ctrl-C (SIGINT) raises KeyboardInterrupt in the main thread, whatever native code is running.

    With Python's own default handler installed, native code that polls ``PyOS_InterruptOccurred()`` consumes a
    pending SIGINT, and some of what a training step calls does so without raising: under load, a run then
    trained on after Ctrl-C. A handler of our own is not consumed that way, and the previous one comes back on
    exit. ``keep_callers``: where the caller has its own handling of SIGINT (a handler other than Python's
    default, or the signal ignored), it stays in place (the library inside someone else's program); false: ours
    replaces it (a command, which owns its process). Outside the main thread (where handlers cannot be set)
    nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    current = signal.getsignal(signal.SIGINT)
    if keep_callers and current not in (signal.default_int_handler, signal.SIG_DFL):
        yield
        return
    previous = signal.signal(signal.SIGINT, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
