"""The default lab recipe plus steps that prove apt, users and systemd operations really ran on the VM.

The VM is Debian 12 in QEMU without a GPU and with internet for PyPI and Debian only: CUDA is skipped by
`cuda=auto` (no GPU, not EC2), conda is turned off (Miniforge comes from GitHub), so JupyterLab goes into a
venv; the agent is installed from vmlab's own wheel. `upgrade=false` keeps the emulated bake short (a kernel
upgrade would also not be booted: the local provider boots the base image's kernel). `hub_singleuser` puts
jupyterhub-singleuser into the lab's venv, so the same image serves a JupyterHub class (LabSpawner, issue 16).
"""

from lab import recipe as lab  # recipes/ is put on sys.path by the test (siblings import each other)

from vmlab.engine import Recipe
from vmlab.operations import apt, files, systemd, users

recipe = Recipe("e2e-lab", become=True, vars={"conda": False, "upgrade": False, "hub_singleuser": True})
recipe.include(lab)
recipe.step("a package", apt.Packages(("tree",)))
recipe.step("a user", users.User("student", groups=("users",), shell="/bin/bash"))
recipe.step("a marker", files.File("/etc/vmlab-e2e-marker", content="baked by the e2e test\n", mode="0644"))
recipe.step("a timer unit", systemd.Unit("vmlab-e2e.timer", content=(
    "[Unit]\nDescription=vmlab e2e timer\n\n[Timer]\nOnCalendar=daily\n\n[Install]\nWantedBy=timers.target\n")))
recipe.step("timer enabled", systemd.Service("vmlab-e2e.timer", enabled=True))
