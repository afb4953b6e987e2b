"""Each way the prebuilt image's sync lost data, replayed against `vmlab-agent sync` in a subprocess and a moto S3
server: writes during a sync, moves in and out of the folder (files and whole folders), files made inside a
just-made folder, a `kill -9` with changes pending (the journal resumes them; nothing comes back from the dead),
a spot interruption notice (pushed at once), and 1,000 random operations with a crash and a restart midway."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from harness.drivers.agent import ROOT, AgentDaemon, agent_env
from harness.emulators.imds import ImdsEmulator
from vmlab.agent.keys import MARKER_KEY
from vmlab.agent.manifest import Excludes

pytestmark = pytest.mark.moto

PREFIX = "alice/data/"


def objects(s3: Any, bucket: str) -> dict[str, bytes]:
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith(MARKER_KEY):
                continue  # the daemon's marker (see vmlab.agent.daemon)
            try:
                found[obj["Key"][len(PREFIX):]] = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            except s3.exceptions.NoSuchKey:
                continue  # deleted by the agent between the listing and the read
    return found


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
            and not Excludes().matches(p.relative_to(folder).as_posix())}


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def wait_synced(s3: Any, bucket: str, folder: Path, timeout: float = 10.0) -> float:
    """Seconds until the bucket holds exactly the folder's files; fails with the difference."""
    start = time.monotonic()
    while True:
        local, remote = files(folder), objects(s3, bucket)
        if local == remote:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            missing = sorted(k for k in local if remote.get(k) != local[k])
            extra = sorted(set(remote) - set(local))
            raise AssertionError(f"bucket differs after {timeout}s: stale or missing {missing}, extra {extra}")
        time.sleep(0.1)


def test_writes_during_a_push_are_not_lost(aws_faults, lab, s3) -> None:
    """The blind window: files written while an upload is in flight (the object gets the old bytes)."""
    folder, bucket, url, state = lab
    daemon = AgentDaemon(folder, url, state)  # AWS_ENDPOINT_URL is the fault proxy: every PUT can be held
    try:
        put = f"PUT /{bucket}/{PREFIX}a.txt"
        aws_faults.delay(put, 2.0)
        write(folder / "a.txt", b"version 1")
        assert aws_faults.wait_for(put, timeout=10), "the first upload never started"
        # the agent has read version 1 and is sending it; the user keeps working
        write(folder / "a.txt", b"version 2, written while version 1 was on its way")
        write(folder / "b.txt", b"a new file during the push")
        write(folder / "fresh" / "c.txt", b"in a folder made during the push")
        aws_faults.delay(put, 0)
        print(f"synced {wait_synced(s3, bucket, folder):.2f}s after the held upload")
    finally:
        out = daemon.stop()
    assert daemon.proc.returncode == 0, out
    assert objects(s3, bucket)["a.txt"] == b"version 2, written while version 1 was on its way"


def test_moves_in_and_out_of_the_folder(lab, s3, tmp_path: Path) -> None:
    folder, bucket, url, state = lab
    write(folder / "stays.txt", b"s")
    write(folder / "leaves.txt", b"moved out later")
    write(folder / "project" / "a.py", b"print(1)")
    write(folder / "project" / "sub" / "b.py", b"print(2)")
    write(folder / "old-name" / "c.txt", b"renamed folder")
    daemon = AgentDaemon(folder, url, state)
    try:
        wait_synced(s3, bucket, folder)
        outside = tmp_path / "outside"
        write(outside / "incoming.txt", b"moved in")
        write(outside / "dataset" / "part-1.csv", b"1,2")
        write(outside / "dataset" / "deep" / "part-2.csv", b"3,4")
        timings = {}
        os.rename(outside / "incoming.txt", folder / "incoming.txt")
        os.rename(outside / "dataset", folder / "dataset")
        timings["moved in (file, folder)"] = wait_synced(s3, bucket, folder)
        os.rename(folder / "leaves.txt", outside / "leaves.txt")
        os.rename(folder / "project", outside / "project")
        timings["moved out (file, folder)"] = wait_synced(s3, bucket, folder)
        os.rename(folder / "old-name", folder / "new-name")
        os.rename(folder / "dataset" / "deep", folder / "deeper")
        timings["renamed folders inside"] = wait_synced(s3, bucket, folder)
        # a file created inside a folder created just now, before any watch on it can exist
        (folder / "x" / "y" / "z").mkdir(parents=True)
        (folder / "x" / "y" / "z" / "made-at-once.txt").write_bytes(b"quick")
        timings["file in a brand-new folder"] = wait_synced(s3, bucket, folder)
        # same size, mtime older than the object's (cp -p, tar x)
        write(folder / "stays.txt", b"S")
        os.utime(folder / "stays.txt", ns=(10**18, 10**18))
        timings["same-size edit, older mtime"] = wait_synced(s3, bucket, folder)
        print({k: f"{v:.2f}s" for k, v in timings.items()})
    finally:
        out = daemon.stop()
    assert daemon.proc.returncode == 0, out
    assert set(objects(s3, bucket)) == {"stays.txt", "incoming.txt", "dataset/part-1.csv", "deeper/part-2.csv",
                                        "new-name/c.txt", "x/y/z/made-at-once.txt"}
    assert objects(s3, bucket)["stays.txt"] == b"S"


def journal(state: Path) -> set[str]:
    live: set[str] = set()
    for path in state.glob("queue-*.jsonl"):
        for line in path.read_text().splitlines():
            op, rel = json.loads(line)
            (live.add if op == "+" else live.discard)(rel)
    return live


def test_kill_9_with_pending_changes_loses_nothing(lab, s3) -> None:
    folder, bucket, url, state = lab
    write(folder / "synced.txt", b"old")
    write(folder / "deleted-later.txt", b"d")
    daemon = AgentDaemon(folder, url, state, "--quiet", "60")  # the loop pushes nothing: only a flush would
    wait_synced(s3, bucket, folder)
    write(folder / "synced.txt", b"new")
    write(folder / "new" / "made.txt", b"made")
    (folder / "deleted-later.txt").unlink()
    deadline = time.monotonic() + 5
    while journal(state) != {"synced.txt", "new", "deleted-later.txt"} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert journal(state) >= {"synced.txt", "new", "deleted-later.txt"}, journal(state)
    assert json.loads(daemon.status_file.read_text())["pending"] >= 3
    daemon.kill()
    assert objects(s3, bucket) == {"synced.txt": b"old", "deleted-later.txt": b"d"}  # nothing was pushed

    # the restart restores first: the deleted file must not come back, the edit must not be overwritten
    daemon = AgentDaemon(folder, url, state, log_name="agent2.log")
    try:
        wait_synced(s3, bucket, folder)
        assert not (folder / "deleted-later.txt").exists()
        assert (folder / "synced.txt").read_bytes() == b"new"
    finally:
        out = daemon.stop()
    assert "paths left pending by the last run" in out
    assert journal(state) == set()
    status = json.loads(daemon.status_file.read_text())
    assert (status["pending"], status["stopped"], status["last_error"]) == (0, True, "")


def test_spot_notice_pushes_at_once(lab, s3) -> None:
    folder, bucket, url, state = lab
    with ImdsEmulator() as imds:
        env = agent_env(state, AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.endpoint)
        daemon = AgentDaemon(folder, url, state, "--quiet", "600", "--imds-interval", "0.5", env=env)
        try:
            for i in range(20):
                write(folder / "results" / f"epoch-{i}.json", b"{}" * i)
            time.sleep(1.5)
            assert objects(s3, bucket) == {}, "pushed before any notice (quiet is 600s)"
            imds.set("/latest/meta-data/spot/instance-action", '{"action": "stop", "time": "2026-11-24T20:00:00Z"}')
            started = time.monotonic()
            elapsed = wait_synced(s3, bucket, folder, timeout=10)
            # after a notice every change goes at once
            write(folder / "after-notice.txt", b"x")
            after = wait_synced(s3, bucket, folder, timeout=5)
            print(f"notice to synced: {time.monotonic() - started:.2f}s; a change after it: {after:.2f}s")
            assert elapsed < 5
            assert "spot interruption" in daemon.status()["interruption"]
        finally:
            out = daemon.stop()
    assert daemon.proc.returncode == 0, out
    gets = [r for r in imds.requests if r[0] == "GET"]
    assert gets and all(ok for _, _, ok in gets), "a metadata request went without its IMDSv2 token"


def test_1000_random_operations_with_a_crash_midway(lab, s3) -> None:
    folder, bucket, url, state = lab
    seed = int(os.environ.get("VMLAB_TEST_SEED") or random.SystemRandom().randrange(10**6))
    print(f"seed {seed} (rerun with VMLAB_TEST_SEED={seed})")
    rng = random.Random(seed)
    dirs = ["", "a", "a/b", "c", "c/d/e"]
    names = [f"f{i}.txt" for i in range(12)]
    args = ("--max-delete-share", "1", "--quiet", "0.1")
    daemon = AgentDaemon(folder, url, state, *args)
    started = time.monotonic()
    crash_at, restart_at = rng.randrange(300, 600), rng.randrange(600, 700)
    counts: dict[str, int] = {}

    def existing_files() -> list[Path]:
        return [p for p in folder.rglob("*") if p.is_file()]

    try:
        for step in range(1000):
            if step == crash_at:
                daemon.kill()
            if step == restart_at:
                before = files(folder)
                daemon = AgentDaemon(folder, url, state, *args, log_name="agent2.log")
                # the restart restores first: it must not bring back what was deleted, nor undo an edit
                assert files(folder) == before, f"seed {seed}: restore changed the folder"
            op = rng.choices(["create", "modify", "rename", "delete", "move-dir", "delete-dir"],
                             weights=[8, 8, 4, 4, 2, 1])[0]
            present = existing_files()
            target = folder / rng.choice(dirs) / rng.choice(names)
            if op == "create" or not present:
                write(target, f"{step} {rng.random()}".encode() * rng.randrange(1, 50))
            elif op == "modify":
                path = rng.choice(present)
                size = path.stat().st_size
                data = bytes(rng.randrange(97, 123) for _ in range(size))  # often the same size
                path.write_bytes(data)
                if rng.random() < 0.3:
                    os.utime(path, ns=(10**18, 10**18 - step))  # mtime moved back
            elif op == "rename":
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(rng.choice(present), target)
            elif op == "delete":
                rng.choice(present).unlink()
            else:
                subdirs = [p for p in folder.rglob("*") if p.is_dir()]
                if not subdirs:
                    continue
                src = rng.choice(subdirs)
                if op == "delete-dir":
                    shutil.rmtree(src)
                else:
                    dest = folder / f"moved{step}"
                    os.rename(src, dest)
            counts[op] = counts.get(op, 0) + 1
            if rng.random() < 0.05:
                time.sleep(rng.uniform(0.05, 0.4))  # let pushes start (and be interrupted by the kill)
        log = daemon.stop()
    finally:
        if daemon.proc.poll() is None:
            daemon.kill()
    assert daemon.proc.returncode == 0, log
    local, remote = files(folder), objects(s3, bucket)
    assert sorted(set(local) ^ set(remote)) == [], f"seed {seed}"
    assert sorted(k for k in local if local[k] != remote[k]) == [], f"seed {seed}"
    print(f"seed {seed}: {counts}, crash at op {crash_at}, restart at {restart_at}, {len(local)} files in the end,"
          f" {time.monotonic() - started:.1f}s")


def test_commands_read_their_settings_from_the_environment(lab, s3) -> None:
    """As the systemd units run them: no flags, everything from agent.env (EnvironmentFile=)."""
    folder, bucket, url, state = lab
    s3.put_object(Bucket=bucket, Key=PREFIX + "nb/from-last-week.ipynb", Body=b"{}")
    env = agent_env(state, VMLAB_SYNC_URL=url, VMLAB_DATA_DIR=str(folder))
    env.pop("AWS_S3_BUCKET_FOLDER", None)
    done = subprocess.run([sys.executable, "-m", "vmlab.agent", "restore"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (folder / "nb" / "from-last-week.ipynb").read_bytes() == b"{}"
    write(folder / "new.txt", b"n")
    done = subprocess.run([sys.executable, "-m", "vmlab.agent", "sync", "--once"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert objects(s3, bucket) == {"nb/from-last-week.ipynb": b"{}", "new.txt": b"n"}
    status = json.loads((state / "status.json").read_text())
    assert (status["pending"], status["url"], status["folder"]) == (0, url, str(folder))
    assert status["last_sync"] > 0 and status["stopped"] is True
