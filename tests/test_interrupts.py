"""openseer.interrupts: Ctrl-C raises in the main thread under a handler of openseer's own, a caller's own
handler is kept where asked, the previous one comes back, and the Python API's pretraining runs under it."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

import openseer
from openseer.interrupts import ctrl_c_raises
from openseer.train import pretrain as pretrain_module


@pytest.fixture
def default_handler() -> Iterator[None]:
    """Python's own SIGINT handler for the test, whatever the test process had."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def _own(signum: int, frame: object) -> None:  # a caller's own handler
    pass


def test_ours_replaces_the_default_and_goes_again(default_handler: None) -> None:
    with ctrl_c_raises():
        inside = signal.getsignal(signal.SIGINT)
    assert inside not in (signal.default_int_handler, signal.SIG_DFL, signal.SIG_IGN)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_callers_own_handler_is_kept_unless_told(default_handler: None) -> None:
    signal.signal(signal.SIGINT, _own)
    with ctrl_c_raises():
        assert signal.getsignal(signal.SIGINT) is _own
    with ctrl_c_raises(keep_callers=False):
        assert signal.getsignal(signal.SIGINT) is not _own
    assert signal.getsignal(signal.SIGINT) is _own


def test_ctrl_c_raises_keyboard_interrupt(default_handler: None) -> None:
    with pytest.raises(KeyboardInterrupt), ctrl_c_raises(keep_callers=False):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler raises at the next bytecode, long before this ends
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_api_pretrains_under_it(default_handler: None, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def fake(cfg, resume=False):  # noqa: ANN001, ANN202 - the loop's own arguments
        seen.append(signal.getsignal(signal.SIGINT))
        return SimpleNamespace(out_dir=None, evaluation=None)

    monkeypatch.setattr(pretrain_module, "pretrain", fake)
    openseer.pretrain("cpu", ["run.evaluate=false"])
    assert len(seen) == 1 and seen[0] is not signal.default_int_handler
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
