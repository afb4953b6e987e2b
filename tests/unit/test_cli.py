"""CLI conventions: every command documents an example, start-up stays light, bad input exits 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from vmlab.cli import COMMANDS, cli


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help_with_an_example(name: str) -> None:
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output and f"vmlab {name}" in result.output


def test_help_does_not_import_heavy_libraries() -> None:
    code = ("import sys; from vmlab.cli import cli\n"
            "try:\n    cli(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('boto3', 'paramiko', 'jinja2', 'rich', 'yaml') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_unknown_lab_is_bad_input_with_json() -> None:
    result = CliRunner().invoke(cli, ["down", "nosuchlab", "--json"])
    assert result.exit_code == 2
    doc = json.loads(result.output)
    assert "no lab named 'nosuchlab'" in doc["error"] and doc["exit_code"] == 2


def test_invalid_lab_name_is_bad_input() -> None:
    result = CliRunner().invoke(cli, ["down", "Bad_Name"])
    assert result.exit_code == 2
    assert "lab name 'Bad_Name' is not valid" in result.output


def test_unknown_provider_is_bad_input() -> None:
    result = CliRunner().invoke(cli, ["images", "ls", "--provider", "nimbus"])
    assert result.exit_code == 2 and "unknown provider 'nimbus'" in result.output
