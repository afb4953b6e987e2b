"""A recipe that leaves secrets where the scrub does not look but the scan does: the bake must fail, naming the
files, make no image, and remove its builder and key."""

from vmlab.engine import Recipe
from vmlab.operations import files

FAKE_AWS_ID = "AKIA" + "E2ETESTNOTAREALK"  # split so this file itself is no finding

recipe = Recipe("e2e-plants-secret", become=True)
recipe.step("app folder", files.Directory("/opt/app"))
recipe.step("deploy folder", files.Directory("/srv/deploy", mode="0700"))
recipe.step("app settings", files.File("/opt/app/settings.ini", content=f"aws_access_key_id = {FAKE_AWS_ID}\n"))
recipe.step("deploy key", files.File("/srv/deploy/id_ed25519", mode="0600",
                                     content="-----BEGIN OPENSSH " + "PRIVATE KEY-----\nnot a key\n"))
