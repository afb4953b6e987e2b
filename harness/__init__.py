"""Real peers for the tests (tests/) and the benchmarks (bench/), each on 127.0.0.1 (or in a private overlay the
test makes), one subpackage per kind: harness.emulators, harness.faults, harness.clouds, harness.drivers,
harness.plumbing. It is not part of the vmlab wheel.

Emulators (a real server standing in for a cloud service):
    moto (AWS: EC2, S3, IAM; `MotoServer`), azurite (Azure Blob), gcs (fake-gcs-server), imds (EC2 instance
    metadata, IMDSv2), jupyter (jupyter-server), jupyterhub (JupyterHub + configurable-http-proxy),
    sshd (OpenSSH sshd with its own host and client key; also `free_port`).
Fault injectors (between vmlab and a peer, failing or slowing what a test picks):
    awsfaults (`FaultProxy`: records every AWS call, fails or delays chosen ones), tcpdrop (cuts the first N
    TCP connections).
Fake clouds (whole environments vmlab launches into):
    ec2cloud (moto's instances booted as `Sandbox` hosts), sandbox (a throwaway root host: the test machine's
    files through an overlay, served by sshd), rootfs (a clean Debian root tree, built once and cached).
Drivers (run a vmlab program the way users or systemd do, and inspect what it left):
    ec2cli (the `vmlab` CLI against moto; everything vmlab-tagged that exists), agent (`vmlab-agent` in a
    subprocess), storebackends (the agent's three stores set up alike, behind a FaultProxy), ansible_peer
    (ansible-core's reading of an inventory, to compare with ours).
Plumbing:
    serverproc (waiting for an emulator subprocess to answer on loopback, stopping it), iampolicy (evaluates the
    IAM policies vmlab writes, for the conditions moto does not check).
"""
