"""Benchmark: re-applying an unchanged 20-step recipe (a no-op run) with vmlab, pyinfra and Ansible.

    .venv/bin/python bench/provision_noop.py --runs 3    # everything; installs the peers into their own venv once
    .venv/bin/python bench/provision_noop.py --skip-peers   # vmlab only (nothing installed, results not saved)
    .venv/bin/python bench/provision_noop.py --rtt 50 --runs 2   # as if the host were 50 ms away

All three tools talk to the same real OpenSSH sshd on 127.0.0.1 (harness/emulators/sshd.py: its own host and client
keys, `SetEnv HOME` so root's pyenv-initialising ~/.bashrc is not run), as the same user with the same key, and
trust exactly that server's host key. Each tool gets a fresh target directory and converges it once (timed, and
verified file by file); then the tools re-apply in turn, N times each, and every re-apply must report no changes.
Nothing but 127.0.0.1 is contacted once the peers are installed (pip runs with --no-index from a wheel this
script builds). The same sshd then serves the command round trip of vmlab against bare paramiko.

The recipe is bench/recipe_noop.py; the equivalent Ansible playbook and pyinfra deploy are in bench/peers/, with
the inventory/config templates they are filled into; noop_endstate.py checks the result on disk and noop_tools.py
runs the three CLIs. With --rtt MS, all three talk to the sshd through latency_proxy.py, which delays each
direction by half of MS and counts the round trips each run waited for. See bench/README.md for the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from latency_proxy import LatencyProxy
from noop_endstate import TEMPLATE_VALUES, build_wheel, verify
from noop_report import report
from noop_tools import (
    RECIPE,
    REPO,
    Ansible,
    Pyinfra,
    Tool,
    ToolResult,
    VmlabCLI,
    converge,
    ensure_peers,
    fill,
    noop,
    timed,
)

RESULTS = Path(__file__).resolve().parent / "results" / "provision_noop.json"
DEFAULT_PEERS_VENV = Path(os.environ.get("VMLAB_BENCH_PEERS_VENV", "/tmp/vmlab-bench-peers"))


if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from harness.emulators.sshd import SSHD  # noqa: E402

# ---- vmlab in-process (engine time without the CLI's start-up) ------------------------------------------------


def bench_vmlab_inprocess(inventory: Path, runs: int, turns: Callable[[], int] | None = None) -> dict[str, Any]:
    """No-op runs through `vmlab.workflows.provision.provision` in this process (imports already warm); with
    `turns` (the latency proxy's counter), also the round trips of each run and the commands it sent."""
    import vmlab.workflows.provision as workflow
    from vmlab.engine.loader import load_recipe
    from vmlab.inventory import load_inventory

    opened: list[Any] = []
    plain_connect = workflow.connect

    def counting_connect(host: Any, retry_for: float) -> Any:
        opened.append(plain_connect(host, retry_for))
        return opened[-1]

    workflow.connect = counting_connect
    try:
        return _inprocess_runs(load_recipe, load_inventory, workflow.provision, inventory, runs, turns, opened)
    finally:
        workflow.connect = plain_connect


def _inprocess_runs(load_recipe: Any, load_inventory: Any, provision: Any, inventory: Path, runs: int,
                    turns: Callable[[], int] | None, opened: list[Any]) -> dict[str, Any]:
    from vmlab.inventory import select_hosts

    commands: list[int] = []
    round_trips: list[int] = []
    connects: list[float] = []
    totals: list[float] = []
    applies: list[float] = []
    per_step: dict[str, list[float]] = {}
    changed: list[int] = []
    for i in range(runs + 1):  # the first one warms imports and caches, and is not counted
        t0 = time.perf_counter()
        before = turns() if turns else 0
        recipe = load_recipe(RECIPE)
        hosts = select_hosts(load_inventory(inventory), None)
        seen: list[float] = []
        recaps = provision(recipe, hosts, on_connect=lambda _h, s, seen=seen: seen.append(s))
        total = time.perf_counter() - t0
        round_trips.append(turns() - before if turns else 0)
        commands.append(opened[-1].commands)
        recap = recaps[0]
        if not recap.success:
            raise RuntimeError(f"in-process vmlab run failed: {recap.error or recap.results[-1].error}")
        if i == 0:
            continue
        totals.append(total)
        applies.append(recap.elapsed)
        connects.append(seen[0] if seen else float("nan"))
        changed.append(recap.changed)
        for r in recap.results:
            per_step.setdefault(r.name, []).append(r.elapsed)
    steps = sorted(((name, statistics.median(v)) for name, v in per_step.items()), key=lambda x: -x[1])
    return {"total": statistics.median(totals), "connect": statistics.median(connects),
            "commands": max(commands), "turns": max(round_trips) if turns else None,
            "apply": statistics.median(applies), "changed": max(changed), "steps": steps,
            "step_sum": sum(s for _, s in steps)}


def cli_startup(env: dict[str, str], runs: int) -> float:
    """Median seconds for the vmlab CLI to import what `provision` needs and exit (no SSH)."""
    code = ("import vmlab.cli, vmlab.cli.provision, vmlab.engine.loader, vmlab.inventory, "
            "vmlab.workflows.provision, vmlab.transport.ssh, vmlab.operations.files, vmlab.operations.pip, "
            "vmlab.operations.shell, jinja2, rich.console")
    samples = []
    for _ in range(max(3, runs)):
        seconds, proc = timed([sys.executable, "-c", code], env, REPO)
        if proc.returncode != 0:
            return float("nan")
        samples.append(seconds)
    return statistics.median(samples)


# ---- command round trip ---------------------------------------------------------------------------------------


Client = tuple[Callable[[], float], Callable[[], None]]  # (time one `true`, close)


def _open_vmlab(server: SSHD, port: int, known_hosts: Path) -> Client:
    """A vmlab SSHConnection to the sshd."""
    from vmlab.engine.command import Command
    from vmlab.transport.ssh import SSHConnection

    conn = SSHConnection(server.target(known_hosts=known_hosts, port=port), persist=0).open()
    command = Command("true")

    def once() -> float:
        t0 = time.perf_counter()
        r = conn.execute(command)
        dt = time.perf_counter() - t0
        if r.rc != 0:
            raise RuntimeError(f"vmlab execute(true) exited {r.rc}: {r.stderr}")
        return dt

    return once, conn.close


def _open_raw(server: SSHD, port: int) -> Client:
    """A bare paramiko Transport (TCP_NODELAY, host key checked) to the sshd; same shape as `_open_vmlab`."""
    import socket

    import paramiko

    sock = socket.create_connection((server.host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    raw = paramiko.Transport(sock)
    raw.start_client(timeout=10)
    presented = raw.get_remote_server_key()
    if f"{presented.get_name()} {presented.get_base64()}" != server.host_key_pub:
        raw.close()
        raise RuntimeError("raw paramiko: the sshd presented an unexpected host key")
    raw.auth_publickey(server.user, paramiko.PKey.from_path(server.client_key))

    def once() -> float:
        t0 = time.perf_counter()
        chan = raw.open_session()
        chan.exec_command("true")
        rc = chan.recv_exit_status()
        chan.close()
        dt = time.perf_counter() - t0
        if rc != 0:
            raise RuntimeError(f"raw paramiko true exited {rc}")
        return dt

    return once, raw.close


def bench_round_trip(server: SSHD, port: int, known_hosts: Path, n: int) -> dict[str, Any]:
    """Median seconds of one `true` through vmlab's SSHConnection.execute and through bare paramiko on the same
    sshd, measured in alternating batches so drift hits both alike; and of the first command right after
    connecting, which is much slower for both (it is the first step of every vmlab run, not its steady state)."""
    firsts: dict[str, list[float]] = {"vmlab": [], "raw": []}
    for _ in range(3):
        for name in firsts:
            once, close = _open_vmlab(server, port, known_hosts) if name == "vmlab" else _open_raw(server, port)
            try:
                firsts[name].append(once())
            finally:
                close()
    (vmlab_once, vmlab_close), (raw_once, raw_close) = _open_vmlab(server, port, known_hosts), _open_raw(server, port)
    try:
        for _ in range(min(10, n)):  # warm-up
            vmlab_once()
            raw_once()
        vm: list[float] = []
        rw: list[float] = []
        batch = min(20, n)
        while len(vm) < n:
            k = min(batch, n - len(vm))
            vm += [vmlab_once() for _ in range(k)]
            rw += [raw_once() for _ in range(k)]
    finally:
        vmlab_close()
        raw_close()
    return {"n": n, "vmlab": statistics.median(vm), "raw": statistics.median(rw),
            "vmlab_p90": statistics.quantiles(vm, n=10)[-1], "raw_p90": statistics.quantiles(rw, n=10)[-1],
            "vmlab_first": statistics.median(firsts["vmlab"]), "raw_first": statistics.median(firsts["raw"])}


def handshake_turns(server: SSHD, port: int, known_hosts: Path, turns: Callable[[], int] | None,
                    rtt_ms: float) -> int:
    """Round trips of a bare vmlab connect through the proxy (0 without one): what every SSH run pays first.
    It waits a few round trips after connecting, so the server's post-login messages are counted here too."""
    if turns is None:
        return 0
    from vmlab.transport.ssh import SSHConnection

    before = turns()
    with SSHConnection(server.target(known_hosts=known_hosts, port=port), persist=0).open():
        time.sleep(4 * rtt_ms / 1000 + 0.05)
        return turns() - before


# ---- main -----------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="no-op re-applies per tool; the median is reported "
                                                        "(default 3)")
    ap.add_argument("--skip-peers", action="store_true", help="benchmark vmlab only (no pyinfra/ansible)")
    ap.add_argument("--rtt-runs", type=int, default=200, help="commands for the round-trip median (default 200)")
    ap.add_argument("--peers-venv", type=Path, default=DEFAULT_PEERS_VENV,
                    help=f"venv for pyinfra and ansible-core (default {DEFAULT_PEERS_VENV}; "
                         "env VMLAB_BENCH_PEERS_VENV)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (targets, inventories, logs)")
    ap.add_argument("--rtt", type=float, default=0.0, metavar="MS",
                    help="added network round trip in ms, through a latency proxy on 127.0.0.1 (default 0: none)")
    ap.add_argument("--persist", type=float, default=300.0, metavar="SECONDS",
                    help="how long vmlab's SSH connection master and Ansible's OpenSSH ControlPersist master "
                         "outlive a run, the same for both (default 300: longer than a round of all tools, "
                         "converges included, on a loaded machine); `vmlab-direct` is vmlab with persistence off")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.rtt_runs < 10 or not 0 <= args.rtt <= 1000 or args.persist <= 0:
        ap.error("--runs must be >= 1, --rtt-runs >= 10, --rtt between 0 and 1000 and --persist positive")

    versions = {} if args.skip_peers else ensure_peers(args.peers_venv)
    from vmlab import __version__ as vmlab_version

    work = Path(tempfile.mkdtemp(prefix="vmlab-bench-"))
    server = SSHD(work / "sshd")
    server.start()
    proxy = LatencyProxy(server.host, server.port, args.rtt / 1000) if args.rtt > 0 else None
    try:
        port = proxy.port if proxy else server.port  # where every tool connects
        turns = (lambda: proxy.turns) if proxy else None
        known_hosts = work / "known_hosts"
        known_hosts.write_text(f"[{server.host}]:{port} {server.host_key_pub}\n")
        wheel_dir = work / "wheels"
        build_wheel(wheel_dir)
        os.environ["VMLAB_STATE_DIR"] = str(work / "vmlab-state")  # this process's own vmlab runs
        os.environ["VMLAB_CACHE_DIR"] = str(work / "vmlab-cache")
        # The in-process runs use the CLI runs' connection master, like a second CLI run would.
        (work / "run").mkdir(mode=0o700)
        os.environ["XDG_RUNTIME_DIR"] = str(work / "run")
        os.environ["VMLAB_SSH_PERSIST"] = f"{args.persist:g}"

        # The target's Python 3 (found over SSH, so it is what a login through this sshd sees).
        from vmlab.transport.ssh import SSHConnection

        with SSHConnection(server.target(known_hosts=known_hosts, port=port), persist=0).open(retry_for=10) as conn:
            py = conn.run("sh", "-c", "command -v python3").stdout.strip()
        delay = {"rtt_ms": args.rtt, "handshake": handshake_turns(server, port, known_hosts, turns, args.rtt)}
        common = {"port": port, "user": server.user, "key": str(server.client_key),
                  "known_hosts": str(known_hosts), "wheel_dir": str(wheel_dir), "py": py,
                  "host_key": server.host_key_pub,
                  "ssh_common_args": f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes "
                                     "-o IdentitiesOnly=yes -o GlobalKnownHostsFile=/dev/null",
                  **TEMPLATE_VALUES}
        print(f"sshd on 127.0.0.1:{server.port} as {server.user}; work dir {work}; target python {py}", flush=True)
        if proxy:
            print(f"latency proxy on 127.0.0.1:{port}: +{args.rtt:g} ms round trip; an SSH handshake is "
                  f"{delay['handshake']} round trips", flush=True)

        tools: list[tuple[Tool, ToolResult]] = []
        root = work / "target-vmlab"
        inv = fill("inventory.yml.in", work / "inventory-vmlab.yml", json.dumps, root=str(root), **common)
        vmlab_tool = VmlabCLI(work, root, inv, args.persist)
        res = ToolResult("vmlab", vmlab_version, "20 steps")
        res.notes.append(f"SSH connection master kept {args.persist:g}s after each run (VMLAB_SSH_PERSIST)")
        tools.append((vmlab_tool, res))
        root = work / "target-vmlab-direct"
        inv_d = fill("inventory.yml.in", work / "inventory-vmlab-direct.yml", json.dumps, root=str(root), **common)
        res = ToolResult("vmlab-direct", vmlab_version, "20 steps")
        res.notes.append("VMLAB_SSH_PERSIST=0: every run makes its own SSH connection (vmlab before persistence)")
        tools.append((VmlabCLI(work, root, inv_d, 0), res))
        if not args.skip_peers:
            root = work / "target-pyinfra"
            inv_p = fill("pyinfra_inventory.py.in", work / "inventory_pyinfra.py", repr, root=str(root), **common)
            res = ToolResult("pyinfra", versions["pyinfra"], "21 operations")
            res.notes.append("pip.venv + pip.packages for vmlab's one pip step; shell guards are facts read "
                             "while the deploy is prepared; no TCP_NODELAY in its paramiko connector")
            tools.append((Pyinfra(work, root, inv_p, args.peers_venv), res))
            root = work / "target-ansible"
            inv_a = fill("inventory.yml.in", work / "inventory-ansible.yml", json.dumps, root=str(root), **common)
            cfg = fill("ansible.cfg.in", work / "ansible.cfg", str, py=py,
                       control_path_dir=str(work / "ansible-cp"), persist=f"{args.persist:g}")
            res = ToolResult("ansible", versions["ansible-core"], "21 tasks")
            res.notes.append("pipelining on, gather_facts off (faster than Ansible's defaults); OpenSSH "
                             f"ControlPersist={args.persist:g}s reuses one connection across runs; the "
                             "`unless` guard is a separate command task")
            tools.append((Ansible(work, root, inv_a, cfg, args.peers_venv), res))
        results = [res for _, res in tools]

        print("converging a fresh target per tool:", flush=True)
        active = [(tool, res) for tool, res in tools if converge(tool, res, verify)]
        # Round-robin, so a slow drift of the machine (thermal, other load) hits every tool alike.
        print(f"no-op re-applies, {args.runs} per tool, in turn:", flush=True)
        for i in range(args.runs):
            active = [(tool, res) for tool, res in active if noop(tool, res, f"{i + 1}/{args.runs}", turns)]
        for tool, res in tools:
            if res.noops:
                res.problems += [f"after no-op runs: {p}" for p in verify(tool.root)]

        inproc = None
        startup = None
        if not results[0].problems:
            print("  vmlab: in-process workflow no-op runs ...", flush=True)
            inproc = bench_vmlab_inprocess(inv, args.runs, turns)
            if inproc["changed"]:
                results[0].problems.append(f"in-process no-op run reported {inproc['changed']} change(s)")
            startup = cli_startup(vmlab_tool.env, args.runs)
        n = args.rtt_runs if not proxy else min(args.rtt_runs, 20)  # 20 is plenty when each takes 50 ms
        print(f"  round trip: {n} x `true` through vmlab and raw paramiko ...", flush=True)
        rtt = bench_round_trip(server, port, known_hosts, n)

        text, data = report(results, inproc, startup, rtt, args.runs, port, delay)
        data["persist_seconds"] = args.persist
        print(text)
        openssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
        data["versions"] = {"vmlab": vmlab_version, **versions, "python": sys.version.split()[0], "openssh": openssh}
        data["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform()}
        if args.skip_peers:  # the saved results are the comparison; a vmlab-only run does not replace them
            print("\n(--skip-peers: results not saved)")
        else:
            saved = RESULTS if not proxy else RESULTS.with_name(f"provision_noop_rtt{args.rtt:g}.json")
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.write_text(json.dumps(data, indent=2, default=str) + "\n")
            print(f"\n(results also in {saved.relative_to(REPO)})")
        if args.keep:
            print(f"(kept {work}; sshd stopped)")
        return 1 if any(r.problems for r in results) else 0
    finally:
        if proxy:
            proxy.close()
        server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
