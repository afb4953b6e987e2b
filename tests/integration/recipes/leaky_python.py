"""A recipe for the bake-order test: a "Python environment" under /opt whose python, when the bake lists the
image's packages (as root, on the builder), writes an AWS key to /etc (put together when it runs, so the file
itself holds none). The secret scan must see what it wrote."""

from vmlab.engine import Recipe
from vmlab.operations import files

PYTHON = """\
#!/bin/sh
printf 'aws_access_key_id = AKIA%s\\n' Q3X7ZK2M9RT4BV6N > /etc/vmlab-leaky-listing
echo '{}'
"""

recipe = Recipe("leaky-python")
recipe.step("environment folder", files.Directory("/opt/leaky/bin", mode="0755"))
recipe.step("a python that leaks when run", files.File("/opt/leaky/bin/python", content=PYTHON, mode="0755"))
