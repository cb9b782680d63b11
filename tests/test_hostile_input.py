"""Hostile input (issue 41): nothing crashes, nothing is lost, nothing wrong slips in silently.

Each case is what a careless or hostile user did: a bad option value, an ``--overwrite`` whose
new run cannot start, a ``--resume`` with other options, raw files that lie about their size or
cannot be a cine pair, a dying worker, hand-edited harmonized folders. Every case must end in
exit code 2 with one line naming the file, subject or option, or as a skipped subject with its
reason in ``skipped.csv``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from duallora.cli import main as duallora_main
from duallora.errors import KitError
from duallora.federated.config import TrainConfig


def one_line_error(capsys: pytest.CaptureFixture, code: int, *names: str) -> str:
    """Assert exit code 2, a single stderr line without a traceback, naming every ``names``."""
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "Traceback" not in err and err.count("\n") == 0, err
    for name in names:
        assert name in err, (name, err)
    return err


# --- options: one validation path for every command ----------------------------------------

TRAIN_CASES = [
    (["--lr", "nan"], "--lr"), (["--lr", "inf"], "--lr"), (["--lr", "0"], "--lr"),
    (["--lora-dropout", "1.5"], "--lora-dropout"),
    (["--eval-batch-size", "0"], "--eval-batch-size"), (["--seed", "-1"], "--seed"),
    (["--rounds", "0"], "--rounds"), (["--targets", ","], "--targets"),
    (["--alpha", "nan"], "--alpha"), (["--blocks", "last"], "--blocks"),
    (["--model-size", "gigantic"], "--model-size"), (["--bootstrap", "-1"], "--bootstrap"),
    (["--weight-decay", "-0.1"], "--weight-decay"), (["--drop-prob", "1"], "--drop-prob"),
    (["--prox-lambda", "inf"], "--prox-lambda"), (["--fm", ""], "--fm"),
]


@pytest.mark.parametrize(("bad", "option"), TRAIN_CASES)
def test_train_option_out_of_range_is_one_line(bad, option, tmp_path, capsys) -> None:
    code = duallora_main(["train", "--data", str(tmp_path), "--strategy", "med_duallora",
                          "--out", str(tmp_path / "run"), *bad])
    one_line_error(capsys, code, option)
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.parametrize("argv", [
    ["flower-local", "--clients", "2", "--lr", "nan"],
    ["tune-lr", "--strategy", "fedavg_lora", "--seed", "-1"],
    ["tune-lr", "--strategy", "fedavg_lora", "--grid", "1e-3,nan"],
])
def test_other_training_commands_share_the_ranges(argv, tmp_path, capsys) -> None:
    code = duallora_main([*argv, "--data", str(tmp_path), "--out", str(tmp_path / "o")])
    option = "--grid" if "--grid" in argv else "--lr" if "nan" in argv else "--seed"
    one_line_error(capsys, code, option)


@pytest.mark.parametrize(("extra", "option"), [
    (["--seeds", "-1"], "--seeds"), (["--jobs", "0"], "--jobs"),
    (["--", "--eval-batch-size", "0"], "--eval-batch-size"),
    (["--strategies", "fedfoo"], "fedfoo"),
])
def test_sweep_checks_every_run_before_the_first(extra, option, tmp_path, capsys) -> None:
    code = duallora_main(["sweep", "--data", str(tmp_path), "--out", str(tmp_path / "s"),
                          *extra])
    one_line_error(capsys, code, option)
    assert not (tmp_path / "s").exists()


def test_evaluate_refuses_what_is_not_a_model(tmp_path, capsys) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model")
    fake_pt = tmp_path / "model.pt"
    fake_pt.write_bytes(b"\x00" * 10)
    garbage = tmp_path / "classifier.safetensors"
    garbage.write_bytes(b"\xff" * 100)
    for model, extra in ((notes, []), (fake_pt, []), (garbage, []),
                         (tmp_path, ["--bootstrap", "-5"]), (tmp_path, ["--model-size", "x"])):
        code = duallora_main(["evaluate", "--model", str(model), "--data", str(tmp_path),
                              *extra])
        one_line_error(capsys, code, extra[0] if extra else model.name)


def test_a_hand_edited_config_is_held_to_the_same_ranges() -> None:
    for values, option in (({"rounds": "8"}, "--rounds"), ({"seed": 1.5}, "--seed"),
                           ({"lr": float("nan")}, "--lr"), ({"targets": []}, "--targets"),
                           ({"class_weighting": 1}, "--class-weighting")):
        with pytest.raises(KitError, match=option):
            TrainConfig.from_dict(values)


def test_every_field_declares_what_it_accepts() -> None:
    """The declaration is the one place: a numeric field without bounds would let NaN in."""
    import dataclasses

    for spec in dataclasses.fields(TrainConfig):
        valid = spec.metadata["valid"]
        default = getattr(TrainConfig(), spec.name)
        valid.check(f"--{spec.name}", default)  # every default is itself accepted
        if isinstance(default, int | float) and not isinstance(default, bool):
            assert valid.lo is not None and valid.hi is not None, spec.name


@pytest.mark.parametrize(("argv", "option"), [
    (["phantoms", "--scale", "0"], "--scale"), (["phantoms", "--scale", "nan"], "--scale"),
    (["phantoms", "--scale", "1e9"], "--scale"), (["phantoms", "--workers", "0"], "--workers"),
    (["phantoms", "--test-per-vendor", "-1"], "--test-per-vendor"),
    (["phantoms", "--seed", "-3"], "--seed"), (["headroom", "--n-train", "0"], "--n-train"),
])
def test_data_prep_options_out_of_range(argv, option, tmp_path, capsys) -> None:
    from data_prep.cli import main as data_prep_main

    out = [] if argv[0] == "headroom" else ["--out", str(tmp_path / "cohort")]
    code = data_prep_main([*argv, *out])
    one_line_error(capsys, code, option)
    assert not (tmp_path / "cohort").exists()


def test_data_prep_output_folder_is_checked(tmp_path, capsys) -> None:
    from data_prep.cli import main as data_prep_main

    a_file = tmp_path / "file"
    a_file.write_text("x")
    one_line_error(capsys, data_prep_main(["harmonize", "--acdc", str(tmp_path),
                                           "--out", str(a_file)]), "--out")
    one_line_error(capsys, data_prep_main(["harmonize", "--acdc", str(tmp_path),
                                           "--out", str(tmp_path / "inside")]), "--out")
    assert not (tmp_path / "inside").exists()


# --- nothing destroyed before validation; --resume keeps its promise ------------------------

def _finished_run(folder: Path, data: Path, **values) -> dict[str, bytes]:
    """A run folder as a finished run leaves it; returns every file's bytes."""
    config = TrainConfig(data=str(data), **values)
    files = {"config.json": config.to_json() + "\n", "metrics.csv": "round,client\n1,GE\n",
             "predictions.csv": "subject_id\nmnms/A1\n", "comm.jsonl": "{}\n",
             "timing.json": "{}\n", "checkpoints/last.pt": "checkpoint bytes"}
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in folder.rglob("*") if p.is_file()}


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in folder.rglob("*") if p.is_file()}


def test_failed_overwrite_leaves_the_old_run_intact(harmonized_dir, tmp_path, capsys) -> None:
    """``--blocks 99`` passes the option syntax and fails only when the model is built: the
    old run must still be whole then (it used to be deleted first)."""
    run = tmp_path / "run"
    before = _finished_run(run, harmonized_dir)
    code = duallora_main(["train", "--data", str(harmonized_dir), "--strategy", "med_duallora",
                          "--out", str(run), "--overwrite", "--blocks", "99", "--fm", "none",
                          "--model-size", "tiny", "--no-progress"])
    one_line_error(capsys, code, "--blocks")
    assert _contents(run) == before


def test_rundir_prepare_only_checks_and_begin_clears() -> None:
    """The two steps apart: ``prepare`` never removes anything, ``begin(clear=True)`` does."""
    import tempfile

    from duallora.federated.rundir import RunDir

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        before = _finished_run(folder, folder)
        rundir = RunDir(folder)
        rundir.prepare(resume=False, overwrite=True)
        assert _contents(folder) == before
        rundir.begin(clear=True)
        assert not rundir.config.exists() and not rundir.last_checkpoint.exists()
        with pytest.raises(KitError, match="already holds a run"):
            _finished_run(folder, folder)
            rundir.prepare(resume=False, overwrite=False)


def test_resume_refuses_other_options_and_names_them(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    before = _finished_run(run, tmp_path, rounds=3, strategy="fedavg_lora")
    code = duallora_main(["train", "--data", str(tmp_path), "--strategy", "fedavg_lora",
                          "--out", str(run), "--resume", "--rounds", "5", "--lr", "0.01"])
    err = one_line_error(capsys, code, "--rounds 5 (recorded 3)", "--lr 0.01 (recorded 0.002)")
    assert "--strategy" not in err  # the same strategy is no conflict
    code = duallora_main(["train", "--data", str(tmp_path), "--strategy", "med_duallora",
                          "--out", str(run), "--resume"])
    one_line_error(capsys, code, "--strategy med_duallora (recorded fedavg_lora)")
    assert _contents(run) == before


def test_resume_accepts_the_recorded_options(tmp_path) -> None:
    """Same values (also a path spelled differently) are no conflict; options not given are
    not compared."""
    import argparse

    from duallora.commands import train

    run = tmp_path / "run"
    _finished_run(run, tmp_path, rounds=3, quick=False)
    args = argparse.Namespace(data=tmp_path / "." / "", strategy="med_duallora", out=run,
                              resume=True, quick=False, rounds=3)
    train.check_resume(args, train.config_from_args(args))
    args.quick = True  # --quick now sets rounds 2, local epochs 1, ...: other than recorded
    with pytest.raises(KitError, match="--local-epochs 1 \\(recorded 2\\)"):
        train.check_resume(args, train.config_from_args(args))
