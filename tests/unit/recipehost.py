"""Plan a whole recipe without a server: a Host that answers fact commands like a fresh machine would.

The runner runs in check mode, so the only commands that reach the host are fact reads; each is answered
from `answers` (keyed by the fact, given as the raw output the fact's command would print) or, for the facts
every operation reads, as a fresh host answers (no such file, package, unit or executable). Any other command
fails the test, so a recipe that would run something unexpected while planning is caught.

    host = FreshHost(os_release=UBUNTU_2404, gpus=0, cloud="Amazon EC2")
    recap = apply(recipe, host, variables={"user": "ubuntu"}, check=True)
    planned(recap)  # {step name: [command descriptions]} of the steps that would change
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from vmlab.engine.command import Command, RunResult
from vmlab.engine.facts import Container, Fact, OsRelease, Which
from vmlab.engine.runner import HostRecap
from vmlab.operations.nvidia import Cloud, Machine, NvidiaGpus

UBUNTU_2204 = 'NAME="Ubuntu"\nID=ubuntu\nVERSION_ID="22.04"\nVERSION_CODENAME=jammy\n'
UBUNTU_2404 = 'NAME="Ubuntu"\nID=ubuntu\nVERSION_ID="24.04"\nVERSION_CODENAME=noble\n'
DEBIAN_12 = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n'
UBUNTU_2004 = 'NAME="Ubuntu"\nID=ubuntu\nVERSION_ID="20.04"\nVERSION_CODENAME=focal\n'
AMAZON_2023 = 'NAME="Amazon Linux"\nID="amzn"\nVERSION_ID="2023"\n'


def _fresh(command: Command) -> RunResult | None:
    label, argv = command.label or "", command.argv
    if label.startswith(("stat ", "read ", "which ")):
        return RunResult(0, "", "")
    if label.startswith("test: "):
        return RunResult(1, "", "")
    if argv[0] == "dpkg-query":
        return RunResult(1, "", "")
    if label == "age of apt lists":
        return RunResult(0, "1000 0 no\n", "")
    if argv[:2] == ("getent", "passwd"):  # the image's default user exists, with a plain shell
        return RunResult(0, f"{argv[2]}:x:1000:1000::/home/{argv[2]}:/bin/sh\n", "")
    if argv == ("getent", "group"):
        return RunResult(0, "root:x:0:\nusers:x:100:\n", "")
    if argv[:2] == ("systemctl", "is-enabled"):
        return RunResult(4, "", f"Failed to get unit file state for {argv[2]}: No such file or directory\n")
    if argv[:2] == ("systemctl", "is-active"):
        return RunResult(3, "inactive\n", "")
    if label.endswith("installed distributions"):
        return RunResult(0, json.dumps({"dists": {}, "env": {"python_version": "3.11"}}), "")
    return None


class FreshHost:
    """The engine's Host protocol for a freshly booted machine of the given release, GPUs and cloud; `container`
    names the engine when the host is a container ("" for a VM)."""

    batch_reads = False  # it answers each fact command itself, so the runner must not batch them

    def __init__(self, os_release: str, *, gpus: int = 0, cloud: str = "QEMU", machine: str = "x86_64",
                 container: str = "", answers: Mapping[Fact[Any], str | RunResult] | None = None,
                 name: str = "fresh") -> None:
        self.name = name
        # cloud images come with curl (check mode cannot see an earlier step install it)
        table: dict[Fact[Any], str | RunResult] = {OsRelease(): os_release, NvidiaGpus(): f"{gpus}\n",
                                                   Cloud(): cloud + "\n", Machine(): machine + "\n",
                                                   Which("curl"): "/usr/bin/curl\n", Container(): container + "\n"}
        table.update(answers or {})
        self._answers = {fact.command(): value if isinstance(value, RunResult) else RunResult(0, value, "")
                         for fact, value in table.items()}
        self.asked: list[Command] = []

    def execute(self, command: Command, *, sudo: bool = False) -> RunResult:
        self.asked.append(command)
        answer = self._answers.get(command) or _fresh(command)
        if answer is None:
            raise AssertionError(f"planning ran an unexpected command on the host: {command.describe()}")
        return answer


def planned(recap: HostRecap) -> dict[str, tuple[str, ...]]:
    """{step name: command descriptions} of the steps a check-mode run would change; fails on a failed step."""
    failed = [r for r in recap.results if r.status == "failed"]
    assert not failed, f"steps failed while planning: {[(r.name, r.error) for r in failed]}"
    return {r.name: r.commands for r in recap.results if r.status == "changed"}


def skipped(recap: HostRecap) -> set[str]:
    return {r.name for r in recap.results if r.status == "skipped"}
