"""A small recipe that shows the engine's pieces and is safe to run anywhere: it only writes below `workdir`.

    vmlab provision recipes/example.py -i inventory.example.yaml --limit local --check --diff
    vmlab provision recipes/example.py -i inventory.example.yaml --limit local -e greeting=hello

Run it twice: the second run reports 0 changed.
"""

from vmlab.engine import Recipe, varcheck
from vmlab.operations import files, shell

recipe = Recipe("example", vars={"workdir": "/tmp/vmlab-example", "greeting": "hi"})


@recipe.check
def _variables(v):
    """Values are data: checked before any host is touched (a newline in `greeting` would add a config line)."""
    varcheck.abs_path(v, "workdir", "/tmp/vmlab-example")
    varcheck.line(v, "greeting", "hello")


recipe.step("work folder", files.Directory("{{ workdir }}", mode="0755"))
recipe.step("config", files.Template("{{ workdir }}/app.conf",
                                     source="greeting = {{ greeting }}\nhost = {{ inventory_hostname }}\n",
                                     mode="0644"), notify="note the change")
recipe.step("literal file", files.File("{{ workdir }}/README", content="written by vmlab {{ not a template }}\n"))
recipe.step("a setting", files.Line("{{ workdir }}/settings.ini", line="debug = false", regexp=r"^debug\s*="))
recipe.step("one-off command", shell.Shell("date > {{ (workdir ~ '/first-run') | quote }}",
                                          creates="{{ workdir }}/first-run"))
recipe.handler("note the change", shell.Shell("echo changed >> {{ (workdir ~ '/changes.log') | quote }}"))
