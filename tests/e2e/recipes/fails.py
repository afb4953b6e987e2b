"""A recipe whose second step fails: the bake must stop there and remove its builder and key."""

from vmlab.engine import Recipe
from vmlab.operations import files, shell

recipe = Recipe("e2e-fails", become=True)
recipe.step("a file", files.File("/etc/vmlab-e2e-partial", content="half done\n"))
recipe.step("a failing command", shell.Shell("echo about to fail; exit 3"))
recipe.step("never reached", files.File("/etc/vmlab-e2e-never", content="x\n"))
