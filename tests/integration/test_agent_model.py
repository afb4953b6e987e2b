"""A model-based property test of `vmlab-agent sync` (a process, against moto S3): random sequences of create,
overwrite, append, same-size edit with the old mtime put back, rename, mkdir, rmdir, symlink create and folder
swap (to a folder outside holding secrets), mass delete, `kill -9` + restart and bucket delete + re-create. At each
quiet point the bucket must equal the folder, or differ only by the deletes the status says are held (which are
then released and must go) and by keys the last restore named as not restorable (kept, never deleted); no byte
is lost, nothing outside the folder is read or written.

Seeds are printed; a failure names its seed. `VMLAB_TEST_SEED=N` replays one run; `VMLAB_MODEL_RUNS` (default 2,
at most 8 fixed seeds) and `VMLAB_MODEL_STEPS` (default 60) make a longer run, `VMLAB_MODEL_RANDOM=1` new seeds, e.g.
`VMLAB_MODEL_RANDOM=1 VMLAB_MODEL_RUNS=20 VMLAB_MODEL_STEPS=300 .venv/bin/pytest -m "not vm" \
tests/integration/test_agent_model.py`.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from harness.drivers.agent import AgentDaemon, agent_env
from tests.integration.test_agent_safety import PREFIX, files, objects
from vmlab.agent.status import AgentStatus

pytestmark = pytest.mark.moto

RUNS = int(os.environ.get("VMLAB_MODEL_RUNS") or 2)
STEPS = int(os.environ.get("VMLAB_MODEL_STEPS") or 60)
ARGS = ("--quiet", "0.1", "--delete-settle", "0.3", "--check-interval", "0.5")
SECRET = b"SECRET-OUTSIDE-THE-FOLDER"


def tree_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for dirpath, dirs, names in sorted(os.walk(path)):
        for name in sorted(names + dirs):
            item = Path(dirpath) / name
            digest.update(str(item).encode())
            if item.is_file() and not item.is_symlink():
                digest.update(item.read_bytes())
    return digest.hexdigest()


class World:
    """The folder, the outside folder, the bucket and the running daemon of one run."""

    def __init__(self, tmp: Path, s3: Any, rng: random.Random, seed: int) -> None:
        self.folder, self.outside, self.state = tmp / "data", tmp / "outside", tmp / "state"
        self.folder.mkdir()
        (self.outside / "sub").mkdir(parents=True)
        (self.outside / "secret.txt").write_bytes(SECRET)
        (self.outside / "sub" / "passwd").write_bytes(SECRET + b" passwd")
        self.outside_digest = tree_digest(self.outside)
        self.s3, self.rng, self.seed = s3, rng, seed
        self.bucket = f"vmlab-model-{uuid.uuid4().hex[:10]}"
        s3.create_bucket(Bucket=self.bucket)
        self.url = f"s3://{self.bucket}/{PREFIX}"
        self.starts = 0
        self.daemon = self.start()

    def start(self) -> AgentDaemon:
        self.starts += 1
        return AgentDaemon(self.folder, self.url, self.state, *ARGS, log_name=f"agent{self.starts}.log")

    def dirs(self) -> list[Path]:
        found = [self.folder]
        for dirpath, dirs, _ in os.walk(self.folder):  # symlinks to folders are listed but not entered
            found += [Path(dirpath) / d for d in dirs if not (Path(dirpath) / d).is_symlink()]
        return found

    def regular_files(self) -> list[Path]:
        return [self.folder / rel for rel in files(self.folder)]

    def fail(self, message: str) -> str:
        return f"seed {self.seed} (rerun with VMLAB_TEST_SEED={self.seed}): {message}"

    def step(self, n: int) -> str:
        rng = self.rng
        op = rng.choices(["create", "overwrite", "append", "same-size", "rename", "mkdir", "rmdir", "symlink",
                          "swap", "mass-delete", "kill", "recreate"],
                         weights=[10, 5, 4, 5, 4, 3, 2, 2, 1, 1, 1, 1])[0]
        present = self.regular_files()
        if op in ("overwrite", "append", "same-size", "rename", "mass-delete") and not present:
            op = "create"
        if op == "create":
            path = rng.choice(self.dirs()) / f"f{rng.randrange(40)}.txt"
            if not path.is_symlink() and not path.is_dir():
                path.write_bytes(f"{n} {rng.random()}".encode() * rng.randrange(1, 30))
        elif op == "overwrite":
            rng.choice(present).write_bytes(f"overwritten {n}".encode())
        elif op == "append":
            with rng.choice(present).open("ab") as f:
                f.write(f" +{n}".encode())
        elif op == "same-size":
            path = rng.choice(present)
            st = path.stat()
            path.write_bytes(bytes(rng.randrange(97, 123) for _ in range(st.st_size)))
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # touch -r: the old mtime put back
        elif op == "rename":
            target = rng.choice(self.dirs()) / f"r{n}.txt"
            os.replace(rng.choice(present), target)
        elif op == "mkdir":
            (rng.choice(self.dirs()) / f"d{n}").mkdir()
        elif op == "rmdir":
            empty = [d for d in self.dirs()[1:] if not any(d.iterdir())]
            if empty:
                rng.choice(empty).rmdir()
        elif op == "symlink":
            target = rng.choice([self.outside, self.outside / "secret.txt", self.outside / "sub"])
            link = rng.choice(self.dirs()) / f"l{n}"
            link.symlink_to(target)
        elif op == "swap":
            subdirs = self.dirs()[1:]
            if subdirs:
                victim = rng.choice(subdirs)
                shutil.rmtree(victim)
                victim.symlink_to(self.outside / "sub")  # rm -rf cfg && ln -s /etc cfg
        elif op == "mass-delete":
            keep = max(1, len(present) // 5)
            for path in rng.sample(present, len(present) - keep):
                path.unlink()
        elif op == "kill":
            self.daemon.kill()
            before = files(self.folder)
            self.daemon = self.start()
            if before:  # an empty folder at start is a missing disk and is restored, by rule
                assert files(self.folder) == before, self.fail("the restart changed the folder")
        elif op == "recreate":
            self.recreate_bucket()
        return op

    def recreate_bucket(self) -> None:
        """Empty, delete and re-create the bucket (the agent may be putting objects meanwhile)."""
        for _ in range(50):
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
                for obj in page.get("Contents", []):
                    self.s3.delete_object(Bucket=self.bucket, Key=obj["Key"])
            try:
                self.s3.delete_bucket(Bucket=self.bucket)
                break
            except self.s3.exceptions.ClientError as e:
                if "BucketNotEmpty" not in str(e):
                    raise
        self.s3.create_bucket(Bucket=self.bucket)

    def quiet_point(self, timeout: float = 25.0) -> None:
        """Wait until the bucket equals the folder, releasing deletes the status reports as held."""
        deadline = time.monotonic() + timeout
        released = False
        while True:
            local, remote = files(self.folder), objects(self.s3, self.bucket)
            for rel, data in remote.items():
                assert SECRET not in data, self.fail(f"{rel} holds bytes from outside the folder")
            status = AgentStatus.parse(self.daemon.status_file.read_text()) or AgentStatus()
            stale = sorted(rel for rel in local if remote.get(rel) != local[rel])
            # keys restore could not write (a symlink stands in their path) stay in the bucket, by rule
            extra = sorted(set(remote) - set(local) - set(status.restore_problems))
            if not stale and not extra and not status.unsynced:
                break
            if not stale and extra and status.held_deletes == len(extra) and not released:
                done = subprocess.run([sys.executable, "-m", "vmlab.agent", "release-deletes"],
                                      env=agent_env(self.state), capture_output=True, text=True, timeout=60)
                assert done.returncode == 0, self.fail(done.stderr)
                released = True
            assert time.monotonic() < deadline, self.fail(
                f"bucket differs: stale or missing {stale[:10]}, extra {extra[:10]}, status {status.summary()}")
            time.sleep(0.2)
        assert tree_digest(self.outside) == self.outside_digest, self.fail("the outside folder changed")


#: CI runs fixed seeds (a red CI must be reproducible); VMLAB_MODEL_RANDOM=1 explores new ones. Seed 101965 found
#: a delete lost when the marker check found a re-created bucket while the delete settled (fixed: known paths stay
#: known); it runs first.
FIXED_SEEDS = (101965, 11, 12, 13, 14, 15, 16, 17)


def seeds() -> list[int]:
    if os.environ.get("VMLAB_TEST_SEED"):
        return [int(os.environ["VMLAB_TEST_SEED"])]
    if os.environ.get("VMLAB_MODEL_RANDOM"):
        base = random.SystemRandom().randrange(10**6)
        return [base + i for i in range(RUNS)]
    return list(FIXED_SEEDS[:RUNS])


@pytest.mark.parametrize("seed", seeds())
def test_random_operations_keep_bucket_and_folder_equal(seed: int, moto_server, tmp_path: Path) -> None:
    print(f"seed {seed} (rerun with VMLAB_TEST_SEED={seed})")
    s3 = boto3.client("s3", endpoint_url=moto_server.endpoint)
    world = World(tmp_path, s3, random.Random(seed), seed)
    counts: dict[str, int] = {}
    started = time.monotonic()
    try:
        for n in range(STEPS):
            op = world.step(n)
            counts[op] = counts.get(op, 0) + 1
            if world.rng.random() < 0.1 or n == STEPS - 1:
                world.quiet_point()
    finally:
        out = world.daemon.stop()
    assert world.daemon.proc.returncode == 0, world.fail(out[-3000:])
    status = AgentStatus.parse(world.daemon.status_file.read_text()) or AgentStatus()
    remote = {k: v for k, v in objects(s3, world.bucket).items() if k not in status.restore_problems}
    assert remote == files(world.folder), world.fail("bucket differs after the final push")
    print(f"seed {seed}: {counts}, {len(files(world.folder))} files, {time.monotonic() - started:.1f}s")
