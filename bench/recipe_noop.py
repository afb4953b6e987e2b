"""The vmlab side of the no-op provisioning benchmark: 20 steps of files, templates, pip and guarded shell.

bench/peers/playbook.yml (Ansible) and bench/peers/pyinfra_deploy.py (pyinfra) describe the same end state
with the same template and content files (bench/peers/templates, bench/peers/files). Variables come from the
inventory that bench/provision_noop.py writes at run time:

    root       the directory everything is written below (a fresh temp dir per tool)
    wheel_dir  a local directory holding the vmlab-bench-pkg wheel (pip runs with --no-index)
    py         the target's Python 3, used to create the virtual environment
    app_name, app_port, workers, greeting   template values

With --keep, bench/provision_noop.py leaves its inventories in the work dir it prints (inventory-vmlab.yml
for this recipe); the sshd they name is stopped when the script ends.
"""

from pathlib import Path

from vmlab.engine import Recipe
from vmlab.operations import files, pip, shell

PEERS = Path(__file__).resolve().parent / "peers"
FILES = PEERS / "files"
TEMPLATES = PEERS / "templates"

recipe = Recipe("bench-noop")

# 6 directories
recipe.step("dir app", files.Directory("{{ root }}/app", mode="0755"))
recipe.step("dir conf", files.Directory("{{ root }}/app/conf", mode="0755"))
recipe.step("dir data", files.Directory("{{ root }}/app/data", mode="0750"))
recipe.step("dir logs", files.Directory("{{ root }}/app/logs", mode="0755"))
recipe.step("dir bin", files.Directory("{{ root }}/app/bin", mode="0755"))
recipe.step("dir www", files.Directory("{{ root }}/app/www", mode="0755"))

# 5 files with literal content (read here, sent as content; the peers copy the same files)
recipe.step("file README", files.File("{{ root }}/app/README.txt", content=(FILES / "README.txt").read_text(),
                                      mode="0644"))
recipe.step("file logging.ini", files.File("{{ root }}/app/conf/logging.ini",
                                           content=(FILES / "logging.ini").read_text(), mode="0644"))
recipe.step("file hosts.allow", files.File("{{ root }}/app/conf/hosts.allow",
                                           content=(FILES / "hosts.allow").read_text(), mode="0640"))
recipe.step("file requirements", files.File("{{ root }}/app/requirements.txt",
                                            content=(FILES / "requirements.txt").read_text(), mode="0644"))
recipe.step("file index.html", files.File("{{ root }}/app/www/index.html",
                                          content=(FILES / "index.html").read_text(), mode="0644"))

# 4 templates
recipe.step("template app.conf", files.Template("{{ root }}/app/conf/app.conf", src=str(TEMPLATES / "app.conf.j2"),
                                                mode="0644"))
recipe.step("template site.conf", files.Template("{{ root }}/app/conf/site.conf",
                                                 src=str(TEMPLATES / "site.conf.j2"), mode="0644"))
recipe.step("template env.sh", files.Template("{{ root }}/app/bin/env.sh", src=str(TEMPLATES / "env.sh.j2"),
                                              mode="0755"))
recipe.step("template motd", files.Template("{{ root }}/app/motd", src=str(TEMPLATES / "motd.j2"), mode="0644"))

# 1 line in a file
recipe.step("line debug", files.Line("{{ root }}/app/conf/settings.ini", line="debug = false",
                                     regexp=r"^debug\s*="))

# 1 pip package into a venv, from a local wheel directory only
recipe.step("pip package", pip.Packages(("vmlab-bench-pkg==1.0",), venv="{{ root }}/venv", python="{{ py }}",
                                        find_links="{{ wheel_dir }}", extra_args=("--no-index",)))

# 3 guarded shell steps
recipe.step("shell stamp", shell.Shell("echo built > {{ root }}/app/data/stamp",
                                       creates="{{ root }}/app/data/stamp"))
recipe.step("shell init log", shell.Shell("echo initialised >> {{ root }}/app/logs/init.log",
                                          unless="grep -q initialised {{ root }}/app/logs/init.log"))
recipe.step("shell backup", shell.Shell("cp {{ root }}/app/conf/app.conf {{ root }}/app/data/app.conf.orig",
                                        creates="{{ root }}/app/data/app.conf.orig"))
