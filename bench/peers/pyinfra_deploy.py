"""The pyinfra side of the no-op provisioning benchmark: the same end state as bench/recipe_noop.py, from the
same template and content files. Variables (root, wheel_dir, py, app_*) come from the generated inventory.

21 operations for vmlab's 20 steps: pyinfra makes the venv with pip.venv, then installs into it. pyinfra has no
`creates`/`unless` on server.shell; the guards are facts read while the deploy is prepared (before any
operation runs), which gives the same outcome here because only the guarded commands touch their guard files.
"""

from pathlib import Path

from pyinfra import host
from pyinfra.facts.files import File
from pyinfra.facts.server import Command
from pyinfra.operations import files, pip, server

HERE = Path(__file__).resolve().parent
FILES = HERE / "files"
TEMPLATES = HERE / "templates"

root = host.data.root
app = f"{root}/app"
values = {k: host.data.get(k) for k in ("root", "app_name", "app_port", "workers", "greeting")}

# 6 directories
files.directory(name="dir app", path=app, mode="755")
files.directory(name="dir conf", path=f"{app}/conf", mode="755")
files.directory(name="dir data", path=f"{app}/data", mode="750")
files.directory(name="dir logs", path=f"{app}/logs", mode="755")
files.directory(name="dir bin", path=f"{app}/bin", mode="755")
files.directory(name="dir www", path=f"{app}/www", mode="755")

# 5 files with literal content
files.put(name="file README", src=str(FILES / "README.txt"), dest=f"{app}/README.txt", mode="644")
files.put(name="file logging.ini", src=str(FILES / "logging.ini"), dest=f"{app}/conf/logging.ini", mode="644")
files.put(name="file hosts.allow", src=str(FILES / "hosts.allow"), dest=f"{app}/conf/hosts.allow", mode="640")
files.put(name="file requirements", src=str(FILES / "requirements.txt"), dest=f"{app}/requirements.txt",
          mode="644")
files.put(name="file index.html", src=str(FILES / "index.html"), dest=f"{app}/www/index.html", mode="644")

# 4 templates
files.template(name="template app.conf", src=str(TEMPLATES / "app.conf.j2"), dest=f"{app}/conf/app.conf",
               mode="644", **values)
files.template(name="template site.conf", src=str(TEMPLATES / "site.conf.j2"), dest=f"{app}/conf/site.conf",
               mode="644", **values)
files.template(name="template env.sh", src=str(TEMPLATES / "env.sh.j2"), dest=f"{app}/bin/env.sh",
               mode="755", **values)
files.template(name="template motd", src=str(TEMPLATES / "motd.j2"), dest=f"{app}/motd", mode="644", **values)

# 1 line in a file (pyinfra matches with grep/sed basic regexps)
files.line(name="line debug", path=f"{app}/conf/settings.ini", line=r"^debug *=.*$", replace="debug = false")

# 1 pip package into a venv, from a local wheel directory only
pip.venv(name="pip venv", path=f"{root}/venv", python=host.data.py)
pip.packages(name="pip package", packages=["vmlab-bench-pkg==1.0"], virtualenv=f"{root}/venv",
             extra_install_args=f"--no-index --find-links {host.data.wheel_dir}")

# 3 guarded shell steps
if not host.get_fact(File, path=f"{app}/data/stamp"):
    server.shell(name="shell stamp", commands=[f"echo built > {app}/data/stamp"])
logged = host.get_fact(Command, f"grep -q initialised {app}/logs/init.log && echo yes || echo no")
if logged != "yes":
    server.shell(name="shell init log", commands=[f"echo initialised >> {app}/logs/init.log"])
if not host.get_fact(File, path=f"{app}/data/app.conf.orig"):
    server.shell(name="shell backup", commands=[f"cp {app}/conf/app.conf {app}/data/app.conf.orig"])
