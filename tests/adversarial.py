"""Helpers of the adversarial suites (tests/test_bad_*.py): a case is one line, built in a temp
folder, run as the command line runs it, and judged the same way every time:

  - the exit code (2 for bad input, 0 for a run that skipped something with a warning);
  - exactly one `error:` (or `warning:`) line on stderr, naming the problem;
  - no traceback;
  - every file that was in the folder before is unchanged afterwards (hashes), except the
    outputs the case expects.

Scripts run in-process through runpy (the very `if __name__ == "__main__":` block a shell
runs, without a new interpreter per case), under an alarm, so a hang fails instead of blocking.
Cases that could block inside a thread (a FIFO) run as subprocesses with a timeout instead.
"""
import fnmatch
import hashlib
import io
import os
import runpy
import shutil
import signal
import subprocess
import sys
import traceback
from contextlib import redirect_stderr, redirect_stdout

import pytest

from helpers import REPO, photo_folder, run_train


def snapshot(folder):
    """{relative path: sha1} of every regular file under `folder` (links and FIFOs left out)."""
    out = {}
    for dp, dirs, files in os.walk(folder):
        for f in files:
            p = os.path.join(dp, f)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = hashlib.sha1(fh.read()).hexdigest()
    return out


class Hang(BaseException):
    pass


# Generous: a hang never ends, while a slow case on a loaded 2-core machine (a new interpreter,
# analyze.py's figures) was seen to take over 60 s.
HANG_S = 180


def cli(script, argv, cwd, timeout=HANG_S):
    """Run `python script argv` in-process (runpy, as __main__) in `cwd`: (exit code, stdout, stderr).
    An uncaught exception is printed as the interpreter would (a traceback) and gives code 1."""
    out, err = io.StringIO(), io.StringIO()
    old_argv, old_cwd = sys.argv, os.getcwd()
    sys.argv = [script, *map(str, argv)]

    def alarm(*_):
        raise Hang(f"{script} still running after {timeout} s")
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(timeout)
    code = 0
    try:
        os.chdir(cwd)
        with redirect_stdout(out), redirect_stderr(err):
            try:
                runpy.run_path(str(REPO / script), run_name="__main__")
            except SystemExit as e:
                if isinstance(e.code, str):
                    print(e.code, file=sys.stderr)
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except Hang:
                raise
            except BaseException:
                traceback.print_exc()
                code = 1
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        sys.argv = old_argv
        os.chdir(old_cwd)
    return code, out.getvalue(), err.getvalue()


def slow(case):
    """The same case (a pytest.param) with the slow mark (pytest.ini): left out of pytest -m "not slow"."""
    return pytest.param(*case.values, marks=[*case.marks, pytest.mark.slow], id=case.id)


def cli_subprocess(script, argv, cwd, timeout=HANG_S):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    try:
        p = subprocess.run([sys.executable, str(REPO / script), *map(str, argv)], cwd=cwd, env=env,
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{script} {argv} hung (no exit within {timeout} s)") from None
    return p.returncode, p.stdout, p.stderr


WITHHELD = "label review withheld, below the floor"  # analyze.py's line for a reviewer too weak to trust


def check(case_dir, script, argv, code, text, outputs=(), warning=False, subprocess=False, stdout=None):
    """Run the case and assert the four properties (see the module docstring). `text`: a fragment
    (any case) the one error / warning line must contain; None: no error or warning line at all.
    `outputs`: glob patterns (relative to case_dir) of files the run may create, change or remove.
    `stdout`: a fragment stdout must contain."""
    before = snapshot(case_dir)
    got, out, err = (cli_subprocess if subprocess else cli)(script, argv, case_dir)
    assert "Traceback" not in err, err[-3000:]
    assert got == code, f"exit {got}, expected {code}\nstdout: {out[-1500:]}\nstderr: {err[-1500:]}"
    flagged = [line for line in err.splitlines() if "error:" in line or line.startswith("warning:")]
    if script == "analyze.py" and code == 0:  # the world's tiny models are weak reviewers: analyze must say so
        withheld = [line for line in flagged if WITHHELD in line]
        assert withheld, f"no {WITHHELD!r} line for the world's weak model:\n{err[-3000:]}"
        flagged = [line for line in flagged if WITHHELD not in line]
    if text is None:
        assert not flagged, err[-3000:]
    else:
        kind = "warning:" if warning else "error:"
        lines = [line for line in flagged if kind in line]
        assert len(lines) == 1 and len(flagged) == 1, f"expected one {kind} line, got:\n{err[-3000:]}"
        assert text.lower() in lines[0].lower(), f"{text!r} not in {lines[0]!r}"
    if stdout is not None:
        assert stdout in out, out[-3000:]
    after = snapshot(case_dir)
    for path, digest in before.items():
        if any(fnmatch.fnmatch(path, pat) for pat in outputs):
            continue
        assert after.get(path) == digest, f"{path} was {'changed' if path in after else 'removed'}"
    return out, err


# ----------------------------------------------------------------------------- the shared world

TRAIN = ["--data-dir", "data", "--model", "convnet", "--img-size", 12, "--epochs", 1, "--batch-size", 4,
         "--workers", 0, "--quiet", "--save-dir", "out", "--augment", "none"]


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """data/ (3 classes x 5 PNGs) and run/ (1 epoch of convnet on it: best.pt, last.pt, history.csv)."""
    w = tmp_path_factory.mktemp("world")
    photo_folder(w / "data")  # data/<class>/img<i>.png, classes 0-2, 16 x 16
    run_train([*TRAIN, "--save-dir", w / "run", "--data-dir", w / "data"], figures=True)
    (w / "notes.txt").write_text("a text file\n")
    (w / "table.csv").write_text("a,b\n1,2\n")
    (w / "config.json").write_text('{"model": "convnet"}\n')
    (w / "empty.pt").write_bytes(b"")
    (w / "noise.pt").write_bytes(bytes(range(256)) * 8)
    return w


@pytest.fixture
def case_dir(world, tmp_path):
    d = tmp_path / "w"
    shutil.copytree(world, d, symlinks=True)
    return d
