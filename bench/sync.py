"""Benchmark: the `vmlab-agent sync` daemon against `aws s3 sync`, on one moto S3 server on 127.0.0.1.

    .venv/bin/python bench/sync.py                    # 5,000 files, 10 changes each, 10 s idle CPU
    .venv/bin/python bench/sync.py --files 500 --changes 3 --idle 3    # quicker, results not saved
    .venv/bin/python bench/sync.py --large 10 --large-mb 100           # also 10 files of 100 MB

A tree of `--files` small files (100 folders) is uploaded once by each tool to its own prefix of one bucket.
Then one file at a time is changed, `--changes` times:
- the daemon (watching the folder) uploads it by itself; the time from the write to the object holding the new
  bytes is its save-to-object latency;
- the peer is a user running `aws s3 sync FOLDER s3://bucket/prefix` right after each save: its latency is the
  same write-to-object time (the CLI run).
Every request either tool makes passes through a counting proxy (harness/faults/awsfaults.py) in front of moto,
so requests are counted at the HTTP level, by type (LIST, GET, HEAD, PUT, POST, DELETE); the polling that
detects the new object goes to moto directly and is not counted. Also measured: a restore of the tree into an
empty folder (`vmlab-agent sync --once`: one listing, one GET per file) against `aws s3 sync` downloading it,
and the idle CPU of the running daemon over `--idle` seconds (inotify: no polling of the tree).
With `--large N`, N files of `--large-mb` MB are uploaded (`vmlab-agent sync --once --no-restore`) by each tool
in turns (vmlab, aws, aws, vmlab; the mean of each tool's two runs) and restored once (`vmlab-agent restore`), on a
second moto server over HTTPS, as real S3 is (over plain HTTP botocore hashes every request body for the
signature, which it never does against S3). Both tools upload and download up to 10 files at once.
Targets: 1 write and 0 LIST per changed file, save-to-object p95 <= 2 s, first upload and restore at least as
fast as `aws s3 sync` (ratio <= 1). Results go to bench/results/sync.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from harness.emulators.moto import MotoServer  # noqa: E402
from harness.faults.awsfaults import FaultProxy  # noqa: E402

RESULTS = REPO / "bench" / "results" / "sync.json"
BUCKET = "vmlab-bench-sync"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "3"}


def make_tree(folder: Path, count: int) -> list[str]:
    names = []
    for i in range(count):
        rel = f"d{i % 100:02d}/file{i:05d}.txt"
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"file {i}\n".encode() * 20)
        names.append(rel)
    return names


class Counting:
    """Request types through the proxy since the last `take()`."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.seen = 0

    def take(self) -> Counter[str]:
        records = self.proxy.records[self.seen:]
        self.seen += len(records)
        kinds: Counter[str] = Counter()
        for call in records:
            if call.method == "GET":
                kinds["LIST" if call.path.rstrip("/").count("/") == 1 else "GET"] += 1
            else:
                kinds[call.method] += 1
        return kinds


def wait_for(s3: Any, key: str, body: bytes, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body:
                return
        except s3.exceptions.NoSuchKey:
            pass
        time.sleep(0.01)
    raise TimeoutError(f"{key} did not reach the bucket within {timeout}s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


class Daemon:
    def __init__(self, folder: Path, url: str, env: dict[str, str], state: Path) -> None:
        state.mkdir(parents=True, exist_ok=True)
        self.log = state / "agent.log"
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vmlab.agent", "sync", "--folder", str(folder), "--url", url, "-v"],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        while not (state / "agent" / "status.json").exists():  # written after the first pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the agent did not start:\n{self.log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)


def aws(env: dict[str, str], *args: str) -> float:
    start = time.monotonic()
    subprocess.run([str(Path(sys.executable).with_name("aws")), "s3", *args, "--only-show-errors"], env=env,
                   check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def summary(latencies: list[float], requests: Counter[str], changes: int) -> dict[str, Any]:
    return {
        "save_to_object_s": {"p50": round(statistics.median(latencies), 3),
                             "p95": round(percentile(latencies, 0.95), 3), "all": [round(x, 3) for x in latencies]},
        "requests_per_change": {kind: round(n / changes, 2) for kind, n in sorted(requests.items())},
    }


def other_backends(args: argparse.Namespace, base_env: dict[str, str], work: Path) -> dict[str, Any]:
    """The daemon alone on Azurite and fake-gcs-server (harness/emulators/), same tree and changes: its requests per
    change (through the same kind of counting proxy) and save-to-object latency."""
    from harness.drivers.storebackends import AzureBackend, Backend, GCSBackend
    from harness.emulators.azurite import Azurite
    from harness.emulators.gcs import FakeGCS

    found: dict[str, Any] = {}
    for name in ("azure", "gcs"):
        server: Any = Azurite.start_new() if name == "azure" else FakeGCS.start_new()
        backend: Backend = (AzureBackend(server, os.environ.__setitem__) if name == "azure"
                            else GCSBackend(server, os.environ.__setitem__))
        folder, state = work / f"daemon-{name}", work / f"state-{name}"
        try:
            names = make_tree(folder, args.files)
            env = {**base_env, **backend.env, "VMLAB_STATE_DIR": str(state)}
            start = time.monotonic()
            daemon = Daemon(folder, backend.url, env, state)
            try:
                last = (folder / names[-1]).read_bytes()
                while backend.read(backend.prefix + names[-1]) != last:
                    time.sleep(0.05)
                initial = {"seconds": round(time.monotonic() - start, 2),
                           "requests": dict(Counter(kind.upper() for kind in backend.requests()))}
                time.sleep(1.0)
                backend.requests()
                rng, latencies = random.Random(7), []
                for i in range(args.changes):
                    rel, body = rng.choice(names), f"change {i} at {time.time()}\n".encode()
                    t0 = time.monotonic()
                    (folder / rel).write_bytes(body)
                    while backend.read(backend.prefix + rel) != body:
                        time.sleep(0.01)
                    latencies.append(time.monotonic() - t0)
                    time.sleep(0.5)
                requests = Counter(kind.upper() for kind in backend.requests())
            finally:
                daemon.stop()
            found[name] = {"initial": initial, **summary(latencies, requests, args.changes)}
            print(f"{name}: initial upload {initial['seconds']} s {initial['requests']}; per change "
                  f"{found[name]['requests_per_change']}, save-to-object p50 {found[name]['save_to_object_s']['p50']} s"
                  f" p95 {found[name]['save_to_object_s']['p95']} s")
        finally:
            backend.close()
            server.cleanup()
    return found


def tls_moto(work: Path, env: dict[str, str]) -> tuple[MotoServer, dict[str, str]]:
    """A second moto server, over HTTPS (a self-signed certificate for 127.0.0.1 that both tools trust through
    AWS_CA_BUNDLE), holding the bucket; and the environment that points both tools at it."""
    import boto3

    cert, key = work / "moto-cert.pem", work / "moto-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    server = MotoServer.start_new(tls=(cert, key))
    boto3.client("s3", endpoint_url=server.endpoint, verify=str(cert)).create_bucket(Bucket=BUCKET)
    return server, {**env, "AWS_ENDPOINT_URL": server.endpoint, "AWS_CA_BUNDLE": str(cert)}


def large_files(args: argparse.Namespace, env: dict[str, str], work: Path) -> dict[str, Any]:
    """Upload `args.large` files of `args.large_mb` MB once with each tool, then restore them into empty folders,
    over HTTPS as with real S3 (`tls_moto`)."""
    server, env = tls_moto(work, env)
    try:
        return _large_files(args, env, work)
    finally:
        server.cleanup()


def _large_files(args: argparse.Namespace, env: dict[str, str], work: Path) -> dict[str, Any]:
    folder = work / "large"
    folder.mkdir()
    block = random.Random(3).randbytes(1 << 20)
    for i in range(args.large):
        with (folder / f"big{i:02d}.bin").open("wb") as f:
            for j in range(args.large_mb):
                f.write(block[j % 7:] + block[:j % 7] if j else bytes([i]) + block[1:])
    os.sync()  # the bytes just written are on disk: no writeback competes with whichever tool runs first
    agent = [sys.executable, "-m", "vmlab.agent"]

    def ours(prefix: str) -> float:
        start = time.monotonic()
        subprocess.run([*agent, "sync", "--once", "--no-restore", "--folder", str(folder), "--url",
                        f"s3://{BUCKET}/{prefix}"], cwd=REPO, check=True,
                       env={**env, "VMLAB_AGENT_STATE_DIR": str(work / f"state-{prefix}")})
        return time.monotonic() - start

    # two rounds in turn (vmlab, aws, aws, vmlab), each to a fresh prefix: neither tool always goes first
    uploads: dict[str, list[float]] = {"vmlab": [], "aws": []}
    for tool in ("vmlab", "aws", "aws", "vmlab"):
        suffix = str(len(uploads[tool]) or "")  # the first round's prefixes are "large" and "large-peer"
        uploads[tool].append(ours(f"large{suffix}") if tool == "vmlab"
                             else aws(env, "sync", str(folder), f"s3://{BUCKET}/large-peer{suffix}"))
    upload_s, peer_upload_s = statistics.mean(uploads["vmlab"]), statistics.mean(uploads["aws"])
    start = time.monotonic()
    subprocess.run([*agent, "restore", "--folder", str(work / "large-restored"), "--url", f"s3://{BUCKET}/large"],
                   cwd=REPO, env={**env, "VMLAB_AGENT_STATE_DIR": str(work / "large-state")}, check=True)
    restore_s = time.monotonic() - start
    peer_restore_s = aws(env, "sync", f"s3://{BUCKET}/large", str(work / "large-peer-restored"))
    shutil.rmtree(folder, ignore_errors=True)
    return {"files": args.large, "mb": args.large_mb, "upload_s": round(upload_s, 2),
            "upload_runs": {tool: [round(t, 2) for t in runs] for tool, runs in uploads.items()},
            "peer_upload_s": round(peer_upload_s, 2), "restore_s": round(restore_s, 2),
            "peer_restore_s": round(peer_restore_s, 2), "upload_ratio": round(upload_s / peer_upload_s, 3),
            "restore_ratio": round(restore_s / peer_restore_s, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU measurement")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/sync.json")
    parser.add_argument("--large", type=int, default=0, help="also move this many large files")
    parser.add_argument("--large-mb", type=int, default=100, help="size of each large file")
    parser.add_argument("--other-backends", action="store_true",
                        help="also run the daemon on Azurite and fake-gcs-server (needs scripts/deps.sh's azurite)")
    args = parser.parse_args()
    default_run = (args.files, args.changes) == (5000, 10) and args.idle >= 10

    import boto3

    work = Path(tempfile.mkdtemp(prefix="vmlab-bench-sync-"))
    server = MotoServer.start_new()
    proxy = FaultProxy(server.endpoint).start()
    try:
        base_env = {**os.environ, **AWS_ENV, "PYTHONPATH": str(REPO)}
        base_env.pop("AWS_PROFILE", None)
        os.environ.update(AWS_ENV)
        direct = boto3.client("s3", endpoint_url=server.endpoint)
        direct.create_bucket(Bucket=BUCKET)
        counting = Counting(proxy)
        env = {**base_env, "AWS_ENDPOINT_URL": proxy.endpoint, "VMLAB_STATE_DIR": str(work / "state")}
        rng = random.Random(7)
        results: dict[str, Any] = {"settings": {"files": args.files, "changes": args.changes, "idle_s": args.idle}}

        # -- the daemon: initial upload, then one change at a time, then idle ---------------------------------
        folder = work / "daemon"
        names = make_tree(folder, args.files)
        start = time.monotonic()
        daemon = Daemon(folder, f"s3://{BUCKET}/daemon", env, work / "state")
        wait_for(direct, "daemon/" + names[-1], (folder / names[-1]).read_bytes())
        initial = {"seconds": round(time.monotonic() - start, 2), "requests": dict(counting.take())}
        print(f"daemon: initial upload of {args.files} files in {initial['seconds']} s: {initial['requests']}")
        time.sleep(1.0)
        counting.take()
        latencies = []
        for i in range(args.changes):
            rel = rng.choice(names)
            body = f"change {i} at {time.time()}\n".encode()
            t0 = time.monotonic()
            (folder / rel).write_bytes(body)
            wait_for(direct, "daemon/" + rel, body)
            latencies.append(time.monotonic() - t0)
            time.sleep(0.5)  # past the debounce, so each change is its own push
        daemon_requests = counting.take()
        results["daemon"] = {"initial": initial, **summary(latencies, daemon_requests, args.changes)}
        time.sleep(1.0)
        cpu0, t0 = cpu_seconds(daemon.proc.pid), time.monotonic()
        time.sleep(args.idle)
        idle_cpu = (cpu_seconds(daemon.proc.pid) - cpu0) / (time.monotonic() - t0)
        results["daemon"]["idle_cpu_percent"] = round(100 * idle_cpu, 2)
        results["daemon"]["idle_requests"] = dict(counting.take())
        daemon.stop()

        # -- the peer: `aws s3 sync` after each save -----------------------------------------------------
        peer_folder = work / "peer"
        make_tree(peer_folder, args.files)
        initial_s = aws(env, "sync", str(peer_folder), f"s3://{BUCKET}/peer")
        peer_initial = {"seconds": round(initial_s, 2), "requests": dict(counting.take())}
        print(f"aws s3 sync: initial upload of {args.files} files in {peer_initial['seconds']} s: "
              f"{peer_initial['requests']}")
        time.sleep(1.0)  # a change within the same second as the upload could look unchanged to it
        peer_latencies = []
        for i in range(args.changes):
            rel = rng.choice(names)
            body = f"peer change {i} at {time.time()}\n".encode()
            t0 = time.monotonic()
            (peer_folder / rel).write_bytes(body)
            aws(env, "sync", str(peer_folder), f"s3://{BUCKET}/peer")
            wait_for(direct, "peer/" + rel, body)
            peer_latencies.append(time.monotonic() - t0)
        peer_requests = counting.take()
        results["aws_s3_sync"] = {"initial": peer_initial, **summary(peer_latencies, peer_requests, args.changes)}

        if args.other_backends:
            results["other_backends"] = other_backends(args, base_env, work)

        # -- restore into an empty folder ------------------------------------------------------------------
        restored = work / "restored"
        start = time.monotonic()
        subprocess.run([sys.executable, "-m", "vmlab.agent", "sync", "--folder", str(restored), "--url",
                        f"s3://{BUCKET}/daemon", "--once"], cwd=REPO, env=env, check=True)
        restore_s = time.monotonic() - start
        restore_requests = counting.take()
        got = sum(1 for p in restored.rglob("*") if p.is_file())
        peer_restored = work / "peer-restored"
        peer_restore_s = aws(env, "sync", f"s3://{BUCKET}/daemon", str(peer_restored))
        peer_restore_requests = counting.take()
        results["restore"] = {
            "files": got,
            "daemon": {"seconds": round(restore_s, 2), "requests": dict(restore_requests)},
            "aws_s3_sync": {"seconds": round(peer_restore_s, 2), "requests": dict(peer_restore_requests)},
        }

        if args.large:
            results["large"] = large_files(args, env, work)

        d, p = results["daemon"], results["aws_s3_sync"]
        ratios = {
            "save_to_object_p50": round(d["save_to_object_s"]["p50"] / p["save_to_object_s"]["p50"], 3),
            "save_to_object_p95": round(d["save_to_object_s"]["p95"] / p["save_to_object_s"]["p95"], 3),
            "requests_per_change": round(sum(daemon_requests.values()) / max(1, sum(peer_requests.values())), 4),
            "restore_seconds": round(restore_s / peer_restore_s, 3),
            "initial_upload_seconds": round(d["initial"]["seconds"] / p["initial"]["seconds"], 3),
        }
        if args.large:
            ratios["large_upload_seconds"] = results["large"]["upload_ratio"]
            ratios["large_restore_seconds"] = results["large"]["restore_ratio"]
        per_change = {k: v / args.changes for k, v in daemon_requests.items()}
        targets = {
            "one write per change": per_change.get("PUT", 0) + per_change.get("POST", 0) == 1,
            "no LIST per change": per_change.get("LIST", 0) == 0,
            "save-to-object p95 <= 2 s": d["save_to_object_s"]["p95"] <= 2.0,
            "restore: one GET per file": restore_requests.get("GET", 0) == args.files == got,
            "restore at least as fast as aws s3 sync": ratios["restore_seconds"] <= 1.0,
            "first upload at least as fast as aws s3 sync": ratios["initial_upload_seconds"] <= 1.0,
        }
        if args.large:
            targets["large files: upload at least as fast"] = ratios["large_upload_seconds"] <= 1.0
            targets["large files: restore at least as fast"] = ratios["large_restore_seconds"] <= 1.0
        for name, other in results.get("other_backends", {}).items():
            targets[f"{name}: 1 write and 0 LIST per change"] = other["requests_per_change"] == {"WRITE": 1.0}
            targets[f"{name}: save-to-object p95 <= 2 s"] = other["save_to_object_s"]["p95"] <= 2.0
        results.update(ratios=ratios, targets=targets, machine={
            "python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()})

        print()
        print(f"{'per changed file (' + str(args.changes) + ' changes, ' + str(args.files) + ' files)':<44}"
              f"{'vmlab-agent':>14}{'aws s3 sync':>14}{'ratio':>9}")
        for kind in sorted(set(daemon_requests) | set(peer_requests)):
            print(f"  {kind + ' requests':<42}{daemon_requests[kind] / args.changes:>14.2f}"
                  f"{peer_requests[kind] / args.changes:>14.2f}")
        for q in ("p50", "p95"):
            print(f"  {'save-to-object ' + q + ' (s)':<42}{d['save_to_object_s'][q]:>14.3f}"
                  f"{p['save_to_object_s'][q]:>14.3f}{ratios['save_to_object_' + q]:>8.3f}x")
        print(f"  {'all requests':<42}{sum(daemon_requests.values()) / args.changes:>14.2f}"
              f"{sum(peer_requests.values()) / args.changes:>14.2f}{ratios['requests_per_change']:>8.4f}x")
        print(f"restore of {got} files: vmlab-agent {restore_s:.2f} s {dict(restore_requests)}; "
              f"aws s3 sync {peer_restore_s:.2f} s {dict(peer_restore_requests)} ({ratios['restore_seconds']}x)")
        print(f"first upload of {args.files} files: vmlab-agent {d['initial']['seconds']} s, aws s3 sync "
              f"{p['initial']['seconds']} s ({ratios['initial_upload_seconds']}x)")
        if args.large:
            large = results["large"]
            print(f"{args.large} files of {args.large_mb} MB: upload vmlab-agent {large['upload_s']} s, aws "
                  f"{large['peer_upload_s']} s ({large['upload_ratio']}x); restore vmlab-agent {large['restore_s']} s,"
                  f" aws {large['peer_restore_s']} s ({large['restore_ratio']}x)")
        print(f"daemon idle CPU over {args.idle:.0f} s: {results['daemon']['idle_cpu_percent']}% "
              f"(requests while idle: {results['daemon']['idle_requests'] or 'none'})")
        for name, ok in targets.items():
            print(f"target {name}: {'pass' if ok else 'FAIL'}")
        if default_run and not args.no_save:
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(results, indent=2) + "\n")
            print(f"saved {RESULTS.relative_to(REPO)}")
        return 0 if all(targets.values()) else 1
    finally:
        proxy.stop()
        server.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
