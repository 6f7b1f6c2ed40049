"""The invariants of the "what happens when" contract that hold across scripts: no tool writes into
its inputs or destroys before it has succeeded, data that must be the same are compared by content,
and resources are checked before the work starts."""
import json
import os
import shutil
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

import cli
import data as D
import evaluate as E
import images as I
import synth
import train
from checkpoint import save_checkpoint
from meters import format_seconds
import helpers
from helpers import MNIST_ROOT, fabricate_checkpoint, tiny_train_args
from model import build_model, model_kwargs


def photo_folder(root, classes=("0", "1"), per_class=6, seed=0):
    """helpers.photo_folder with this file's defaults: class subfolders of 20 px noise PNGs, no two alike."""
    return helpers.photo_folder(root, classes, per_class, stem="p{i}", size=20, seed=seed)


def folder_args(data_dir, save_dir, *extra):
    return train.resolve_defaults(train.get_args_parser().parse_args(
        ["--data-dir", str(data_dir), "--model", "convnet", "--img-size", "16", "--epochs", "1", "--batch-size", "4",
         "--workers", "0", "--quiet", "--no-download", "--save-dir", str(save_dir), *map(str, extra)]))


def folder_checkpoint(path, args):
    """A checkpoint of an untrained convnet for the folder run `args` (what train.py would store)."""
    data = D.build_datasets(D.data_config(args))
    kwargs = model_kwargs("convnet", img_size=16, drop_rate=args.drop_rate)
    net = build_model("convnet", len(data.classes), 3, **kwargs)
    save_checkpoint({"model": "convnet", "model_args": kwargs, "state_dict": net.state_dict(),
                     "classes": data.classes, "in_channels": 3, "img_size": 16, "mean": list(data.mean),
                     "std": list(data.std), "data": D.data_config(args), "args": vars(args), "epoch": 1,
                     "best_val_acc": 0.5}, str(path))
    return path


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- inputs stay, nothing lost

def test_overwrite_keeps_the_earlier_run_until_the_new_one_has_started(tmp_path):
    pets = photo_folder(tmp_path / "pets", ("cat", "dog"))
    run = tmp_path / "run"
    run.mkdir()
    for name in ("best.pt", "last.pt", "history.csv"):
        (run / name).write_bytes(b"the earlier run's " + name.encode())
    before = snapshot(run)
    with pytest.raises(cli.UsageError, match="digit classes"):  # the new run cannot start: cats are not digits
        train.main(folder_args(pets, run, "--synthetic-n", 5, "--overwrite"))
    assert snapshot(run) == before


def test_a_save_dir_in_use_is_refused(tmp_path, mnist_root):
    run = tmp_path / "run"
    with cli.folder_lock(str(run), "--save-dir", "train.py run"):  # another run, still writing there
        with pytest.raises(cli.UsageError, match="in use by another train.py run"):
            train.main(train.get_args_parser().parse_args(tiny_train_args(mnist_root, run, "--epochs", 1)))
    assert not run.exists()  # the refused run left nothing; the folder the lock made is gone with it


def test_synth_never_exports_into_its_inputs_nor_over_an_export(tmp_path):
    digits = photo_folder(tmp_path / "digits", [str(d) for d in range(10)], per_class=2)
    before = snapshot(digits)
    base = ["--data-dir", digits, "--img-size", 16, "--n", 4, "--val-fraction", 0.5, "--no-group-split"]
    for export in (digits, digits / "3", digits / "new"):
        with pytest.raises(cli.UsageError, match="never writes into its inputs"):
            synth.check_args(synth.get_args_parser().parse_args(list(map(str, [*base, "--export", export]))))
    assert snapshot(digits) == before
    old = photo_folder(tmp_path / "old_export", ("0",), per_class=1)
    with pytest.raises(cli.UsageError, match="already holds images"):
        synth.check_args(synth.get_args_parser().parse_args(list(map(str, [*base, "--export", old]))))


# ----------------------------------------------------------------------------- the same data, by content

def test_ensemble_members_need_the_same_images(tmp_path):
    # class subfolders: every split has the same label sequence (0...0 1...1), so labels cannot tell
    digits = photo_folder(tmp_path / "d", per_class=10)
    a = folder_checkpoint(tmp_path / "a.pt", folder_args(digits, tmp_path / "ra", "--split-seed", 0))
    b = folder_checkpoint(tmp_path / "b.pt", folder_args(digits, tmp_path / "rb", "--split-seed", 1))
    with pytest.raises(cli.UsageError, match="other train/val images"):
        E.main(E.get_args_parser().parse_args([str(a), str(b), "--out", str(tmp_path / "ens")]))
    assert not (tmp_path / "ens" / "metrics.json").exists()


def test_a_test_folder_shares_no_photo_with_the_data(tmp_path):
    digits = photo_folder(tmp_path / "d")
    with pytest.raises(cli.UsageError, match="overlap"):  # by path
        folder_args(digits, tmp_path / "r", "--test-dir", digits)
    test = photo_folder(tmp_path / "t", seed=1)
    shutil.copy(digits / "1" / "p3.png", test / "1" / "renamed.png")  # by content: a copy under another name
    with pytest.raises(cli.UsageError, match="same pixels"):
        D.build_datasets(D.data_config(folder_args(digits, tmp_path / "r", "--test-dir", test)))
    (test / "1" / "renamed.png").unlink()
    assert len(D.build_datasets(D.data_config(folder_args(digits, tmp_path / "r", "--test-dir", test))).test) == 12


def test_split_folders_are_not_classes(tmp_path):
    photo_folder(tmp_path / "kaggle" / "train")
    photo_folder(tmp_path / "kaggle" / "test", seed=1)
    with pytest.raises(cli.UsageError, match="--data-dir .*train --test-dir .*test"):
        I.scan_folder(str(tmp_path / "kaggle"))


# ----------------------------------------------------------------------------- options that change nothing

def test_group_regex_needs_the_group_split(tmp_path, mnist_root):
    with pytest.raises(cli.UsageError, match="--group-regex"):
        folder_args(photo_folder(tmp_path / "d"), tmp_path / "r", "--group-regex", "p", "--no-group-split")
    with pytest.raises(cli.UsageError, match="--group-regex"):
        train.resolve_defaults(train.get_args_parser().parse_args(
            tiny_train_args(mnist_root, tmp_path / "r", "--group-regex", "x")))


def test_sample_weights_name_each_image_once(tmp_path):
    digits = photo_folder(tmp_path / "d")
    weights = tmp_path / "w.csv"
    weights.write_text("path,weight\n0/p1.png,0\np1.png,1\n")  # 0/p1.png and p1.png: p1.png is ambiguous (no match)
    D.read_sample_weights(str(weights), I.scan_folder(str(digits))[0], 12)
    weights.write_text("path,weight\n0/p1.png,0\n0/p1.png,1\n")
    with pytest.raises(cli.UsageError, match="listed twice"):
        D.read_sample_weights(str(weights), I.scan_folder(str(digits))[0], 12)


# ----------------------------------------------------------------------------- resources, before the work

# (resnet18 at 4000 px: ~18 GiB of activations an image, which a batch of 2 images alone does not show)
@pytest.mark.parametrize("extra", [("--synthetic-n", 10 ** 9), ("--img-size", 100_000),
                                   ("--model", "resnet18", "--img-size", 4000, "--batch-size", 2)])
def test_memory_is_checked_before_the_work_starts(tmp_path, extra):
    with pytest.raises(cli.UsageError, match="GiB of memory"):
        folder_args(photo_folder(tmp_path / "d", [str(d) for d in range(10)], per_class=2), tmp_path / "r", *extra)


@pytest.mark.parametrize("rate,expected", [(1e9, "warning: slow steps ahead: about"),
                                           (3e10, "estimate before training: about"), (1e13, None)])
def test_a_slow_step_is_announced_before_the_first(monkeypatch, capsys, rate, expected):
    """resnet18 at 224 px, 64 a batch: 0.7 TFLOP a step; 1 GFLOP/s is minutes a step, 30 GFLOP/s is
    seconds (the measured estimate comes minutes later), 10 TFLOP/s needs no word."""
    args = train.get_args_parser().parse_args(["--model", "resnet18", "--img-size", "224", "--batch-size", "64"])
    flops, _ = train.step_cost(args, 224)
    monkeypatch.setattr(train, "conv_flops_per_s", lambda device: rate)
    r = SimpleNamespace(args=args, data=SimpleNamespace(img_size=224), device=torch.device("cpu"), steps_per_epoch=10)
    train.announce_step_time(r)
    out = capsys.readouterr()
    line = (out.out + out.err).strip()
    assert (line.startswith(expected) if expected else line == ""), line
    if expected:
        assert f"about {format_seconds(flops / rate)} per step, {format_seconds(10 * flops / rate)} per epoch" in line
        assert f"{flops / 1e12:.2f} TFLOP a step" in line and f"{rate / 1e9:.0f} GFLOP/s" in line


# ----------------------------------------------------------------------------- inputs that only training needs

def test_scoring_goes_on_without_the_training_only_inputs(tmp_path, capsys):
    digits, test = photo_folder(tmp_path / "d"), photo_folder(tmp_path / "t", seed=1)
    weights = tmp_path / "w.csv"
    weights.write_text("path,weight\n0/p1.png,0\n")
    ck = folder_checkpoint(tmp_path / "a.pt", folder_args(digits, tmp_path / "r", "--sample-weights", weights,
                                                          "--test-dir", test))
    weights.unlink()
    shutil.rmtree(test)
    _, ckpt, data = E.load_run(str(ck), torch.device("cpu"))
    err = capsys.readouterr().err
    assert "sample weights (training only) left out" in err and "the test split left out" in err
    assert data.test is None and len(data.val) == 2


# ----------------------------------------------------------------------------- a sweep's numbers are its own

def grid_args(out, *extra):
    import experiments
    return experiments.parse_args(["grid", "--grid", "lr=1e-3,2e-3", "--grid", "batch_size=8", "--out", str(out),
                                   "--dataset", "mnist", "--mnist-root", str(MNIST_ROOT), "--no-download",
                                   "--model", "convnet", "--epochs", "1", *map(str, extra)])


def finished(out, cell, argv, acc):
    (out / cell / "seed0").mkdir(parents=True)
    result = {"argv": argv, "results": {s: {"acc": acc, "loss": 1.0, "correct": 1, "total": 2} for s in ("train", "val")}}
    (out / cell / "seed0" / "result.json").write_text(json.dumps(result))


def test_a_sweep_never_reports_runs_made_with_other_settings(tmp_path, monkeypatch):
    import experiments
    monkeypatch.setattr(train, "main", lambda *a: pytest.fail("a finished cell was trained again"))
    out = tmp_path / "grid"
    args = grid_args(out)
    for lr in ("1e-3", "2e-3"):  # finished with these settings, but without --quiet: the same numbers
        finished(out, f"lr={lr}_batch_size=8", args.train_args + ["--lr", lr, "--batch-size", "8", "--seed", "0"], 0.5)
    rows = experiments.main(grid_args(out, "--quiet"))
    assert [r["val_acc"] for r in rows] == [0.5, 0.5]
    with pytest.raises(cli.UsageError, match="other settings"):  # --epochs 6 would report the 1-epoch numbers
        experiments.main(grid_args(out, "--epochs", 6))


def test_a_sweep_checks_every_cell_before_the_first_trains(tmp_path, monkeypatch):
    import experiments
    monkeypatch.setattr(train, "main", lambda *a: pytest.fail("a cell trained before the bad one was found"))
    digits = photo_folder(tmp_path / "d", [str(d) for d in range(10)], per_class=2)
    args = experiments.parse_args(["synth-to-real", "--sources", "fonts", "--backgrounds-list",
                                   f"field,{tmp_path / 'missing'}", "--out", str(tmp_path / "s2r"),
                                   "--data-dir", str(digits), "--img-size", "16", "--epochs", "1"])
    with pytest.raises(cli.UsageError, match="no such folder"):
        experiments.main(args)
    assert not (tmp_path / "s2r").exists()


# ----------------------------------------------------------------------------- every file not used is named

def test_every_file_left_out_of_a_folder_is_named(tmp_path, capsys):
    digits = photo_folder(tmp_path / "d")
    Image.new("RGB", (20, 20), (9, 9, 9)).save(digits / "0" / "scan.tif")  # a TIFF is read
    Image.new("P", (20, 20), 3).save(digits / "1" / "anim.gif")            # and so is a GIF
    (digits / "1" / "notes.txt").write_text("not an image")
    (digits / "0" / "more").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    paths, names = I.scan_folder(str(digits))
    assert {"scan.tif", "anim.gif"} <= {p.split("/")[-1] for p in paths} and len(paths) == 14
    err = capsys.readouterr().err
    assert "not an image file" in err
    assert "symlinked folder" in err and err.count("warning:") == 1


def test_mnist_is_read_gzipped_and_a_root_one_level_off_is_named(tmp_path):
    import gzip
    raw = tmp_path / "m" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in D.MNIST_FILES:
        (raw / (f + ".gz")).write_bytes(gzip.compress((MNIST_ROOT / "MNIST" / "raw" / f).read_bytes()))
    images, labels = D.load_mnist(str(tmp_path / "m"), train=False, download=False)
    plain = D.load_mnist(str(MNIST_ROOT), train=False, download=False)
    assert torch.equal(images, plain[0]) and torch.equal(labels, plain[1])
    with pytest.raises(cli.UsageError, match=f"pass --mnist-root {tmp_path / 'm'}"):
        D.load_mnist(str(raw), download=True)  # never a download into the user's MNIST/raw/


def test_a_failed_download_leaves_the_folder_as_it_was(tmp_path, monkeypatch):
    import torchvision

    def offline(*a, **k):
        (tmp_path / "empty" / "MNIST" / "raw").mkdir(parents=True, exist_ok=True)  # what a download makes first
        raise OSError("Network is unreachable")
    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    (tmp_path / "empty").mkdir()
    with pytest.raises(cli.UsageError, match="no network"):
        D.load_mnist(str(tmp_path / "empty"), download=True)
    assert list((tmp_path / "empty").iterdir()) == []


# ----------------------------------------------------------------------------- the entry point

@pytest.mark.parametrize("raised,code,line", [(KeyboardInterrupt(), 130, "interrupted\n"),
                                              (PermissionError(13, "Permission denied", "out/x.png"), 2,
                                               "error: [Errno 13] Permission denied: 'out/x.png'\n"),
                                              (cli.UsageError("bad"), 2, "error: bad\n"),
                                              (cli.UsageError("a/b\nc.png\r\x1b[2J is bad"), 2,  # a quoted file name
                                               "error: a/b\\nc.png\\r\\x1b[2J is bad\n")])
def test_every_script_ends_in_one_line(raised, code, line, capsys):
    def main(args):
        raise raised
    with pytest.raises(SystemExit) as e:
        cli.run_main(main, lambda: None)
    assert e.value.code == code and capsys.readouterr().err == line


# ----------------------------------------------------------------------------- every number says what produced it

def test_the_report_says_what_produced_its_scores(tmp_path, mnist_root, capsys):
    import report
    (tmp_path / "run").mkdir()
    (tmp_path / "other").mkdir()
    ck = fabricate_checkpoint(tmp_path / "run" / "best.pt", mnist_root)
    E.main(E.get_args_parser().parse_args([str(ck), "--tta", "3", "--split", "val"]))
    settings = json.loads((tmp_path / "run" / "metrics.json").read_text())["settings"]
    assert settings["checkpoints"] == [str(ck)] and settings["tta"] == 3 and settings["temperature"] == [1.0]
    report.write_report(str(tmp_path / "run"), str(ck))
    assert "Scored with test-time augmentation over 3 views" in (tmp_path / "run" / "report.md").read_text()
    other = fabricate_checkpoint(tmp_path / "other" / "best.pt", mnist_root, seed=1)
    shutil.copy(tmp_path / "run" / "metrics.json", tmp_path / "other" / "metrics.json")  # another run's scores
    capsys.readouterr()
    report.write_report(str(tmp_path / "other"), str(other))
    assert "holds the scores of" in capsys.readouterr().err
    assert "Scored with" not in (tmp_path / "other" / "report.md").read_text()


def test_images_metrics_always_name_their_folder(tmp_path, mnist_root):
    ck = fabricate_checkpoint(tmp_path / "best.pt", mnist_root)
    labelled, unlabelled = photo_folder(tmp_path / "labelled"), tmp_path / "unlabelled"
    shutil.copytree(labelled / "0", unlabelled)
    out = tmp_path / "out"
    for folder in (labelled, unlabelled):
        E.main(E.get_args_parser().parse_args([str(ck), "--images", str(folder), "--out", str(out)]))
        m = json.loads((out / "images_metrics.json").read_text())
        assert m["settings"]["folder"] == str(folder) and m["settings"]["checkpoints"] == [str(ck)]
    assert m["images"] is None and not (out / "images_confusion.png").exists()  # not the labelled folder's


def test_scoring_a_synthetic_run_on_other_classes_names_the_classes(tmp_path):
    digits = photo_folder(tmp_path / "d", [str(d) for d in range(10)], per_class=2)
    ck = folder_checkpoint(tmp_path / "a.pt", folder_args(digits, tmp_path / "r", "--synthetic-n", 4,
                                                          "--val-fraction", 0.5, "--no-group-split"))
    pets = photo_folder(tmp_path / "pets", ("cat", "dog"))
    with pytest.raises(cli.UsageError, match="differ from the checkpoint's"):  # not "--synthetic-n needs digits"
        E.main(E.get_args_parser().parse_args([str(ck), "--data-dir", str(pets), "--out", str(tmp_path / "ev")]))


def test_outputs_are_checked_before_the_work(tmp_path, mnist_root):
    import bench
    import export
    (tmp_path / "file").write_text("")  # an --out under a file: its folder cannot be made
    args = bench.get_args_parser().parse_args(["--out", str(tmp_path / "file" / "b.json"), "--only", "synth",
                                               "--data-dir", str(tmp_path)])
    with pytest.raises(cli.UsageError, match="cannot write into"):  # before the benchmarks, not after them
        bench.check_args(args)
    ck = fabricate_checkpoint(tmp_path / "best.pt", mnist_root)
    (tmp_path / "deploy").mkdir()
    r = export.main(export.get_args_parser().parse_args([str(ck), "--out", str(tmp_path / "deploy"),
                                                         "--parity-images", "8"]))
    assert r["path"] == str(tmp_path / "deploy" / "best.torchscript.pt")  # a folder takes the default name
    for new in (str(tmp_path / "new1") + "/", str(tmp_path / "new2")):  # a folder not made yet: a trailing /, no suffix
        r = export.main(export.get_args_parser().parse_args([str(ck), "--out", new, "--parity-images", "8"]))
        assert r["path"] == os.path.join(new.rstrip("/"), "best.torchscript.pt") and os.path.isfile(r["path"])
