"""cli.py: Ctrl-C's two-step stop (SigintStop) and the atomic writes every output goes through.
(The scripts' command lines are tested in each script's file and in test_bad_options.py.)"""
import os
import signal

import pytest

import cli


def test_second_ctrl_c_aborts_and_the_previous_handler_comes_back():
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), cli.SigintStop() as stop:
        stop.armed = True
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested  # the first one only asks to stop
        os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before
    with pytest.raises(KeyboardInterrupt), cli.SigintStop():
        os.kill(os.getpid(), signal.SIGINT)  # not armed (set-up, final report): as usual


def test_ctrl_c_in_a_forked_loader_worker_is_left_to_the_main_process(monkeypatch):
    """A terminal's Ctrl-C reaches the loader workers too (one process group); they inherit the
    handler, which must neither print nor act there."""
    with cli.SigintStop() as stop:
        stop.armed = True
        monkeypatch.setattr(cli.os, "getpid", lambda: stop.pid + 1)  # as seen in a forked worker
        stop._handle(signal.SIGINT, None)
        assert not stop.requested
        monkeypatch.undo()
        stop._handle(signal.SIGINT, None)
        assert stop.requested


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("old")
    with pytest.raises(UnicodeEncodeError):
        with cli.atomic_write(p) as f:
            f.write("half,")
            f.write("\ud800 a lone surrogate")  # not an escaped byte: cannot be encoded
    assert p.read_text() == "old" and os.listdir(tmp_path) == ["a.csv"]
