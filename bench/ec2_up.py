"""Benchmark: `vmlab up` on EC2 (moto + sandbox hosts) against the calls a person following a tutorial would make.

    .venv/bin/python bench/ec2_up.py                     # 3 runs each, 5 s simulated boot; ~1 min
    .venv/bin/python bench/ec2_up.py --runs 1 --boot 0   # quicker, results not saved

EC2 is a moto server behind harness/faults/awsfaults.py's FaultProxy, used only to record every AWS call (action
and arrival time). Each instance becomes a throwaway sandbox host (harness/clouds/ec2cloud.py) whose sshd answers
`--boot` seconds after the instance appears, standing in for the guest's boot; JupyterLab is the real one, started
by the image's unit. The image is baked once with tests/integration/recipes/ec2_flow.py (not measured).

Measured, in turns so both see the same machine:
- **vmlab**: `vmlab up NAME --provider ec2 --image IMG --json` as a CLI process (wall time), then `vmlab down`
  (not measured).
- **peer**: a Python process with boto3 doing what the usual "JupyterLab on EC2" tutorial does by hand: import a
  key pair, create a security group with SSH from one address, run the instance, poll describe-instances until it
  has an address, then with OpenSSH's `ssh` (retried every 0.2 s until sshd answers) write the token file,
  `systemctl restart` the lab unit and poll /api/status with the token. It checks nothing else (no instance type
  or image validation, no tags, host key accepted on first use), so it is the floor for the same end state.

Reported: wall times and their ratio (target <= 1.2x the peer), vmlab's own overhead = wall - boot to SSH -
JupyterLab's start (both as the environment measured them: the sandbox's sshd becoming ready after the instance
appeared, and the lab's start time seen by the peer) (target <= 3 s), AWS calls by action, and describe calls made
while waiting for the address and SSH (no busy polling: a handful however long the boot). Results go to
bench/results/ec2_up.json; see bench/README.md.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from harness.clouds.ec2cloud import SandboxCloud, leftovers  # noqa: E402
from harness.emulators.moto import MotoServer  # noqa: E402
from harness.faults.awsfaults import FaultProxy  # noqa: E402
from tests.conftest import AWS_TEST_ENV  # noqa: E402
from tests.integration.test_ec2_flow import CIDR, SHARED, bake_args, cli_env, seed_base  # noqa: E402

RESULTS = REPO / "bench" / "results" / "ec2_up.json"
DESCRIBES = ("DescribeInstances", "DescribeInstanceStatus")

# The peer, run as its own process: argv = image id, ssh port, work dir. Prints JSON timings.
PEER = r'''
import json, os, subprocess, sys, time
t0 = time.monotonic()
import boto3
image, port, work = sys.argv[1], sys.argv[2], sys.argv[3]
ec2 = boto3.client("ec2")
key = os.path.join(work, "id_ed25519")
subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
ec2.import_key_pair(KeyName="tutorial", PublicKeyMaterial=open(key + ".pub", "rb").read())
vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
group = ec2.create_security_group(GroupName="tutorial", Description="ssh", VpcId=vpc)["GroupId"]
ec2.authorize_security_group_ingress(GroupId=group, IpProtocol="tcp", FromPort=22, ToPort=22,
                                     CidrIp=os.environ["VMLAB_SSH_CIDR"])
inst = ec2.run_instances(ImageId=image, InstanceType="t3.large", MinCount=1, MaxCount=1, KeyName="tutorial",
                         SecurityGroupIds=[group])["Instances"][0]["InstanceId"]
while not ec2.describe_instances(InstanceIds=[inst])["Reservations"][0]["Instances"][0].get("PublicIpAddress"):
    time.sleep(0.2)
ssh = ["ssh", "-F", "none", "-i", key, "-p", port, "-o", "StrictHostKeyChecking=accept-new",
       "-o", "UserKnownHostsFile=" + os.path.join(work, "known_hosts"), "-o", "ConnectTimeout=5", "root@127.0.0.1"]
while subprocess.run(ssh + ["true"], capture_output=True).returncode != 0:
    time.sleep(0.2)
t_ssh = time.monotonic()
token = os.urandom(16).hex()
subprocess.run(ssh + ["umask 077; mkdir -p /etc/vmlab; cat > /etc/vmlab/jupyter.env; "
                      "systemctl restart jupyterlab.service"], input=f"JUPYTER_TOKEN={token}\n", text=True,
               check=True)
t_restart = time.monotonic()
probe = (f"until curl -sf -o /dev/null -H 'Authorization: token {token}' http://127.0.0.1:8888/api/status; "
         "do sleep 0.1; done")
subprocess.run(ssh + [probe], check=True)
t_end = time.monotonic()
print(json.dumps({"instance": inst, "total": t_end - t0, "to_ssh": t_ssh - t0, "jupyter_start": t_end - t_restart}))
'''


def run_vmlab(env: dict[str, str], image: str, proxy: FaultProxy) -> tuple[float, dict[str, Any], list[str]]:
    started = time.monotonic()
    up = subprocess.run([sys.executable, "-m", "vmlab", "up", "bench", "--provider", "ec2", "--image", image,
                         "--json"], env=env, capture_output=True, text=True, timeout=120)
    wall = time.monotonic() - started
    calls = proxy.calls
    if up.returncode != 0:
        raise SystemExit(f"vmlab up failed: {up.stderr}{up.stdout}")
    doc = json.loads(up.stdout)
    down = subprocess.run([sys.executable, "-m", "vmlab", "down", "bench"], env=env, capture_output=True, text=True,
                          timeout=300)
    if down.returncode != 0:
        raise SystemExit(f"vmlab down failed: {down.stderr}")
    return wall, doc, calls


def run_peer(env: dict[str, str], image: str, port: int, ec2: Any,
             proxy: FaultProxy) -> tuple[float, dict[str, Any], list[str]]:
    work = tempfile.mkdtemp(prefix="vmlab-bench-peer-")
    started = time.monotonic()
    peer = subprocess.run([sys.executable, "-c", PEER, image, str(port), work], env=env, capture_output=True,
                          text=True, timeout=120)
    wall = time.monotonic() - started
    calls = proxy.calls
    if peer.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        raise SystemExit(f"peer failed: {peer.stderr}")
    doc = json.loads(peer.stdout.strip().splitlines()[-1])
    ec2.terminate_instances(InstanceIds=[doc["instance"]])
    ec2.delete_security_group(GroupName="tutorial")
    ec2.delete_key_pair(KeyName="tutorial")
    shutil.rmtree(work, ignore_errors=True)
    return wall, doc, calls


def wait_calls(actions: list[str]) -> dict[str, int]:
    """Describe calls after RunInstances (the address wait, the SSH wait and later)."""
    after = actions[actions.index("RunInstances") + 1:] if "RunInstances" in actions else []
    return {a: after.count(a) for a in DESCRIBES if a in after}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--boot", type=float, default=5.0, help="simulated seconds from launch to sshd answering")
    args = parser.parse_args()
    os.environ.update(AWS_TEST_ENV)
    os.environ.pop("AWS_PROFILE", None)
    moto = MotoServer.start_new()
    state = Path(tempfile.mkdtemp(prefix="vmlab-bench-state-"))
    rows: dict[str, list[dict[str, Any]]] = {"vmlab": [], "peer": []}
    try:
        import boto3

        ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto.endpoint)
        ami = seed_base(ec2)
        with FaultProxy(moto.endpoint) as proxy, SandboxCloud(moto.endpoint, share=SHARED) as cloud:
            env = cli_env(proxy.endpoint, cloud.port, state)
            env["VMLAB_SSH_CIDR"] = CIDR
            baked = subprocess.run([sys.executable, "-m", "vmlab", *bake_args(ami, "--json")], env=env,
                                   capture_output=True, text=True, timeout=300)
            if baked.returncode != 0:
                raise SystemExit(f"bake failed: {baked.stderr}{baked.stdout}")
            image = json.loads(baked.stdout)["image"]
            cloud.boot_delay = args.boot
            for _ in range(args.runs):
                for who in ("vmlab", "peer"):
                    proxy.reset()
                    booted = len(cloud.booted)
                    if who == "vmlab":
                        wall, doc, actions = run_vmlab(env, image, proxy)
                    else:
                        wall, doc, actions = run_peer(env, image, cloud.port, ec2, proxy)
                    iid = cloud.booted[booted]
                    rows[who].append({"wall": wall, "boot_to_ssh": cloud.ssh_ready[iid] - cloud.appeared[iid],
                                      "calls": dict(collections.Counter(actions)),
                                      "wait_describes": wait_calls(actions), "report": doc})
            left = leftovers(ec2)
            assert not left["instances"] and not left["key_pairs"] and not left["groups"], left
            assert not cloud.errors, cloud.errors
    finally:
        moto.cleanup()
        shutil.rmtree(state, ignore_errors=True)
    return report(rows, args)


def report(rows: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> int:
    med = statistics.median
    v, p = rows["vmlab"], rows["peer"]
    v_wall, p_wall = med(r["wall"] for r in v), med(r["wall"] for r in p)
    jupyter = med(r["report"]["jupyter_start"] for r in p)  # the guest's own start-up, as the peer saw it
    boot = med(r["boot_to_ssh"] for r in v)
    overhead = v_wall - boot - jupyter
    describes = max(sum(r["wait_describes"].values()) for r in v)
    ratio = v_wall / p_wall
    print(f"{'':<8} {'wall':>8} {'boot->ssh':>10} {'AWS calls':>10} {'describes in waits':>19}")
    for who, rs in rows.items():
        calls, waits = med(sum(r["calls"].values()) for r in rs), max(sum(r["wait_describes"].values()) for r in rs)
        print(f"{who:<8} {med(r['wall'] for r in rs):>7.2f}s {med(r['boot_to_ssh'] for r in rs):>9.2f}s "
              f"{calls:>10} {waits:>19}")
    print(f"JupyterLab start on the lab (peer's view): {jupyter:.2f} s")
    print(f"vmlab overhead beyond boot to SSH and JupyterLab's start: {overhead:.2f} s (target <= 3 s)")
    print("vmlab's own timings (median): " + ", ".join(
        f"{k} {med(r['report']['timings'][k] for r in v):.2f}s" for k in v[0]["report"]["timings"]))
    print(f"vmlab / peer wall time: {ratio:.2f}x (target <= 1.2x)")
    print("vmlab AWS calls: " + ", ".join(f"{k} {n}" for k, n in sorted(v[0]["calls"].items())))
    print("peer AWS calls:  " + ", ".join(f"{k} {n}" for k, n in sorted(p[0]["calls"].items())))
    ok = overhead <= 3.0 and ratio <= 1.2
    if args.runs >= 3:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({
            "machine": {"python": platform.python_version(), "platform": platform.platform(),
                        "cpus": os.cpu_count()},
            "settings": {"runs": args.runs, "boot_seconds": args.boot},
            "vmlab_wall_s": round(v_wall, 3), "peer_wall_s": round(p_wall, 3), "ratio": round(ratio, 3),
            "jupyter_start_s": round(jupyter, 3), "boot_to_ssh_s": round(boot, 3),
            "vmlab_overhead_s": round(overhead, 3), "max_describes_in_waits": describes,
            "pass": ok, "runs": rows}, indent=2, default=str) + "\n")
        print(f"saved {RESULTS.relative_to(REPO)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
