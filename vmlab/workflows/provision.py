"""Apply a recipe to the SSH hosts of an inventory, in parallel; one host's failure never stops the others."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from vmlab.engine.recipe import Recipe
from vmlab.engine.runner import HostRecap, Reporter, apply, prepare
from vmlab.errors import BadInput, VmlabError
from vmlab.inventory import InventoryHost
from vmlab.safetext import USER_RE, check_user

if TYPE_CHECKING:
    from vmlab.transport.local import LocalHost
    from vmlab.transport.ssh import SSHConnection, SSHTarget


def host_variables(recipe: Recipe, host: InventoryHost, extra: Mapping[str, Any]) -> dict[str, Any]:
    """Recipe defaults < inventory vars < -e extra vars; `user` defaults to the SSH user."""
    env: dict[str, Any] = {**recipe.vars, **host.vars, **extra}
    if "user" not in env:
        login = host.user or "root"
        if not USER_RE.fullmatch(login):  # a login name Ansible accepts (first.last) may not suit a unit file
            raise BadInput(f"host {host.name} logs in as {login!r}, which recipes cannot use as their `user`",
                           "pass the user the recipe should configure: -e user=NAME")
        env["user"] = login
    # recipes write it into unit files and chown specs: a name, never a line break or a second word
    check_user(env["user"], f"the user of host {host.name}")
    env["inventory_hostname"] = host.name
    return env


def provision(recipe: Recipe, hosts: list[InventoryHost], *, extra_vars: Mapping[str, Any] | None = None,
              check: bool = False, diff: bool = False, forks: int = 10, connect_retry: float = 5.0,
              report: Reporter | None = None,
              on_connect: Callable[[InventoryHost, float], None] | None = None) -> list[HostRecap]:
    """Provision `hosts` with `recipe`; returns one recap per host, in inventory order.

    Every host's variables are checked against the recipe before any host is contacted, so a template or
    condition error changes nothing anywhere.
    """
    extra = dict(extra_vars or {})
    envs = {h.name: host_variables(recipe, h, extra) for h in hosts}
    for h in hosts:
        prepare(recipe, envs[h.name])

    def one(host: InventoryHost) -> HostRecap:
        started = time.perf_counter()
        try:
            conn = connect(host, connect_retry)
        except VmlabError as exc:
            return HostRecap(host=host.name, unreachable=True, error=str(exc), check=check,
                             elapsed=time.perf_counter() - started)
        if on_connect:
            on_connect(host, time.perf_counter() - started)
        with conn:
            try:
                return apply(recipe, conn, variables=envs[host.name], check=check, diff=diff, report=report)
            except VmlabError as exc:  # a recipe check refused this host (or could not read it): the others go on
                return HostRecap(host=host.name, failed=1, refused=isinstance(exc, BadInput), error=str(exc),
                                 check=check, elapsed=time.perf_counter() - started)

    if not hosts:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(forks, len(hosts)))) as pool:
        return list(pool.map(one, hosts))


def connect(host: InventoryHost, retry_for: float) -> LocalHost | SSHConnection:
    """An open connection to an inventory host (SSH, or this machine for `connection: local`)."""
    if host.connection == "local":  # reviewed: an inventory connection type (ansible_connection), not a provider
        from vmlab.transport.local import LocalHost

        return LocalHost(host.name)
    from vmlab.transport.ssh import SSHConnection

    return SSHConnection(target_for(host)).open(retry_for=retry_for)


def target_for(host: InventoryHost) -> SSHTarget:
    """The SSH target of an inventory host (connection settings after aliases were resolved)."""
    import os

    from vmlab.transport.ssh import SSHTarget

    kwargs: dict[str, Any] = {"host": host.host, "port": host.port, "name": host.name}
    if host.user:
        kwargs["user"] = host.user
    if host.key_file:
        kwargs["key_file"] = os.path.expanduser(host.key_file)
    for attr in ("proxy_jump", "proxy_command"):
        if getattr(host, attr):
            kwargs[attr] = getattr(host, attr)
    if host.host_key:
        kwargs["pinned_host_key"] = host.host_key
    return SSHTarget(**kwargs)
