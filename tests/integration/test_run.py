"""`vmlab run` against labs that are sandbox hosts with a real OpenSSH sshd (harness/clouds/sandboxprovider.py, the
`cloud` fixture): a workdir sent incrementally with its excludes, a command that writes
outputs, one that fails, one killed on the lab, a local SIGTERM that detaches and `--attach` that picks the run up,
a connection cut mid-run (harness/faults/tcpdrop.py), --stop-after and --down-after, env values that never show in
any process's command line nor in the logs, and an output symlink that is not followed. No EC2, no QEMU."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.clouds.sandboxprovider import JUPYTER, Cloud, SandboxProvider
from harness.drivers.ec2cli import run_vmlab
from harness.faults.tcpdrop import DropProxy
from vmlab import keys
from vmlab.providers.base import LaunchSpec
from vmlab.state import LabRecord, LabStore
from vmlab.workflows.sentfiles import RACY_NS

pytestmark = pytest.mark.sshd


SECRET = "s3cr3t-" + os.urandom(6).hex()

JOB = """#!/bin/sh
set -e
echo "starting in $(pwd)"
if [ "$VMLAB_TEST_TOKEN" = "$(cat expected-token)" ]; then echo "env-ok"; fi
mkdir -p results/sub
echo "alpha" > results/a.txt
echo "beta" > results/sub/b.txt
ln -sf /etc/hostname results/link
ln -sfn /etc results/linkdir
while [ ! -e go ]; do sleep 0.1; done
echo "done"
exit "${EXIT_WITH:-0}"
"""


@dataclasses.dataclass
class Lab:
    name: str
    iid: str
    cloud: Cloud

    def path(self, inside: str) -> Path:
        return self.cloud.boxes[self.iid].path(inside)

    def release(self) -> None:
        """Let the job end (it waits for a file `go` in its folder)."""
        (self.path(f"/root/work/{WORKDIR}") / "go").touch()


WORKDIR = "proj"


@pytest.fixture()
def make_lab(cloud: Cloud) -> Iterator[Callable[[str], Lab]]:
    made: list[str] = []

    def make(name: str) -> Lab:
        provider = SandboxProvider()
        client, host_key = keys.generate(f"vmlab-lab-{name}"), keys.generate("host")
        inst = provider.launch(LaunchSpec(name, "host", client.public, host_key=host_key.private,
                                          tags={"vmlab:lab": name}))
        made.append(inst.id)
        store = LabStore()
        key_file = client.save(store.key_path(name))
        store.put(LabRecord(name=name, provider="sandbox", instance_id=inst.id, image="host", user="root",
                            key_file=str(key_file), host_key=host_key.public, token="", host=inst.host,
                            port=inst.port))
        return Lab(name, inst.id, cloud)

    yield make
    for iid in made:
        SandboxProvider().terminate(iid)


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    root = tmp_path / WORKDIR
    (root / "data").mkdir(parents=True)
    (root / "job.sh").write_text(JOB)
    (root / "job.sh").chmod(0o755)
    (root / "expected-token").write_text(SECRET)  # the job compares; the secret never rides in argv
    (root / "data" / "big.bin").write_bytes(b"x" * 1000)
    (root / "notes.log").write_text("excluded by .vmlabignore\n")
    (root / "private.txt").write_text("excluded by .gitignore\n")
    (root / "keep.log").write_text("re-included\n")
    (root / ".vmlabignore").write_text("# big inputs stay here\ndata/\n*.log\n!keep.log\n")
    (root / ".gitignore").write_text("/private.txt\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    return root


def cmdlines() -> list[bytes]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                found.append(Path(f"/proc/{pid}/cmdline").read_bytes())
            except OSError:
                continue
    return found


def while_running(lab: Lab, action: Callable[[], None], wait_for: str = "results/a.txt") -> threading.Thread:
    """Run `action` in a thread once the job has reached its wait (its first outputs exist)."""
    def go() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if (lab.path(f"/root/work/{WORKDIR}") / wait_for).exists():
                    break
            except (OSError, KeyError):
                pass
            time.sleep(0.05)
        action()

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


def run_json(*args: str, env: dict[str, str] | None = None) -> tuple[Any, dict[str, Any] | None]:
    result = run_vmlab("run", "--json", *args, env=env)
    try:
        doc = json.loads(result.stdout)
    except ValueError:
        doc = None
    return result, doc


def test_a_run_sends_the_workdir_passes_env_safely_fetches_outputs_and_its_exit_code(
        make_lab: Callable[[str], Lab], project: Path) -> None:
    lab = make_lab("job1")
    seen_in_ps: list[bytes] = []

    def watch() -> None:
        seen_in_ps.extend(c for c in cmdlines() if SECRET.encode() in c)
        lab.release()

    watcher = while_running(lab, watch)
    result, doc = run_json("job1", "--workdir", str(project), "--outputs", "results", "--env", "VMLAB_TEST_TOKEN",
                           "--env", "EXIT_WITH", "--", "./job.sh",
                           env={"VMLAB_TEST_TOKEN": SECRET, "EXIT_WITH": "3"})
    watcher.join(10)
    assert result.exit_code == 3, (result.output, result.stderr)
    assert doc is not None and doc["rc"] == 3, (result.stdout, result.stderr)
    assert "env-ok" in result.stderr and "done" in result.stderr  # the job's output, streamed (stderr in --json)
    assert sorted(doc["uploaded"]) == [".gitignore", ".vmlabignore", "expected-token", "job.sh", "keep.log"]
    remote = lab.path(f"/root/work/{WORKDIR}")
    assert not (remote / "data").exists() and not (remote / "notes.log").exists()
    assert not (remote / "private.txt").exists() and not (remote / ".git").exists()
    assert (remote / "job.sh").stat().st_mode & 0o777 == 0o755
    # outputs: regular files only, links neither fetched nor followed
    assert sorted(doc["fetched"]) == ["results/a.txt", "results/sub/b.txt"]
    assert (project / "results" / "a.txt").read_text() == "alpha\n"
    assert (project / "results" / "sub" / "b.txt").read_text() == "beta\n"
    assert not (project / "results" / "link").exists() and not (project / "results" / "linkdir").exists()
    assert sorted(doc["skipped"]) == ["results/link", "results/linkdir"]
    # the secret: in no command line while the job ran, in no file vmlab left, nowhere in its output
    assert seen_in_ps == []
    (run_dir,) = lab.path("/root/.vmlab-runs").glob("2*")
    assert not (run_dir / "env.json").exists()
    for left in run_dir.iterdir():
        assert SECRET not in left.read_text(errors="replace"), left
    assert SECRET not in result.stdout + result.stderr
    assert (run_dir / "rc").read_text() == "3"

    # the second run sends only the changed file; the third nothing
    (project / "job.sh").write_text(JOB.replace('echo "done"', 'echo "done again"'))
    again = run_vmlab("run", "job1", "--workdir", str(project), "--", "./job.sh")
    assert again.exit_code == 0, again.stderr
    # the outputs fetched into the workdir are the lab's to write (an output path): never sent back
    assert f"sent 1 changed file(s) of 5 to job1:/root/work/{WORKDIR}" in again.stdout
    assert "done again" in again.stdout
    third, doc = run_json("job1", "--workdir", str(project), "--", "true")
    assert third.exit_code == 0 and doc is not None and doc["uploaded"] == [], third.stderr


def uploaded(*args: str, read: int | None = None) -> list[str]:
    """The files a `vmlab run` sent; `read`: how many local files it must have hashed to decide."""
    result, doc = run_json(*args, "--", "true")
    assert result.exit_code == 0 and doc is not None, (result.stdout, result.stderr)
    assert read is None or doc["hashed"] == read, doc
    return sorted(doc["uploaded"])


def test_the_upload_never_misses_an_edit_and_sends_nothing_twice(make_lab: Callable[[str], Lab],
                                                                 project: Path) -> None:
    lab = make_lab("sync1")
    args = ("sync1", "--workdir", str(project))
    assert len(uploaded(*args, read=0)) == 5  # the lab has none: nothing to read to decide
    time.sleep(RACY_NS / 1e9)  # files changed less than RACY_NS before a run are read again by the next one
    assert uploaded(*args) == []  # unchanged tree: nothing sent
    assert uploaded(*args, read=0) == []  # and once their stat has settled, not even read
    # an edit that keeps the size, its mtime put back to the nanosecond: size + mtime cannot see it
    job = project / "job.sh"
    before = job.stat()
    job.write_text(JOB.replace("starting", "STARTING"))
    os.utime(job, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert job.stat().st_size == before.st_size and job.stat().st_mtime_ns == before.st_mtime_ns
    assert uploaded(*args, read=1) == ["job.sh"]
    remote = lab.path(f"/root/work/{WORKDIR}")
    assert (remote / "job.sh").read_text() == job.read_text()
    assert uploaded(*args) == []
    # touched, not changed: read, not sent
    os.utime(project / "keep.log", (before.st_mtime + 50, before.st_mtime + 50))
    assert uploaded(*args) == []
    # a file changed on the lab is put back
    (remote / "expected-token").write_text("changed there")
    assert uploaded(*args) == ["expected-token"]
    # no record on this machine (another machine, a lost state dir): the lab's copy is compared by hash
    (remote / "keep.log").write_text("RE-INCLUDED\n")
    os.utime(remote / "keep.log", (int(before.st_mtime) + 50, int(before.st_mtime) + 50))
    for record in (Path(os.environ["VMLAB_STATE_DIR"]) / "labs" / "uploads" / "sync1").iterdir():
        record.unlink()
    assert uploaded(*args) == ["keep.log"]
    assert (remote / "keep.log").read_text() == "re-included\n"


def test_a_lab_launched_again_under_the_same_name_gets_every_file(make_lab: Callable[[str], Lab],
                                                                 project: Path) -> None:
    first = make_lab("sync2")
    assert len(uploaded("sync2", "--workdir", str(project))) == 5
    SandboxProvider().terminate(first.iid)
    second = make_lab("sync2")  # a new instance, an empty disk: the old record must not count
    assert second.iid != first.iid
    assert len(uploaded("sync2", "--workdir", str(project))) == 5
    assert (second.path(f"/root/work/{WORKDIR}") / "job.sh").read_text() == JOB


def test_a_command_killed_on_the_lab_and_one_that_cannot_start(make_lab: Callable[[str], Lab],
                                                                 tmp_path: Path) -> None:
    make_lab("job2")
    killed, doc = run_json("job2", "--workdir", str(tmp_path), "--", "sh", "-c", "echo before; kill -TERM $$")
    assert killed.exit_code == 143 and doc is not None and doc["rc"] == 143, killed.stderr
    assert "before" in killed.stderr
    missing, _ = run_json("job2", "--workdir", str(tmp_path), "--", "no-such-program-here")
    assert missing.exit_code == 127, missing.stderr


def test_a_local_sigterm_detaches_and_attach_picks_the_run_up(make_lab: Callable[[str], Lab], project: Path) -> None:
    lab = make_lab("job3")
    while_running(lab, lambda: os.kill(os.getpid(), signal.SIGTERM))
    detached = run_vmlab("run", "job3", "--workdir", str(project), "--outputs", "results", "--stop-after",
                         "--", "./job.sh")
    assert detached.exit_code == 143, (detached.output, detached.stderr)
    assert "vmlab: detached from run 2" in detached.stderr
    assert "the command keeps running on lab job3" in detached.stderr
    assert SandboxProvider().describe(lab.iid).state == "running"  # --stop-after waits for the end
    (run_dir,) = lab.path("/root/.vmlab-runs").glob("2*")
    assert not (run_dir / "rc").exists(), "the command must still be running"
    lab.release()
    attached, doc = run_json("--attach", "job3", "--workdir", str(project), "--stop-after")
    assert attached.exit_code == 0, attached.stderr
    assert doc is not None and doc["run"] == run_dir.name and doc["after"] == "stop"
    assert "starting in" in attached.stderr and "done" in attached.stderr  # the whole log, from its start
    assert (project / "results" / "a.txt").read_text() == "alpha\n"
    assert SandboxProvider().describe(lab.iid).state == "stopped"


def test_runs_are_listed_and_any_of_them_can_be_attached(make_lab: Callable[[str], Lab], tmp_path: Path) -> None:
    lab = make_lab("many")
    first, doc1 = run_json("many", "--workdir", str(tmp_path), "--", "sh", "-c", "echo first-run")
    second, doc2 = run_json("many", "--workdir", str(tmp_path), "--", "sh", "-c", "echo second-run; exit 5")
    assert (first.exit_code, second.exit_code) == (0, 5) and doc1 and doc2
    (lab.path("/root/.vmlab-runs") / "not-a-run").mkdir()  # ignored: not a name vmlab gives
    listed = run_vmlab("run", "--list", "many", "--json")
    assert listed.exit_code == 0, listed.stderr
    runs = json.loads(listed.stdout)["runs"]
    assert [(r["id"], r["state"], r["rc"]) for r in runs] == [(doc1["run"], "exited", 0), (doc2["run"], "exited", 5)]
    assert runs[1]["argv"] == ["sh", "-c", "echo second-run; exit 5"] and runs[0]["started"].endswith("Z")
    text = run_vmlab("run", "--list", "many")
    assert f"{doc2['run']}  exited      5" in text.stdout, text.stdout
    older, doc = run_json("--attach", "many", doc1["run"], "--workdir", str(tmp_path))  # not the newest
    assert older.exit_code == 0 and doc is not None and doc["run"] == doc1["run"], older.stderr
    assert "first-run" in older.stderr and "second-run" not in older.stderr
    for bad, fragment in (("x; rm -rf /", "is not a run id"),
                          ("20000101-000000-abcdef", "no run 20000101-000000-abcdef on this lab")):
        refused = run_vmlab("run", "--attach", "many", bad, "--workdir", str(tmp_path))
        assert refused.exit_code == 2 and fragment in refused.stderr, refused.stderr


def test_a_connection_cut_mid_run_is_reopened_and_the_run_completes(make_lab: Callable[[str], Lab],
                                                                    project: Path, cloud: Cloud) -> None:
    lab = make_lab("job4")
    inst = cloud.instances[lab.iid]
    with DropProxy(f"http://{inst.host}:{inst.port}", drop=0) as proxy:
        cloud.instances[lab.iid] = dataclasses.replace(inst, port=int(proxy.endpoint.rsplit(":", 1)[1]))
        cut: list[int] = []

        def cut_then_release() -> None:
            time.sleep(0.5)
            cut.append(proxy.cut())
            time.sleep(1.5)
            lab.release()

        while_running(lab, cut_then_release)
        result = run_vmlab("run", "job4", "--workdir", str(project), "--down-after", "--", "./job.sh")
    assert cut and cut[0] >= 1
    assert result.exit_code == 0, (result.output, result.stderr)
    assert "connection lost" in result.output and "reconnected" in result.output
    assert result.output.count("done\n") == 1 and result.output.count("starting in") == 1  # no gap, no repeat
    assert lab.iid not in cloud.instances and LabStore().get("job4") is None  # --down-after: nothing left


@pytest.mark.parametrize(("args", "env", "fragment"), [
    (["--env", "VMLAB_TEST_UNSET_VAR"], {}, "--env VMLAB_TEST_UNSET_VAR: VMLAB_TEST_UNSET_VAR is not set"),
    (["--env", "BAD-NAME"], {}, "--env 'BAD-NAME' is not an environment variable name"),
    (["--outputs", "../escape"], {}, "--outputs '../escape' is not a path inside the run's folder"),
    (["--outputs", "/etc"], {}, "--outputs '/etc' is not a path inside the run's folder"),
    (["--stop-after", "--down-after"], {}, "--stop-after and --down-after exclude each other"),
])
def test_bad_input_is_one_line_and_starts_nothing(make_lab: Callable[[str], Lab], tmp_path: Path,
                                                  args: list[str], env: dict[str, str], fragment: str) -> None:
    lab = make_lab("job5")
    result = run_vmlab("run", "job5", "--workdir", str(tmp_path), *args, "--", "true", env=env)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and fragment in lines[0], result.stderr
    assert not lab.path("/root/.vmlab-runs").exists()


def test_a_stopped_lab_is_refused(make_lab: Callable[[str], Lab], tmp_path: Path) -> None:
    lab = make_lab("job6")
    SandboxProvider().stop(lab.iid)
    result = run_vmlab("run", "job6", "--workdir", str(tmp_path), "--", "true")
    assert result.exit_code == 2 and "lab job6 is stopped, not running" in result.stderr, result.stderr


def test_a_lab_stopped_mid_run_ends_the_follow_with_a_clear_message(make_lab: Callable[[str], Lab],
                                                                    project: Path) -> None:
    """What a spot interruption or the agent's time limit looks like from `vmlab run`: the lab goes away."""
    lab = make_lab("job7")
    while_running(lab, lambda: SandboxProvider().stop(lab.iid))
    started = time.monotonic()
    result = run_vmlab("run", "job7", "--workdir", str(project), "--", "./job.sh")
    assert result.exit_code == 1, (result.output, result.stderr)
    assert "vmlab: error: lab job7 is stopped: run " in result.stderr and "a spot interruption" in result.stderr
    assert time.monotonic() - started < 30, "a stopped lab must not wait out the reconnect time"


def test_a_file_sent_is_never_written_through_a_symlink_on_the_lab(make_lab: Callable[[str], Lab],
                                                                   tmp_path: Path) -> None:
    """A run left symlinks in the lab's copy (a file and a folder, pointing outside it); the next run's upload of
    the same local paths must not write through them: refused before anything is sent or started."""
    lab = make_lab("job8")
    project = tmp_path / WORKDIR
    project.mkdir()
    first = run_vmlab("run", "job8", "--workdir", str(project), "--", "sh", "-c",
                      "echo precious > ../precious.txt && mkdir -p ../elsewhere && "
                      "ln -s ../precious.txt config.txt && ln -s ../elsewhere cache")
    assert first.exit_code == 0, first.stderr
    (project / "config.txt").write_text("local file\n")
    (project / "cache").mkdir()
    (project / "cache" / "x.bin").write_text("local cache\n")
    second = run_vmlab("run", "job8", "--workdir", str(project), "--", "true")
    outside = lab.path(f"/root/work/{WORKDIR}").parent
    assert (outside / "precious.txt").read_text() == "precious\n"
    assert not (outside / "elsewhere" / "x.bin").exists()
    assert second.exit_code == 1, (second.output, second.stderr)
    assert "is a symlink on the lab" in second.stderr and "cache" in second.stderr, second.stderr
    assert len(list(lab.path("/root/.vmlab-runs").glob("2*"))) == 1  # the second run never started


def test_non_utf8_file_names_are_sent_and_fetched_back(make_lab: Callable[[str], Lab], tmp_path: Path) -> None:
    """File names are bytes on Linux: a Latin-1 name (not UTF-8) in the workdir and one written by the command."""
    lab = make_lab("job9")
    project = tmp_path / WORKDIR
    project.mkdir()
    (project / os.fsdecode(b"caf\xe9.txt")).write_text("in\n")
    result = run_vmlab("run", "job9", "--workdir", str(project), "--outputs", "out", "--", "python3", "-c",
                       "import os; os.mkdir(b'out'); open(b'out/r\\xe9sultat.txt', 'w').write("
                       "open(b'caf\\xe9.txt').read())")
    assert result.exit_code == 0, (result.output, result.stderr)
    assert (lab.path(f"/root/work/{WORKDIR}") / os.fsdecode(b"caf\xe9.txt")).read_text() == "in\n"
    assert (project / "out" / os.fsdecode(b"r\xe9sultat.txt")).read_text() == "in\n"


def test_outputs_never_land_in_a_git_folder(make_lab: Callable[[str], Lab], tmp_path: Path) -> None:
    """A `.git/` the command wrote inside an output folder (a config with core.fsmonitor, a hook: code that git,
    or a shell prompt showing git status, runs here) is not fetched: the outputs are data, never a repository."""
    make_lab("job10")
    project = tmp_path / WORKDIR
    project.mkdir()
    result, doc = run_json("job10", "--workdir", str(project), "--outputs", "results", "--", "sh", "-c",
                           "mkdir -p results/.git/hooks && echo ok > results/r.txt && "
                           "printf '[core]\\n\\tfsmonitor = touch /tmp/pwned\\n' > results/.git/config && "
                           "echo x > results/.git/hooks/pre-commit")
    assert result.exit_code == 0 and doc is not None, (result.output, result.stderr)
    assert (project / "results" / "r.txt").read_text() == "ok\n"
    assert not (project / "results" / ".git").exists()
    assert sorted(doc["skipped"]) == ["results/.git/config", "results/.git/hooks/pre-commit"], doc


def test_the_lab_copy_of_the_workdir_is_the_lab_users_alone(make_lab: Callable[[str], Lab], tmp_path: Path) -> None:
    """Another user on the lab (a shared machine) reads neither the code sent nor the outputs written there, as
    they read nothing of the run folder: ~/work and its copies are made 0700 whatever the lab's umask."""
    lab = make_lab("job11")
    project = tmp_path / WORKDIR
    project.mkdir()
    (project / "train.py").write_text("print('hi')\n")
    result = run_vmlab("run", "job11", "--workdir", str(project), "--", "true")
    assert result.exit_code == 0, result.stderr
    work = lab.path(f"/root/work/{WORKDIR}")
    assert work.stat().st_mode & 0o777 == 0o700
    assert work.parent.stat().st_mode & 0o777 == 0o700
    assert lab.path("/root/.vmlab-runs").stat().st_mode & 0o777 == 0o700
@pytest.fixture(scope="module")
def baked(cloud: Cloud) -> str:
    """A lab image for `run --up` (JupyterLab included: `up` waits for it), baked once for the module."""
    result = run_vmlab("bake", str(Path(__file__).parent / "recipes" / "ec2_flow.py"), "--provider", "sandbox",
                       "-e", f"jupyter={JUPYTER}", "--json")
    assert result.exit_code == 0, (result.output, result.stderr)
    return str(json.loads(result.stdout)["image"])


def test_run_up_launches_the_lab_runs_and_down_after_removes_it(cloud: Cloud, baked: str, tmp_path: Path) -> None:
    (tmp_path / "job.sh").write_text("mkdir -p out && echo 42 > out/answer && echo ran-on-new-lab && exit 3\n")
    result, doc = run_json("fresh", "--up", "--provider", "sandbox", "--image", baked, "--max-hours", "2",
                           "--workdir", str(tmp_path), "--outputs", "out", "--down-after", "--", "sh", "job.sh")
    assert result.exit_code == 3, (result.stdout, result.stderr)
    assert doc is not None and (doc["launched"], doc["after"], doc["fetched"]) == (True, "down", ["out/answer"])
    assert "ran-on-new-lab" in result.stderr
    assert (tmp_path / "out" / "answer").read_text() == "42\n"
    assert sorted(cloud.instances) == [] and LabStore().get("fresh") is None  # nothing left


def test_run_up_on_a_running_lab_launches_nothing(make_lab: Callable[[str], Lab], cloud: Cloud,
                                                  tmp_path: Path) -> None:
    make_lab("already")
    launched = list(cloud.launched)
    result = run_vmlab("run", "already", "--up", "--provider", "sandbox", "--workdir", str(tmp_path), "--",
                       "echo", "hello")
    assert result.exit_code == 0 and "hello" in result.stdout, (result.stdout, result.stderr)
    assert "lab already is running: --up launches nothing" in result.stdout
    assert cloud.launched == launched


@pytest.mark.parametrize(("args", "fragment"), [
    (["--type", "t3.micro"], "--type is a launch flag: it applies with --up only"),
    (["--max-hours", "2"], "--max-hours is a launch flag: it applies with --up only"),
    (["--up", "--spot"], "--spot only applies to --provider ec2 (not sandbox)"),
    (["--up", "--image", "no-such-image"], "image 'no-such-image' not found for provider sandbox"),
    (["--up", "--max-hours", "-1"], "--max-hours"),
    (["--up", "--outputs", "../x"], "--outputs '../x' is not a path inside the run's folder"),
    (["--up", "--env", "VMLAB_TEST_UNSET_VAR"], "VMLAB_TEST_UNSET_VAR is not set"),
])
def test_run_up_checks_everything_before_it_launches(cloud: Cloud, tmp_path: Path, args: list[str],
                                                     fragment: str) -> None:
    launched = list(cloud.launched)
    result = run_vmlab("run", "never", "--provider", "sandbox", *args, "--workdir", str(tmp_path), "--down-after",
                       "--", "true") if "--up" in args else run_vmlab(
        "run", "never", *args, "--workdir", str(tmp_path), "--", "true")
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and fragment in lines[0], result.stderr
    assert cloud.launched == launched and LabStore().get("never") is None


def test_a_lab_launched_by_run_is_removed_when_the_run_fails_before_its_command(
        cloud: Cloud, baked: str, tmp_path: Path) -> None:
    """A SIGTERM while the workdir is sent: the command never started, so --down-after removes the new lab."""
    with open(tmp_path / "big.bin", "wb") as fh:
        fh.truncate(256 << 20)  # long enough to send that the signal lands during the upload
    launched = list(cloud.launched)

    def term_once_sending() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            new = [i for i in cloud.launched if i not in launched]
            box = cloud.boxes.get(new[0]) if new else None
            try:
                if box is not None and (box.path(f"/root/work/{tmp_path.name}") / "big.bin").exists():
                    break
            except OSError:
                pass
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=term_once_sending, daemon=True).start()
    result = run_vmlab("run", "doomed", "--up", "--provider", "sandbox", "--image", baked, "--workdir",
                       str(tmp_path), "--down-after", "--", "true")
    assert result.exit_code == 143, (result.output, result.stderr)
    assert "removing lab doomed, launched by this run (--down-after)" in result.output
    assert [i for i in cloud.launched if i not in launched] and sorted(cloud.instances) == []
    assert LabStore().get("doomed") is None
