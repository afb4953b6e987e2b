"""A small, harmless recipe for the EC2 flow tests: a file, a shell step and the JupyterLab unit `vmlab up` starts.

It runs on a throwaway sandbox host (harness/clouds/sandbox.py) as root, so JupyterLab runs as root
(`--allow-root`); `jupyter` is the test venv's own (`-e jupyter=...`), shared read-only into the sandbox.
"""

from vmlab import lab
from vmlab.engine import Recipe
from vmlab.operations import files, shell, systemd

UNIT = """\
[Unit]
Description=JupyterLab (vmlab flow test) on 127.0.0.1:{{ port }}
ConditionPathExists={{ env_file }}

[Service]
User=root
WorkingDirectory=/root
EnvironmentFile={{ env_file }}
ExecStart={{ jupyter }} lab --allow-root --no-browser --ip=127.0.0.1 --port={{ port }} \\
  --ServerApp.port_retries=0 --ServerApp.root_dir=/root
"""

recipe = Recipe("ec2-flow", vars={"jupyter": "/usr/local/bin/jupyter", "port": lab.PORT, "env_file": lab.ENV_FILE})
recipe.step("a marker", files.File("/etc/vmlab-flow-marker", content="baked by test_ec2_flow\n", mode="0644"))
recipe.step("a shell step", shell.Shell("mkdir -p /var/lib/vmlab-flow && date > /var/lib/vmlab-flow/stamp",
                                        creates="/var/lib/vmlab-flow/stamp"))
recipe.step("token folder", files.Directory("/etc/vmlab", mode="0700", owner="root", group="root"))
recipe.step("jupyterlab unit", systemd.Unit(lab.SERVICE, content=UNIT))
recipe.step("jupyterlab at boot", systemd.Service(lab.SERVICE, enabled=True))
