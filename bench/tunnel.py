"""Benchmark: `vmlab tunnel` (each backend) against a plain `ssh -N -L`, through one real sshd on 127.0.0.1.

    .venv/bin/python bench/tunnel.py              # 200 MB download x3 and 200 small requests per tunnel
    .venv/bin/python bench/tunnel.py --mb 50 --requests 50 --runs 1    # quicker, results not saved

An HTTP server on 127.0.0.1 stands in for JupyterLab (it checks the token on /api/status, as vmlab's tunnel
does before it reports ready) and serves a large body and a tiny one. Each tunnel forwards a local port to it
through the sshd of harness/emulators/sshd.py (own host and client keys); all tunnels are measured in the same run,
in turn, so they see the same machine. Download: the median MB/s (10^6 bytes) of `--runs` full downloads.
Latency: the median of `--requests` small GETs, each on a fresh TCP connection (so each opens an SSH channel,
as a browser's new connection does). The default backend is compared with `ssh -L`; targets: >= 0.9x its
throughput and <= 1.1x its latency. Results go to bench/results/tunnel.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from harness.emulators.sshd import SSHD, free_port  # noqa: E402

RESULTS = REPO / "bench" / "results" / "tunnel.json"
TOKEN = "bench-token"
CHUNK = b"\0" * (1 << 20)
MB = 1_000_000


def make_handler(big_bytes: int) -> type[BaseHTTPRequestHandler]:
    class Lab(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # as JupyterLab (tornado) does: else headers and body, written apart, wait on delayed ACKs (40 ms)
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path == "/big":
                self._send(200, big_bytes)
                left = big_bytes
                while left:
                    n = min(left, len(CHUNK))
                    self.wfile.write(CHUNK[:n] if n < len(CHUNK) else CHUNK)
                    left -= n
                return
            ok = self.path != "/api/status" or self.headers.get("Authorization") == f"token {TOKEN}"
            body = b'{"ok": true}' if ok else b"forbidden"
            # one write, as tornado does for a small answer: split in two, the second part can sit behind
            # Nagle and a delayed ACK on the tunnel's local socket (40 ms) and measure that instead of the tunnel
            status = b"200 OK" if ok else b"403 Forbidden"
            self.wfile.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: " + str(len(body)).encode()
                             + b"\r\n\r\n" + body)

        def _send(self, code: int, length: int) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(length))
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    return Lab


def download(port: int, expected: int) -> float:
    """MB/s of one GET /big through `port`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    t0 = time.perf_counter()
    conn.request("GET", "/big")
    resp = conn.getresponse()
    got = 0
    while chunk := resp.read(1 << 20):
        got += len(chunk)
    elapsed = time.perf_counter() - t0
    conn.close()
    if got != expected:
        raise RuntimeError(f"downloaded {got} bytes, expected {expected}")
    return expected / MB / elapsed


def small_requests(port: int, n: int) -> list[float]:
    """Milliseconds of `n` GET /small, each on a fresh connection."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/small")
        resp = conn.getresponse()
        resp.read()
        conn.close()
        if resp.status != 200:
            raise RuntimeError(f"GET /small answered {resp.status}")
        times.append((time.perf_counter() - t0) * 1000)
    return times


@contextmanager
def vmlab_tunnel(server: SSHD, app_port: int, backend: str) -> Iterator[int]:
    from vmlab.state import LabRecord, LabStore
    from vmlab.workflows.tunnel import open_tunnel

    record = LabRecord(name="bench", provider="local", instance_id="lvm-000000bench", image="limg-000000",
                       user=server.user, key_file=str(server.client_key), host_key=server.host_key_pub,
                       token=TOKEN, host=server.host, port=server.port, jupyter_port=app_port)
    LabStore().put(record)
    t = open_tunnel(record, free_port(), backend=backend)
    try:
        yield t.local_port
    finally:
        t.close()


@contextmanager
def plain_ssh(server: SSHD, app_port: int, work: Path) -> Iterator[int]:
    """`ssh -N -L` as a user would type it, with the same key and the sshd's host key pinned."""
    known = work / "known_hosts"
    known.write_text(f"[{server.host}]:{server.port} {server.host_key_pub}\n")
    local = free_port()
    proc = subprocess.Popen(["ssh", "-N", "-F", "none", "-L", f"127.0.0.1:{local}:127.0.0.1:{app_port}",
                             "-p", str(server.port), "-i", str(server.client_key), "-o", "IdentitiesOnly=yes",
                             "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
                             "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes", f"{server.user}@{server.host}"],
                            stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                small_requests(local, 1)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("plain ssh -L did not come up") from None
                time.sleep(0.1)
        yield local
    finally:
        proc.terminate()
        proc.wait(10)


def measure(openers: dict[str, Callable[[], Any]], big: int, runs: int, requests: int) -> list[dict[str, Any]]:
    """Open every tunnel, then take turns: each download round and each batch of 20 requests goes through
    every tunnel, so a noisy moment of the machine is shared rather than landing on one tunnel."""
    rates: dict[str, list[float]] = {name: [] for name in openers}
    lat: dict[str, list[float]] = {name: [] for name in openers}
    with ExitStack() as stack:
        ports = {name: stack.enter_context(opener()) for name, opener in openers.items()}
        for port in ports.values():
            small_requests(port, 10)  # warm-up
        for _ in range(runs):
            for name, port in ports.items():
                rates[name].append(download(port, big))
        for done in range(0, requests, 20):
            for name, port in ports.items():
                lat[name] += small_requests(port, min(20, requests - done))
    rows = []
    for name in openers:
        row = {"tunnel": name, "mb_per_s": round(statistics.median(rates[name]), 1),
               "mb_per_s_runs": [round(r, 1) for r in rates[name]],
               "latency_ms_median": round(statistics.median(lat[name]), 3),
               "latency_ms_p90": round(statistics.quantiles(lat[name], n=10)[-1], 3)}
        print(f"{name:<18} {row['mb_per_s']:>8.1f} MB/s   median {row['latency_ms_median']:.2f} ms   "
              f"p90 {row['latency_ms_p90']:.2f} ms", flush=True)
        rows.append(row)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=200, help="size of the large body in MB (default 200)")
    ap.add_argument("--runs", type=int, default=3, help="downloads per tunnel (median reported)")
    ap.add_argument("--requests", type=int, default=200, help="small requests per tunnel")
    args = ap.parse_args()
    if not shutil.which("ssh"):
        print("bench/tunnel.py needs the OpenSSH client (`ssh`)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="vmlab-bench-tunnel-"))
    os.environ["VMLAB_STATE_DIR"] = str(work / "state")
    big = args.mb * MB
    app = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(big))
    app_port = int(app.server_address[1])
    threading.Thread(target=app.serve_forever, daemon=True).start()
    server = SSHD(work / "sshd")
    server.start()
    try:
        from vmlab.workflows.tunnel import BACKENDS

        default = "openssh"  # what `vmlab tunnel` picks when `ssh` exists, as here
        openers: dict[str, Callable[[], Any]] = {"ssh -N -L": lambda: plain_ssh(server, app_port, work)}
        for backend in BACKENDS:
            openers[f"vmlab {backend}"] = lambda b=backend: vmlab_tunnel(server, app_port, b)  # type: ignore[misc]
        rows = measure(openers, big, args.runs, args.requests)
    finally:
        server.stop()
        server.cleanup()
        app.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    base = rows[0]
    ratios = {r["tunnel"]: {"throughput": round(r["mb_per_s"] / base["mb_per_s"], 2),
                            "latency": round(r["latency_ms_median"] / base["latency_ms_median"], 2)}
              for r in rows[1:]}
    for name, ratio in ratios.items():
        print(f"{name:<18} {ratio['throughput']:.2f}x ssh -L throughput, {ratio['latency']:.2f}x its latency")
    d = ratios[f"vmlab {default}"]
    ok = d["throughput"] >= 0.9 and d["latency"] <= 1.1
    print(f"default backend ({default}): target >= 0.9x throughput and <= 1.1x latency: "
          f"{'met' if ok else 'NOT met'}")
    doc = {"machine": {"python": platform.python_version(), "platform": platform.platform(),
                       "cpus": os.cpu_count(), "ssh": subprocess.run(["ssh", "-V"], capture_output=True,
                                                                      text=True).stderr.strip()},
           "settings": {"mb": args.mb, "runs": args.runs, "requests": args.requests},
           "default_backend": default, "rows": rows, "ratios_vs_ssh_L": ratios, "target_met": ok}
    if (args.mb, args.runs, args.requests) == (200, 3, 200):
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"saved {RESULTS.relative_to(REPO)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
