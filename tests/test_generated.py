"""Generated cases (Hypothesis) for the entry-point invariant: whatever number an option gets, a
script's checks either accept it or refuse it with a UsageError (one line, exit 2), before any data
is read; never another exception. Each script's options are read from its own parser, so a new
option is covered without a new test."""
import argparse
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import analyze
import cli
import evaluate
import synth
import train
from helpers import MNIST_ROOT, fabricate_checkpoint


def numeric_options(parser):
    return sorted((a.option_strings[0], a.type) for a in parser._actions
                  if a.option_strings and a.type in (int, float))


EDGES = (0, 1, -1, 2, 2 ** 31, 2 ** 63, 10 ** 30, 0.5, -0.5, 1e-300, 1e300, math.inf, -math.inf, math.nan)
NUMBERS = st.one_of(st.integers(-10 ** 15, 10 ** 15), st.sampled_from(EDGES), st.floats(allow_nan=True, allow_infinity=True))


def value_text(kind, value):
    if kind is int and isinstance(value, float):
        return None if not math.isfinite(value) or value != int(value) else str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def checked(check, parser, base, option, kind, value):
    text = value_text(kind, value)
    if text is None:  # argparse's own one line (an int option given 1.5)
        return
    try:
        args = parser.parse_args([*base, option, text])
    except SystemExit:
        return
    try:
        check(args)
    except cli.UsageError:
        pass  # refused in one line: fine; any other exception fails the test


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return str(fabricate_checkpoint(tmp_path_factory.mktemp("g") / "best.pt", MNIST_ROOT))


TRAIN_BASE = ["--dataset", "mnist", "--mnist-root", str(MNIST_ROOT), "--no-download", "--model", "net"]
SCRIPTS = {
    "train": (train.get_args_parser(), lambda args: train.resolve_defaults(args), TRAIN_BASE),
    "synth": (synth.get_args_parser(), synth.check_args, ["--data-dir", str(MNIST_ROOT)]),
}


def any_number(script, data):
    parser, check, base = SCRIPTS[script]
    option, kind = data.draw(st.sampled_from(numeric_options(parser)))
    checked(check, parser, base, option, kind, data.draw(NUMBERS))


def every_option_at(values, scripts=SCRIPTS):
    for parser, check, base in (SCRIPTS[k] for k in scripts):
        for option, kind in numeric_options(parser):
            for value in values:
                checked(check, parser, base, option, kind, value)


def test_every_train_option_at_the_extremes():
    """The developer loop's share: every numeric option of train.py at the values that break code."""
    every_option_at((-1, 2 ** 63, math.nan, -math.inf), ["train"])


@pytest.mark.slow  # every numeric option of train.py and synth.py at every edge value, ~5 s
def test_every_option_at_every_edge_value():
    every_option_at(EDGES)


@pytest.mark.slow  # hundreds of generated cases, ~15 s
@pytest.mark.parametrize("script", sorted(SCRIPTS))
@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(data=st.data())
def test_any_number_is_accepted_or_refused_in_one_line(script, data):
    any_number(script, data)


@pytest.mark.slow  # generated cases against a checkpoint
@pytest.mark.parametrize("script", ["evaluate", "analyze"])
@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_number_is_accepted_or_refused_in_one_line_after_training(script, ckpt, data):
    module = {"evaluate": evaluate, "analyze": analyze}[script]
    parser = module.get_args_parser()
    option, kind = data.draw(st.sampled_from(numeric_options(parser)))
    checked(module.check_args, parser, [ckpt], option, kind, data.draw(NUMBERS))


def test_every_numeric_option_is_generated():
    assert len(numeric_options(train.get_args_parser())) >= 20  # the generator sees the parser's options
    assert all(isinstance(p, argparse.ArgumentParser) for p, _, _ in SCRIPTS.values())
