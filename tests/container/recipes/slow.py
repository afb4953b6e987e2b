"""Writes a file, then waits long enough for a test to signal or fault the bake mid-apply."""

from vmlab.engine import Recipe
from vmlab.operations import files, shell

recipe = Recipe("ctr-slow", become=True)
recipe.step("a file", files.File("/etc/vmlab-ctr-partial", content="half done\n"))
recipe.step("a long step", shell.Shell("touch /run/vmlab-slow-started; sleep 60"))
recipe.step("never reached", files.File("/etc/vmlab-ctr-never", content="x\n"))
