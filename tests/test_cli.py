"""Both command lines: --help works, wrong arguments give one line and a non-zero exit."""

from __future__ import annotations

import subprocess
import sys

import pytest

from duallora.base.command_line import OneLineParser, run_cli
from duallora.errors import Terminated

COMMANDS = [["-m", "duallora"], ["-m", "data_prep"]]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", COMMANDS)
def test_help(command: list[str]) -> None:
    result = _run([*command, "--help"])
    assert result.returncode == 0
    assert "usage:" in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("bad", [["no-such-command"], ["--no-such-flag"]])
def test_wrong_argument_is_one_line(command: list[str], bad: list[str]) -> None:
    result = _run([*command, *bad])
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_every_subcommand_has_help() -> None:
    from duallora.cli import main

    for sub in ("notebooks", "demo"):
        with pytest.raises(SystemExit) as exc:
            main([sub, "--help"])
        assert exc.value.code == 0


def test_kit_error_is_one_line(tmp_path) -> None:
    """A bad --only value is reported as a one-line error, exit 2, no traceback."""
    result = _run(["-m", "duallora", "notebooks", "--only", "xx", "--out", str(tmp_path / "out"),
                   "--data", str(tmp_path / "data")])  # never the repository's data/
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--only" in result.stderr


@pytest.mark.parametrize(("raised", "code", "message"),
                         [(KeyboardInterrupt, 130, "interrupted"),
                          (Terminated, 143, "interrupted (SIGTERM)")])
def test_interrupts_end_with_the_exit_code_of_the_signal(raised, code, message, capsys) -> None:
    """Ctrl-C ends with 130 and a handled SIGTERM with 143, each with one line on stderr."""
    def stopped(args) -> int:
        raise raised

    parser = OneLineParser(prog="duallora")
    parser.add_subparsers(dest="command").add_parser("job").set_defaults(func=stopped)
    assert run_cli(parser, ["job"]) == code
    assert capsys.readouterr().err == f"duallora job: {message}\n"


@pytest.mark.parametrize(("argv", "per_vendor"), [
    (["--scale", "0.1"], 25), (["--scale", "1"], 250), (["--scale", "0.01"], 10),
    (["--scale", "0.1", "--test-per-vendor", "0"], 0),
    (["--scale", "0.1", "--test-per-vendor", "300"], 300)])
def test_phantoms_test_cohort_scales_with_scale(argv, per_vendor, tmp_path, monkeypatch) -> None:
    """A "10%" cohort gets a 10% test cohort (4 x 25 + 25 unseen), not 1,250 extra subjects."""
    import data_prep.phantoms
    from data_prep.cli import main as data_prep_main

    calls = []
    monkeypatch.setattr(data_prep.phantoms, "write_phantom_cohort",
                        lambda out, **kwargs: calls.append(kwargs) or out)
    assert data_prep_main(["phantoms", "--out", str(tmp_path), *argv]) == 0
    assert calls[0]["test_per_vendor"] == per_vendor
    assert calls[0]["unseen_test"] is None  # the unseen centre follows --test-per-vendor
