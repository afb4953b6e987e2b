"""`vmlab provision` end to end: the real CLI, a real sshd, a recipe applied twice (the second run changes
nothing), check and diff modes, parallel hosts where one is unreachable, and bad input that touches nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.sshd

RECIPE = '''
from vmlab.engine import Recipe
from vmlab.operations import files, pip, shell

recipe = Recipe("itest", vars={"greeting": "hello"})
recipe.step("folder", files.Directory("{{ root }}/app", mode="0750"))
recipe.step("file", files.File("{{ root }}/app/plain.txt", content="literal {{ braces }}\\n", mode="0640"))
recipe.step("template", files.Template("{{ root }}/app/conf.ini",
                                       source="greeting={{ greeting }}\\nhost={{ inventory_hostname }}\\n"),
            notify="log change")
recipe.step("line", files.Line("{{ root }}/app/settings", line="debug = false", regexp="^debug"))
recipe.step("venv", pip.Packages(("pip",), venv="{{ root }}/venv"))
recipe.step("guarded", shell.Shell("echo ran >> {{ root }}/guarded.log", creates="{{ root }}/guarded.log"))
recipe.handler("log change", shell.Shell("echo changed >> {{ root }}/handler.log"))
'''


def vmlab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmlab", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


@pytest.fixture()
def setup(tmp_path: Path, sshd) -> tuple[Path, Path, Path]:
    root = tmp_path / "target"
    recipe = tmp_path / "recipe.py"
    recipe.write_text(RECIPE)
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(f"""
all:
  vars:
    root: {root}
  children:
    good:
      hosts:
        box:
          ansible_host: 127.0.0.1
          ansible_port: {sshd.port}
          ansible_user: {sshd.user}
          ansible_ssh_private_key_file: {sshd.client_key}
    bad:
      hosts:
        closed:
          ansible_host: 127.0.0.1
          ansible_port: 1
          ansible_ssh_private_key_file: {sshd.client_key}
    apps:
      vars:
        port: 8080  # a plain variable: never the SSH port
      hosts:
        box:
""")
    return root, recipe, inventory


def test_apply_twice_second_run_changes_nothing(setup) -> None:
    root, recipe, inventory = setup
    first = vmlab("provision", str(recipe), "-i", str(inventory), "--limit", "good", "--json")
    assert first.returncode == 0, first.stderr + first.stdout
    report = json.loads(first.stdout)["hosts"][0]
    assert report["changed"] == 7 and report["failed"] == 0  # 6 steps + the handler
    assert (root / "app" / "plain.txt").read_text() == "literal {{ braces }}\n"
    assert (root / "app" / "conf.ini").read_text() == "greeting=hello\nhost=box\n"
    assert oct((root / "app").stat().st_mode & 0o777) == "0o750"
    assert (root / "venv" / "bin" / "python").exists()
    assert (root / "handler.log").read_text() == "changed\n"

    second = vmlab("provision", str(recipe), "-i", str(inventory), "--limit", "box", "--json")
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)["hosts"][0]
    assert (report["changed"], report["ok"]) == (0, 6)
    assert (root / "guarded.log").read_text() == "ran\n"
    assert (root / "handler.log").read_text() == "changed\n"


def test_extra_vars_change_the_template_and_diff_shows_it(setup) -> None:
    root, recipe, inventory = setup
    assert vmlab("provision", str(recipe), "-i", str(inventory), "-l", "good").returncode == 0
    out = vmlab("provision", str(recipe), "-i", str(inventory), "-l", "good", "--check", "--diff",
                "-e", "greeting=bonjour", env={"NO_COLOR": "1"})
    assert out.returncode == 0, out.stderr
    assert "-greeting=hello" in out.stdout and "+greeting=bonjour" in out.stdout
    assert "would change" in out.stdout
    assert (root / "app" / "conf.ini").read_text() == "greeting=hello\nhost=box\n"  # check changed nothing


def test_check_mode_on_a_fresh_host_creates_nothing(setup) -> None:
    root, recipe, inventory = setup
    out = vmlab("provision", str(recipe), "-i", str(inventory), "-l", "good", "--check", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)["hosts"][0]
    assert report["check"] and report["changed"] == 7
    assert not root.exists()


def test_unreachable_host_fails_alone(setup) -> None:
    root, recipe, inventory = setup
    out = vmlab("provision", str(recipe), "-i", str(inventory), "--json")
    assert out.returncode == 1
    hosts = {h["host"]: h for h in json.loads(out.stdout)["hosts"]}
    assert hosts["closed"]["unreachable"] and "nothing is listening on 127.0.0.1:1" in hosts["closed"]["error"]
    assert hosts["box"]["failed"] == 0 and hosts["box"]["changed"] == 7
    assert (root / "app" / "conf.ini").exists()


def test_wrong_key_is_a_host_failure_with_diagnosis(setup, sshd, tmp_path: Path) -> None:
    root, recipe, inventory = setup
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    bad_inventory = tmp_path / "bad.yaml"
    bad_inventory.write_text(inventory.read_text().replace(f"ansible_ssh_private_key_file: {sshd.client_key}",
                                                           f"ansible_ssh_private_key_file: {other}"))
    out = vmlab("provision", str(recipe), "-i", str(bad_inventory), "-l", "box", env={"NO_COLOR": "1"})
    assert out.returncode == 1
    assert "UNREACHABLE" in out.stdout and "rejected" in out.stdout.lower()
    assert not root.exists()


@pytest.mark.parametrize("args, message", [
    (["--limit", "nosuch"], "--limit nosuch: no host or group"),
    (["--limit", "good:&nosuch*"], "--limit &nosuch*: no host or group"),
    (["-e", "not a pair"], "expected NAME=VALUE"),
])
def test_bad_arguments_exit_2_and_touch_nothing(setup, args: list[str], message: str) -> None:
    root, recipe, inventory = setup
    out = vmlab("provision", str(recipe), "-i", str(inventory), *args)
    assert out.returncode == 2
    assert message in out.stderr and out.stderr.count("\n") == 1
    assert not root.exists()


def test_bad_files_exit_2(setup, tmp_path: Path) -> None:
    root, recipe, inventory = setup
    broken = tmp_path / "broken.yaml"
    broken.write_text("all:\n  hosts: [oops\n")
    out = vmlab("provision", str(recipe), "-i", str(broken))
    assert out.returncode == 2 and "not valid YAML" in out.stderr
    bad_recipe = tmp_path / "bad_recipe.py"
    bad_recipe.write_text("from vmlab.operations import files\nx = files.Directory('/tmp', mod='0755')\n")
    out = vmlab("provision", str(bad_recipe), "-i", str(inventory))
    assert out.returncode == 2 and "bad_recipe.py:2: TypeError" in out.stderr
    undefined = tmp_path / "undefined.py"
    undefined.write_text(RECIPE.replace("{{ greeting }}", "{{ no_such_var }}"))
    out = vmlab("provision", str(undefined), "-i", str(inventory), "-l", "good")
    assert out.returncode == 2 and "'no_such_var' is undefined" in out.stderr
    assert not root.exists()
