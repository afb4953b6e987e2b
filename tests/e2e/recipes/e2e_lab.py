"""The default lab recipe plus steps that prove apt, users and systemd operations really ran on the VM."""

from lab import recipe as lab  # recipes/ is put on sys.path by the test (siblings import each other)

from vmlab.engine import Recipe
from vmlab.operations import apt, files, systemd, users

recipe = Recipe("e2e-lab", become=True)
recipe.include(lab)
recipe.step("a package", apt.Packages(("tree",)))
recipe.step("a user", users.User("student", groups=("users",), shell="/bin/bash"))
recipe.step("a marker", files.File("/etc/vmlab-e2e-marker", content="baked by the e2e test\n", mode="0644"))
recipe.step("a timer unit", systemd.Unit("vmlab-e2e.timer", content=(
    "[Unit]\nDescription=vmlab e2e timer\n\n[Timer]\nOnCalendar=daily\n\n[Install]\nWantedBy=timers.target\n")))
recipe.step("timer enabled", systemd.Service("vmlab-e2e.timer", enabled=True))
