"""evaluate.py --compare: the Wilson interval and the exact McNemar test against known values and
generated invariants (stats.py), the verdict, and the comparison of two runs end to end (the same
images or a one-line refusal; compare.json and compare.csv)."""
import json
import math
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import checkpoint as CK
import cli
import evaluate as E
import stats
from helpers import fabricate_checkpoint, one_line, read_csv

CPU = torch.device("cpu")
GENERATED = settings(max_examples=100, deadline=None, derandomize=True, database=None)


def mcnemar_reference(b, c):
    """The definition, in exact fractions: twice the smaller binomial(b + c, 1/2) tail, capped at 1."""
    n = b + c
    return float(min(Fraction(1), Fraction(2 * sum(math.comb(n, i) for i in range(min(b, c) + 1)), 2 ** n)))


# ----------------------------------------------------------------------------- stats.py

@pytest.mark.parametrize("k, n, low, high", [(8, 10, 0.490, 0.943), (0, 10, 0.0, 0.278), (10, 10, 0.722, 1.0),
                                              (50, 100, 0.404, 0.596), (1, 1, 0.207, 1.0)])
def test_wilson_interval_known_values(k, n, low, high):
    assert stats.wilson_interval(k, n) == pytest.approx((low, high), abs=5e-4)


@pytest.mark.parametrize("b, c, p", [(1, 9, 0.021484375), (12, 4, 0.076812744140625), (0, 0, 1.0), (7, 7, 1.0),
                                     (0, 1, 1.0), (0, 5, 0.0625), (0, 6, 0.03125), (3, 4, 1.0), (2, 10, 0.0386)])
def test_mcnemar_exact_known_values(b, c, p):
    assert stats.mcnemar_exact(b, c) == pytest.approx(p, abs=5e-5)
    assert stats.mcnemar_exact(c, b) == stats.mcnemar_exact(b, c)


def test_mcnemar_exact_stays_exact_for_large_n():
    # the same tail in log space (lgamma): agrees where doubles can hold it, 0.0 only below what they can
    def log_space(b, c):
        n, k = b + c, min(b, c)
        logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(k + 1)]
        top = max(logs)
        return min(1.0, 2 * math.exp(top) * sum(math.exp(x - top) for x in logs))
    for b, c in ((400, 600), (4900, 5100), (20000, 20000), (100, 3000)):
        assert stats.mcnemar_exact(b, c) == pytest.approx(log_space(b, c), rel=1e-9)
    assert stats.mcnemar_exact(0, 5000) == 0.0  # 2^-4999 is below the smallest double
    with pytest.raises(ValueError):
        stats.mcnemar_exact(-1, 3)


@GENERATED
@given(st.integers(0, 300), st.integers(0, 300))
def test_mcnemar_exact_invariants(b, c):
    p = stats.mcnemar_exact(b, c)
    assert 0.0 <= p <= 1.0
    assert p == stats.mcnemar_exact(c, b) == pytest.approx(mcnemar_reference(b, c), rel=1e-12)
    if b == c:
        assert p == 1.0
    if c >= b:  # more evidence for one side never raises p
        assert stats.mcnemar_exact(b, c + 1) <= p


@GENERATED
@given(st.integers(1, 10 ** 6).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_interval_invariants(kn):
    k, n = kn
    low, high = stats.wilson_interval(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0
    assert low < high
    assert stats.wilson_interval(n - k, n) == pytest.approx((1 - high, 1 - low), abs=1e-12)


# ----------------------------------------------------------------------------- the verdict

def paired(only_a, only_b, both_right=10, both_wrong=2):
    """Predictions of two runs (class 1 = right, 0 = wrong; labels all 1) with these counts."""
    a = [1] * only_a + [0] * only_b + [1] * both_right + [0] * both_wrong
    b = [0] * only_a + [1] * only_b + [1] * both_right + [0] * both_wrong
    return E.paired_numbers(torch.tensor(a), torch.tensor(b), torch.ones(len(a), dtype=torch.long))


def test_verdict_names_a_winner_only_when_significant():
    r = paired(1, 9)
    assert (r["only_a"], r["only_b"], r["both_right"], r["both_wrong"]) == (1, 9, 10, 2)
    assert r["a"]["correct"] == 11 and r["b"]["correct"] == 19 and r["images"] == 22
    text = E.verdict(r, ["a/best.pt", "b/best.pt"], "val")
    assert "B is right on 9 images A misses, A on 1 that B misses (exact McNemar p = 0.0215)" in text
    assert "B is better, significant at the 5% level" in text and "22 val images" in text
    text = E.verdict(paired(12, 4), ["a/best.pt", "b/best.pt"], "test")
    assert "A is right on 12 images B misses, B on 4 that A misses (exact McNemar p = 0.0768)" in text
    assert "no significant difference at the 5% level" in text and "better" not in text
    assert "p = 1): no significant difference" in E.verdict(paired(0, 0), ["a", "b"], "val")
    assert "On the same 12 test images (5 TTA views), A (a) scores" in E.verdict(paired(0, 0), ["a", "b"], "test", 5)


@GENERATED
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2)), min_size=1, max_size=200))
def test_paired_numbers_invariants(rows):
    a, b, y = (torch.tensor(col) for col in zip(*rows))
    r = E.paired_numbers(a, b, y)
    n = len(rows)
    assert r["only_a"] + r["only_b"] + r["both_right"] + r["both_wrong"] == n
    assert r["a"]["accuracy"] - r["b"]["accuracy"] == pytest.approx((r["only_a"] - r["only_b"]) / n)
    text = E.verdict(r, ["a", "b"], "val")
    assert ("better" in text) == (r["mcnemar_p"] < 0.05)  # never a winner at p >= 0.05


# ----------------------------------------------------------------------------- end to end

def two_checkpoints(mnist_root, tmp_path):
    """a/best.pt and b/best.pt: untrained convnets of seeds 0 and 1 (different predictions) for the same data."""
    for name in "ab":
        (tmp_path / name).mkdir()
    return (fabricate_checkpoint(tmp_path / "a" / "best.pt", mnist_root, seed=0),
            fabricate_checkpoint(tmp_path / "b" / "best.pt", mnist_root, seed=1))


def compare(*argv):
    return E.main(E.get_args_parser().parse_args([str(a) for a in argv] + ["--compare"]))


def test_compare_two_checkpoints_writes_json_and_csv(mnist_root, tmp_path, capsys):
    a, b = two_checkpoints(mnist_root, tmp_path)
    r = compare(a, b, "--out", tmp_path / "cmp")
    out = capsys.readouterr().out
    preds = []
    for path in (a, b):
        model, _, data = E.load_run(str(path), CPU)
        preds.append(E.collect(model, data.val, CPU)["preds"])
    assert r == {**E.paired_numbers(preds[0], preds[1], data.val.targets), "labels": "the labels as given"}
    assert r["images"] == len(data.val) and r["only_a"] + r["only_b"] > 0
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert saved["settings"]["checkpoints"] == [str(a), str(b)]
    assert (saved["settings"]["split"], saved["settings"]["tta"], saved["settings"]["images"]) == ("val", 1, len(data.val))
    assert saved["mcnemar_p"] == r["mcnemar_p"] and saved["verdict"] in out
    rows = read_csv(tmp_path / "cmp" / "compare.csv")
    assert [row["right"] for row in rows] == ["A"] * r["only_a"] + ["B"] * r["only_b"]
    for row in rows:
        i = int(row["index"])
        assert row["path"] == data.val.path(i) and row["label"] == data.classes[data.val.targets[i]]
        assert (row["prediction_a"], row["prediction_b"]) == (data.classes[preds[0][i]], data.classes[preds[1][i]])
        assert (row["prediction_a"] == row["label"]) == (row["right"] == "A") != (row["prediction_b"] == row["label"])


def test_compare_refuses_other_images_and_bad_options_in_one_line(mnist_root, tmp_path):
    a, _ = two_checkpoints(mnist_root, tmp_path)
    ck = CK.load_checkpoint(str(a))
    ck["data"] = dict(ck["data"], split_seed=1)  # another val split of the same data
    CK.save_checkpoint(ck, str(tmp_path / "other.pt"))
    for argv, needle in (([a, tmp_path / "other.pt"], "has other val images than"),
                         ([a], "exactly two checkpoints"), ([a, a, a], "exactly two checkpoints"),
                         ([a, a, "--split", "train"], "--split val (the default) or test"),
                         ([a, a, "--images", tmp_path], "not --images"),
                         ([a, a, "--temperature", "2"], "own temperature"),
                         ([a, a, "--tta", "99"], "--tta must be")):
        with pytest.raises(cli.UsageError) as e:
            compare(*argv, "--out", tmp_path / "cmp")
        assert needle in one_line(e)
    assert not (tmp_path / "cmp" / "compare.json").exists()
    with pytest.raises(cli.UsageError) as e:  # the same check refuses such an ensemble
        E.main(E.get_args_parser().parse_args([str(a), str(tmp_path / "other.pt"), "--split", "val"]))
    assert "has other val images than" in one_line(e) and "an ensemble averages" in one_line(e)


@pytest.mark.slow  # fixture tiny_run twice: two 1-epoch trainings with figures, ~15 s
def test_compare_two_tiny_runs_of_other_seeds_on_test_with_tta(tiny_run, tmp_path, capsys):
    a, b = tiny_run("--eval-test")[0] / "best.pt", tiny_run("--eval-test", "--seed", 1)[0] / "best.pt"
    r = compare(a, b, "--split", "test", "--tta", 2, "--out", tmp_path)
    out = capsys.readouterr().out
    assert f"A = {a}: test " in out and f"B = {b}: test " in out and "exact McNemar p = " in out
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert saved["settings"]["tta"] == 2 and saved["settings"]["split"] == "test"
    assert r["images"] == 500 and saved["only_b"] == r["only_b"]
    assert len(read_csv(tmp_path / "compare.csv")) == r["only_a"] + r["only_b"]
