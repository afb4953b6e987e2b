"""Leaves a secret where the scrub does not look but the scan does: the bake must fail and leave nothing."""

from vmlab.engine import Recipe
from vmlab.operations import files

FAKE_AWS_ID = "AKIA" + "CTRTESTNOTAREALKY"[:16]  # split so this file itself is no finding

recipe = Recipe("ctr-plants-secret", become=True)
recipe.step("app folder", files.Directory("/opt/app"))
recipe.step("app settings", files.File("/opt/app/settings.ini", content=f"aws_access_key_id = {FAKE_AWS_ID}\n"))
