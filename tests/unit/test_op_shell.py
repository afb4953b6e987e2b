"""shell operations: guards decide whether the command runs; the chdir wrapper run for real."""

from __future__ import annotations

from pathlib import Path

import pytest
from planning import argvs, plan, run_local

from vmlab.engine.facts import CommandSucceeds, FileStat, PathInfo
from vmlab.errors import BadInput
from vmlab.operations.shell import Run, Shell

SCRIPT = "sh /opt/miniconda.sh -b -p /opt/conda"
SH = ("sh", "-c", SCRIPT)
THERE = PathInfo("file", "0755", "root", "root", 1)


@pytest.mark.parametrize("op, facts, expected", [
    (Shell(SCRIPT), {}, [SH]),
    (Shell(SCRIPT, creates="/opt/conda"), {FileStat("/opt/conda"): THERE}, []),
    (Shell(SCRIPT, creates="/opt/conda"), {FileStat("/opt/conda"): None}, [SH]),
    (Shell(SCRIPT, removes="/tmp/x"), {FileStat("/tmp/x"): None}, []),
    (Shell(SCRIPT, removes="/tmp/x"), {FileStat("/tmp/x"): THERE}, [SH]),
    (Shell(SCRIPT, unless="test -x /opt/conda/bin/conda"),
     {CommandSucceeds("test -x /opt/conda/bin/conda"): True}, []),
    (Shell(SCRIPT, unless="test -x /opt/conda/bin/conda"),
     {CommandSucceeds("test -x /opt/conda/bin/conda"): False}, [SH]),
    (Shell(SCRIPT, onlyif="test -f /opt/miniconda.sh"),
     {CommandSucceeds("test -f /opt/miniconda.sh"): False}, []),
    (Shell(SCRIPT, onlyif="test -f /opt/miniconda.sh"), {CommandSucceeds("test -f /opt/miniconda.sh"): True},
     [SH]),
    # a guard that says skip stops the rest from being asked (StaticFacts fails on facts it does not know)
    (Shell(SCRIPT, creates="/opt/conda", unless="false"), {FileStat("/opt/conda"): THERE}, []),
    (Shell(SCRIPT, creates="/opt/conda", onlyif="true"),
     {FileStat("/opt/conda"): None, CommandSucceeds("true"): True}, [SH]),
    (Shell("make install", chdir="/opt/src"), {},
     [("sh", "-c", 'cd -- "$1" && exec sh -c "$2"', "sh", "/opt/src", "make install")]),
    (Run(("/opt/conda/bin/conda", "clean", "-afy")), {}, [("/opt/conda/bin/conda", "clean", "-afy")]),
    (Run(["touch", "/etc/x"], creates="/etc/x"), {FileStat("/etc/x"): THERE}, []),
    (Run(("touch", "/etc/x"), unless="test -e /etc/x"), {CommandSucceeds("test -e /etc/x"): False},
     [("touch", "/etc/x")]),
])
def test_plans(op, facts, expected) -> None:
    assert argvs(op, facts) == expected


@pytest.mark.parametrize("make, message", [
    (lambda: Shell(""), "script must be a non-empty shell command"),
    (lambda: Shell("x", creates="relative/path"), "is not an absolute path"),
    (lambda: Shell("x", removes="relative"), "is not an absolute path"),
    (lambda: Shell("x", chdir="src"), "is not an absolute path"),
    (lambda: Shell("x", unless=""), "unless must be a shell command"),
    (lambda: Shell("x", onlyif=["test", "-f"]), "onlyif must be a shell command"),
    (lambda: Run(()), "argv is empty"),
    (lambda: Run("ls -l"), "must be a tuple"),
    (lambda: Run(("ls", 3)), "must be a tuple of non-empty"),
])
def test_bad_arguments(make, message) -> None:
    with pytest.raises(BadInput, match=message):
        make()


def test_chdir_wrapper_runs_the_script_in_the_directory(tmp_path: Path) -> None:
    folder = tmp_path / "a dir; with $(odd) 'chars'"
    folder.mkdir()
    [command] = plan(Shell("pwd > out.txt", chdir=str(folder)))
    assert command.describe() == f"cd {folder} && pwd > out.txt"
    assert run_local(command).rc == 0
    assert (folder / "out.txt").read_text().strip() == str(folder)
    [missing] = plan(Shell("true", chdir=str(tmp_path / "nope")))
    assert run_local(missing).rc != 0
