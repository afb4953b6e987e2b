"""CLI conventions: every command documents an example, start-up stays light, bad input exits 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


@pytest.mark.parametrize("body", ["import sys\nsys.exit(3)\n", "raise SystemExit('bye')\n", "1 / 0\n"])
def test_a_recipe_that_exits_or_raises_at_import_is_one_line_exit_2(tmp_path: Path, body: str) -> None:
    recipe = tmp_path / "leaving.py"
    recipe.write_text(body)
    proc = subprocess.run([sys.executable, "-m", "vmlab", "bake", str(recipe), "--provider", "local"],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"vmlab: error: {recipe}:") and proc.stdout == ""
