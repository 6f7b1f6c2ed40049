"""cli.py: Ctrl-C's two-step stop (SigintStop) and the atomic writes every output goes through.
(The scripts' command lines are tested in each script's file and in test_bad_options.py.)"""
import argparse
import io
import os
import signal
import sys

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


# ----------------------------------------------------------------------------- every script's parser

def parsers():
    """(name, parser) of every script's command line, experiments.py's sub-commands each on their own."""
    import analyze, bench, evaluate, experiments, export, model, report, synth, train  # noqa: E401
    out = [(m.__name__, m.get_args_parser()) for m in (train, evaluate, analyze, report, export, synth, bench, model)]
    top = experiments.get_args_parser()
    subs = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    return out + [("experiments", top)] + [(f"experiments {n}", p) for n, p in subs.choices.items()]


@pytest.mark.parametrize("name,parser", parsers(), ids=lambda x: x if isinstance(x, str) else "")
def test_help_shows_every_default_once(name, parser):
    """--help names each option's default once: argparse's `(default: ...)` where the help text does
    not already say it; nothing where there is none to show (None, a flag that is off)."""
    formatter = parser._get_formatter()
    for action in parser._actions:
        if not action.option_strings or action.default == argparse.SUPPRESS:
            continue
        text = formatter._format_action(action)
        shown = not (action.default is None or action.default is False or action.default == [])
        assert text.count("default") == 1 if shown else text.count("default") <= 1, f"{name}: {text}"


def test_train_help_shows_the_defaults(capsys):
    import train
    with pytest.raises(SystemExit) as e:
        train.get_args_parser().parse_args(["--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for option in ("--epochs EPOCHS (default: 30)", "--batch-size BATCH_SIZE (default: 64)",
                   "--optimizer {adamw,sgd,adadelta} (default: adamw)", "(default: 0.98)"):
        assert option in out
    assert "(default: None)" not in out and "(default: False)" not in out


@pytest.mark.parametrize("name,parser", parsers()[:8], ids=lambda x: x if isinstance(x, str) else "")
def test_a_mistyped_option_is_one_line_with_a_guess(name, parser, capsys):
    option = next(s for a in parser._actions for s in a.option_strings if s.startswith("--") and s != "--help")
    typo = option[:-1] + option[-1] * 2 + "x"  # --epochs -> --epochssx: close, not a prefix of it
    with pytest.raises(SystemExit) as e:
        parser.parse_args([*(["run/best.pt"] if name in ("evaluate", "analyze", "export") else []),
                           *(["run"] if name == "report" else []), *(["net"] if name == "model" else []), typo, "3"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1, err
    assert f"error: unrecognized arguments: {typo} 3 (did you mean {option}?)" in err and "--help" in err, err


def test_the_guess_for_each_of_several_typos(capsys):
    import train
    parser = train.get_args_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--epohcs", "3", "--lrr=1", "--zzzzzz"])
    assert capsys.readouterr().err == (
        f"{parser.prog}: error: unrecognized arguments: --epohcs 3 --lrr=1 --zzzzzz (did you mean --epochs for --epohcs, "
        f"--lr for --lrr?); {parser.prog} --help lists the options\n")


def test_plural():
    assert [cli.plural(n, w) for n, w in ((1, "thread"), (2, "thread"), (0, "loader worker"), (3, "class"))] == \
        ["1 thread", "2 threads", "0 loader workers", "3 classes"]


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bars_only_on_a_terminal_and_not_when_quiet(monkeypatch):
    for stream, quiet, drawn in ((Terminal(), False, True), (Terminal(), True, False), (io.StringIO(), False, False)):
        monkeypatch.setattr(sys, "stderr", stream)
        assert list(cli.progress(range(3), "counting", quiet)) == [0, 1, 2]
        assert ("counting" in stream.getvalue()) == drawn
