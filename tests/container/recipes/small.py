"""A small recipe for the container tests: a Debian package, files, and a systemd service enabled and started
(systemd is PID 1 in the builder, so this behaves as on a VM). Bakes in well under a minute."""

from vmlab.engine import Recipe
from vmlab.operations import apt, files, systemd

recipe = Recipe("ctr-small", become=True)
recipe.step("a package", apt.Packages(("hello",)))
recipe.step("app folder", files.Directory("/opt/small", mode="0755"))
recipe.step("app file", files.File("/opt/small/app.conf", content="greeting = hello\n"))
recipe.step("service unit", systemd.Unit("small.service", content=(
    "[Unit]\nDescription=vmlab container test service\n"
    "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c 'hello > /run/small-greeting'\n"
    "[Install]\nWantedBy=multi-user.target\n")))
recipe.step("service on", systemd.Service("small.service", enabled=True, running=True))
