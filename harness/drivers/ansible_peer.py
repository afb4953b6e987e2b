"""Ask the real ansible-core what it makes of inventories, in one worker process for many files.

`ansible-inventory` takes ~0.7 s to start; the worker (this file run as a script with the venv's Python)
starts once and answers a batch: for each job, `ansible-inventory --list` JSON (through Ansible's own
InventoryCLI) or the hosts `ansible all --limit PATTERN --list-hosts` would print. Ansible reads no user
configuration: ANSIBLE_CONFIG points at an empty file and ANSIBLE_HOME at a private folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


def ansible_env(home: Path) -> dict[str, str]:
    cfg = home / "ansible.cfg"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text("")
    keep = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    return {**keep, "ANSIBLE_CONFIG": str(cfg), "ANSIBLE_HOME": str(home), "ANSIBLE_INVENTORY_ENABLED": "yaml",
            "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True", "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "True",
            "ANSIBLE_NOCOLOR": "1", "ANSIBLE_DEPRECATION_WARNINGS": "False", "ANSIBLE_LOCALHOST_WARNING": "False",
            "ANSIBLE_HOST_PATTERN_MISMATCH": "ignore",
            "ANSIBLE_LOCAL_TEMP": str(home / "tmp"), "PYTHONWARNINGS": "ignore"}


def ask(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run jobs in one ansible worker; answers ({"ok": ...} or {"error": ...}) in order.

    {"list": PATH} / {"graph": PATH}: ansible-inventory --list (parsed) / --graph (text);
    {"hosts": PATH, "limit": PATTERN}: what `ansible all --limit PATTERN --list-hosts` selects;
    {"conn": PATH}: each host's connection variables rendered by Ansible's templar.
    """
    jobs = [{k: str(Path(v).resolve()) if k in ("list", "graph", "hosts", "conn") else v for k, v in j.items()}
            for j in jobs]
    with tempfile.TemporaryDirectory() as home:
        proc = subprocess.run([sys.executable, __file__], input=json.dumps(jobs), capture_output=True, text=True,
                              env=ansible_env(Path(home)), timeout=600, cwd=home)
    if proc.returncode != 0:
        raise RuntimeError(f"ansible worker failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def _worker() -> None:  # pragma: no cover - runs in the subprocess
    import contextlib
    import io

    from ansible.cli.inventory import InventoryCLI
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.parsing.vault import VaultSecretsContext
    from ansible.utils.context_objects import GlobalCLIArgs

    jobs = json.loads(sys.stdin.read())
    answers: list[dict[str, Any]] = []
    for job in jobs:
        try:
            VaultSecretsContext._current = None  # the CLI sets these up once per process
            GlobalCLIArgs._Singleton__instance = None  # type: ignore[attr-defined]
            if "list" in job or "graph" in job:
                buf = io.StringIO()
                argv = ["ansible-inventory", "-i", job.get("list") or job["graph"],
                        "--list" if "list" in job else "--graph"]
                with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
                    try:
                        InventoryCLI(argv).run()
                    except SystemExit as done:
                        if done.code != 0:
                            raise
                answers.append({"ok": json.loads(buf.getvalue()) if "list" in job else buf.getvalue()})
            elif "conn" in job:
                answers.append({"ok": _connection_vars(job["conn"])})
            else:
                with contextlib.redirect_stderr(io.StringIO()):
                    inv = InventoryManager(loader=DataLoader(), sources=[job["hosts"]])
                    if job.get("limit"):
                        inv.subset(job["limit"])
                    answers.append({"ok": [h.name for h in inv.get_hosts("all")]})
        except BaseException as exc:  # noqa: BLE001 - any refusal is an answer
            answers.append({"error": f"{type(exc).__name__}: {exc}".splitlines()[0]})
    print(json.dumps(answers))


CONNECTION_VARS = ("ansible_host", "ansible_ssh_host", "ansible_port", "ansible_ssh_port", "ansible_user",
                   "ansible_ssh_user", "ansible_ssh_private_key_file", "ansible_private_key_file",
                   "ansible_connection", "ansible_ssh_common_args", "ansible_ssh_extra_args")


def _connection_vars(path: str) -> dict[str, dict[str, Any]]:  # pragma: no cover - runs in the subprocess
    """Each host's connection variables, rendered by Ansible's own templar with the host's variables."""
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar
    from ansible.vars.manager import VariableManager

    loader = DataLoader()
    inv = InventoryManager(loader=loader, sources=[path])
    vm = VariableManager(loader=loader, inventory=inv)
    out: dict[str, dict[str, Any]] = {}
    for host in inv.get_hosts("all"):
        variables = vm.get_vars(host=host)
        templar = Templar(loader=loader, variables=variables)
        mine: dict[str, Any] = {}
        for var in CONNECTION_VARS:
            if variables.get(var) is not None:
                try:
                    mine[var] = str(templar.template(variables[var]))
                except Exception as exc:  # noqa: BLE001 - an unrenderable value is an answer too
                    mine[var] = {"error": str(exc).splitlines()[0]}
        out[host.name] = mine
    return out


if __name__ == "__main__":
    _worker()
