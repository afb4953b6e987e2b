"""The report of bench/provision_noop.py: a table per tool, the targets with their ratios, where vmlab's time
goes, and (with --rtt) the round trips each tool waited for. Returns the text and the JSON to save."""

from __future__ import annotations

from typing import Any

from noop_tools import ToolResult

# (vmlab / pyinfra no-op, vmlab / ansible no-op) on loopback, and with an added round trip (--rtt > 0)
TARGETS = {False: (0.5, 0.2), True: (0.1, 0.05)}
TARGET_RTT = 2.0  # vmlab execute("true") / raw paramiko with TCP_NODELAY
TARGET_TURNS = 4  # round trips of a vmlab no-op after the SSH handshake (with --rtt)


def verdict(ratio: float | None, target: float) -> str:
    if ratio is None:
        return "n/a"
    return "PASS" if ratio <= target else "MISS"


def report(results: list[ToolResult], inproc: dict[str, Any] | None, startup: float | None,
           rtt: dict[str, Any], runs: int, port: int, delay: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """`delay`: {"rtt_ms": added round trip, "handshake": round trips of an SSH connect through the proxy}."""
    lines: list[str] = []
    w = lines.append
    w("")
    w(f"vmlab provisioning benchmark: a 20-step recipe re-applied over OpenSSH sshd on 127.0.0.1:{port}")
    far = delay["rtt_ms"] > 0
    if far:
        w(f"through a latency proxy that adds {delay['rtt_ms']:g} ms of round trip (half each way)")
    w(f"(no-op = median of {runs} re-applies of an already converged target; converge = the first run)")
    w("")
    w(f"{'tool':<34} {'version':<10} {'work/run':<18} {'converge':>9} {'no-op median':>13} "
      f"{'no-op min..max':>15}  {'changes':>7}  verified")
    by_name = {r.name: r for r in results}
    for r in results:
        med = r.noop_median
        mn = min((x.seconds for x in r.noops), default=None)
        mx = max((x.seconds for x in r.noops), default=None)
        conv = f"{r.converge.seconds:.2f}s" if r.converge else "-"
        span = f"{mn:.2f}..{mx:.2f}s" if mn is not None else "-"
        changes = ",".join(str(x.changed) for x in r.noops) or "-"
        state = "yes" if not r.problems else "NO"
        label = {"vmlab": "vmlab (CLI: vmlab provision)", "vmlab-direct": "vmlab, persistence off (CLI)",
                 "pyinfra": "pyinfra (CLI)",
                 "ansible": "ansible-core (ansible-playbook)"}.get(r.name, r.name)
        w(f"{label:<34} {r.version:<10} {r.units:<18} {conv:>9} "
          f"{(f'{med:.3f}s' if med is not None else '-'):>13} {span:>15}  {changes:>7}  {state}")
    if inproc:
        w(f"{'vmlab (in-process workflow)':<34} {'':<10} {'20 steps':<18} {'':>9} {inproc['total']:>12.3f}s "
          f"{'':>15}  {inproc['changed']:>7}  (same target)")
    w("")
    vm = by_name.get("vmlab")
    out: dict[str, Any] = {"runs": runs, "rtt_ms": delay["rtt_ms"], "tools": {}, "targets": {}}
    for r in results:
        out["tools"][r.name] = {"version": r.version, "units": r.units,
                                "converge": r.converge.seconds if r.converge else None,
                                "noop": [x.seconds for x in r.noops], "noop_median": r.noop_median,
                                "noop_changes": [x.changed for x in r.noops], "problems": r.problems,
                                "noop_round_trips": [x.turns for x in r.noops],
                                "notes": r.notes}
    w(f"{'target':<44} {'measured':>10} {'target':>8}  result")
    for peer, target in zip(("pyinfra", "ansible"), TARGETS[far], strict=True):
        p = by_name.get(peer)
        ratio = None
        if vm and p and vm.noop_median and p.noop_median and not vm.problems and not p.problems:
            ratio = vm.noop_median / p.noop_median
        shown = f"{ratio:.3f}x" if ratio is not None else "-"
        why = "" if ratio is not None or not p else "  (not comparable: see problems below)"
        if not p:
            why = "  (skipped)"
        w(f"{'no-op wall time vmlab / ' + peer:<44} {shown:>10} {'<= ' + str(target) + 'x':>8}  "
          f"{verdict(ratio, target)}{why}")
        out["targets"][f"vmlab/{peer}"] = {"ratio": ratio, "target": target, "result": verdict(ratio, target)}
        direct = by_name.get("vmlab-direct")
        if direct and p and direct.noop_median and p.noop_median and not direct.problems and not p.problems:
            before = direct.noop_median / p.noop_median
            w(f"{'  (persistence off: vmlab-direct / ' + peer + ')':<44} {before:>9.3f}x {'':>8}  (for comparison)")
            out["targets"][f"vmlab-direct/{peer}"] = {"ratio": before, "target": target,
                                                      "result": verdict(before, target)}
    if far and vm and vm.noops and all(x.turns is not None for x in vm.noops):
        # The target allows 4 round trips plus the SSH handshake; a run through a connection master has none.
        whole = max(int(x.turns or 0) for x in vm.noops)
        limit = TARGET_TURNS + delay["handshake"]
        result = "PASS" if whole <= limit else "MISS"
        w(f"{'vmlab no-op round trips, whole run (max)':<44} {whole:>10} {'<= ' + str(limit):>8}  {result}"
          f"  (4 + the handshake's {delay['handshake']})")
        out["targets"]["round_trips"] = {"measured": whole, "target": limit, "result": result}
    rtt_ratio = rtt["vmlab"] / rtt["raw"]
    w(f"{'round trip vmlab / raw paramiko+TCP_NODELAY':<44} {rtt_ratio:>9.3f}x {'<= ' + str(TARGET_RTT) + 'x':>8}  "
      f"{verdict(rtt_ratio, TARGET_RTT)}")
    out["targets"]["round_trip"] = {"ratio": rtt_ratio, "target": TARGET_RTT, "result": verdict(rtt_ratio, TARGET_RTT)}
    w(f"  command round trip, median of {rtt['n']}: vmlab SSHConnection.execute(Command('true')) "
      f"{rtt['vmlab'] * 1000:.2f} ms (p90 {rtt['vmlab_p90'] * 1000:.2f}); raw paramiko "
      f"{rtt['raw'] * 1000:.2f} ms (p90 {rtt['raw_p90'] * 1000:.2f})")
    w(f"  first command on a fresh connection: vmlab {rtt['vmlab_first'] * 1000:.1f} ms, raw paramiko "
      f"{rtt['raw_first'] * 1000:.1f} ms")
    out["round_trip"] = rtt
    if far:
        w("")
        w(f"round trips each no-op run waited for (counted at the proxy; the SSH handshake alone is "
          f"{delay['handshake']}):")
        for r in results:
            w(f"  {r.name:<8} {', '.join(str(x.turns) for x in r.noops) or '-'}")
        if inproc:
            w(f"  vmlab in-process: {inproc['turns']} round trips, {inproc['commands']} commands")
        out["handshake_round_trips"] = delay["handshake"]
    if inproc:
        w("")
        w("where vmlab's no-op time goes (medians):")
        if startup is not None:
            w(f"  CLI process start + imports (no SSH)    {startup:.3f}s")
        w(f"  in-process: connect+auth               {inproc['connect']:.3f}s")
        w(f"  in-process: apply 20 steps             {inproc['apply']:.3f}s, {inproc['commands']} commands "
          f"({inproc['apply'] / 20 * 1000:.1f} ms/step)")
        w(f"  in-process: total incl. recipe load    {inproc['total']:.3f}s")
        top = ", ".join(f"{n} {s * 1000:.1f} ms" for n, s in inproc["steps"][:3])
        w(f"  slowest steps: {top}")
        out["vmlab_breakdown"] = {"cli_startup": startup, **inproc}
    notes = [f"{r.name}: {n}" for r in results for n in r.notes]
    if notes:
        w("")
        w("notes:")
        lines.extend(f"  - {n}" for n in notes)
    problems = [(r.name, p) for r in results for p in r.problems]
    if problems:
        w("")
        w("PROBLEMS (results for these tools are not comparable):")
        for name, problem in problems:
            w(f"  - {name}: {problem}")
    return "\n".join(lines), out


