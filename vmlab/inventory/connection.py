"""How to reach a host: Ansible's connection variables, rendered with the host's own variables.

Only `ansible_*` names set the connection (a plain `port: 8080` is just a variable):

| setting | variables (aliases must agree when both are set) |
|---|---|
| address | `ansible_host`, `ansible_ssh_host` (default: the host's inventory name) |
| port | `ansible_port`, `ansible_ssh_port` (default 22) |
| user | `ansible_user`, `ansible_ssh_user` |
| key | `ansible_ssh_private_key_file`, `ansible_private_key_file` |
| kind | `ansible_connection`: ssh, smart, paramiko (all SSH) or local |
| ssh options | `ansible_ssh_args`, `ansible_ssh_common_args`, `ansible_ssh_extra_args` (see `sshargs`) |
| host key pin | `vmlab_host_key` (vmlab's own: an OpenSSH public key line) |

Values may be Jinja templates (`{{ inventory_hostname }}.lab.example.org`), rendered in a sandbox with the
host's variables plus `inventory_hostname`, `inventory_hostname_short`, `group_names` and `groups`.
A host that cannot be reached as written (winrm, docker, a password, vault values) is refused in one line
when it is selected, never when it merely sits in the file.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmlab.errors import BadInput
from vmlab.inventory.model import Inventory
from vmlab.inventory.sshargs import SSHOptions, parse_ssh_args
from vmlab.inventory.yamlread import Unsafe, VaultValue
from vmlab.safetext import check_host, check_login_user

SSH_KINDS = {"ssh", "smart", "paramiko", "paramiko_ssh", "ansible.builtin.ssh", "ansible.builtin.paramiko_ssh",
             "ansible.legacy.ssh"}
LOCAL_KINDS = {"local", "ansible.builtin.local", "ansible.legacy.local"}
ALIASES = {
    "host": ("ansible_host", "ansible_ssh_host"),
    "port": ("ansible_port", "ansible_ssh_port"),
    "user": ("ansible_user", "ansible_ssh_user"),
    "key_file": ("ansible_ssh_private_key_file", "ansible_private_key_file"),
    "connection": ("ansible_connection",),
    "host_key": ("vmlab_host_key",),
}
PASSWORDS = ("ansible_password", "ansible_ssh_pass", "ansible_ssh_password")
SSH_ARGS = ("ansible_ssh_args", "ansible_ssh_common_args", "ansible_ssh_extra_args")


@dataclass(frozen=True)
class InventoryHost:
    """One selected host: where and how to connect, its groups and every variable that applies to it."""

    name: str
    host: str
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    proxy_jump: str | None = None
    proxy_command: str | None = None
    host_key: str | None = None
    connection: str = "ssh"
    groups: tuple[str, ...] = ()
    vars: Mapping[str, Any] = field(default_factory=dict)


def resolve(inv: Inventory, name: str, vault_password: bytes | None = None) -> InventoryHost:
    """The connection settings of host `name`; BadInput (one line, naming the host) if vmlab cannot honour them.

    `!vault` values are decrypted with `vault_password`; without one they are refused.
    """
    merged = {var: _open_vault(name, var, value, vault_password) for var, value in inv.vars_of(name).items()}
    values = RenderedVars(merged, MagicVars(inv, name), name)
    conn = {key: _pick(values, names, name) for key, names in ALIASES.items()}
    kind = str(conn["connection"] or "ssh")
    if kind not in SSH_KINDS | LOCAL_KINDS:
        raise BadInput(f"host {name}: ansible_connection {kind!r} is not supported by vmlab",
                       "vmlab connects over ssh or local; leave this host out with --limit '!" + name + "'")
    for var in PASSWORDS:
        if merged.get(var) is not None and kind not in LOCAL_KINDS:
            raise BadInput(f"host {name}: {var} is set, but vmlab logs in with SSH keys only",
                           "set ansible_ssh_private_key_file instead")
    for var in ("ansible_host_key_checking", "ansible_ssh_host_key_checking"):
        if var in merged and str(values[var]).lower() in ("false", "no", "0", "off"):
            raise BadInput(f"host {name}: {var}=false is refused: vmlab always checks host keys",
                           "remove it; pin a key with vmlab_host_key if the host is new each time")
    opts = SSHOptions()
    for var in SSH_ARGS:
        if merged.get(var):
            parse_ssh_args(str(values[var]), var, name, opts)
    port = _port(name, _merge_one(name, "port", conn["port"], opts.ports))
    address = str(conn["host"] or name)
    user = _merge_one(name, "user", conn["user"], opts.users)
    try:  # data: the host goes into a proxy command's words, the user into ssh's (unit files check it again)
        check_host(address, "ansible_host")
        if user is not None:
            check_login_user(user, "ansible_user")
    except BadInput as exc:
        raise BadInput(f"host {name}: {exc.message}", exc.hint) from None
    return InventoryHost(
        name=name, host=address, port=port,
        user=user,
        key_file=_merge_one(name, "key file", conn["key_file"], opts.key_files),
        proxy_jump=opts.proxy_jump, proxy_command=opts.proxy_command,
        host_key=_host_key(name, address, port, _opt(conn["host_key"]), opts),
        connection="local" if kind in LOCAL_KINDS else "ssh",
        groups=tuple(g for g in sorted(inv.groups_of(name), key=inv.precedence) if g != "all"), vars=merged)


class MagicVars(Mapping[str, Any]):
    """The variables Ansible adds for every host, as far as inventory templates use them (computed on use)."""

    NAMES = ("inventory_hostname", "inventory_hostname_short", "group_names", "groups")

    def __init__(self, inv: Inventory, host: str) -> None:
        self.inv, self.host = inv, host

    def __getitem__(self, key: str) -> Any:
        if key == "inventory_hostname":
            return self.host
        if key == "inventory_hostname_short":
            return self.host.split(".")[0]
        if key == "group_names":
            return self.inv.group_names(self.host)
        if key == "groups":
            return {g: self.inv.hosts_of(g) for g in self.inv.groups}
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:  # without computing the value
        return key in self.NAMES

    def __iter__(self) -> Iterator[str]:
        return iter(self.NAMES)

    def __len__(self) -> int:
        return len(self.NAMES)


def _pick(values: RenderedVars, names: tuple[str, ...], host: str) -> Any:
    found = [(n, values[n]) for n in names if values.raw.get(n) is not None]
    if len({str(v) for _, v in found}) > 1:
        (a, va), (b, vb) = found[0], found[1]
        raise BadInput(f"host {host}: {a}={va!r} and {b}={vb!r} disagree", f"keep only {a}")
    return found[0][1] if found else None


def _merge_one(host: str, what: str, var_value: Any, from_args: list[Any]) -> Any:
    values = {str(v) for v in from_args}
    if var_value is not None:
        values.add(str(var_value))
    if len(values) > 1:
        raise BadInput(f"host {host}: two different {what}s are set ({', '.join(sorted(values))})",
                       "keep one (in the ansible_* variable or in the ssh arguments)")
    if var_value is not None:
        return var_value
    return from_args[0] if from_args else None


def _port(host: str, value: Any) -> int:
    if value is None:
        return 22
    try:
        port = int(str(value).strip())
    except ValueError:
        raise BadInput(f"host {host}: port {value!r} is not a number", "set ansible_port: 22") from None
    if not 0 < port < 65536:
        raise BadInput(f"host {host}: port {port} is out of range (1-65535)", "set ansible_port to a real port")
    return port


def _host_key(host: str, address: str, port: int, pinned: str | None, opts: SSHOptions) -> str | None:
    """The key to pin: vmlab_host_key, or the one the ssh arguments' known_hosts files hold for the host."""
    from vmlab.transport.hostkeys import HostKey, KnownHosts

    alias = address if port == 22 else f"[{address}]:{port}"
    found = [k for f in opts.known_hosts_files for k in KnownHosts(Path(f).expanduser()).lookup(alias)]
    if pinned and found and HostKey.from_line(pinned, what=f"vmlab_host_key of {host}") not in found:
        raise BadInput(f"host {host}: vmlab_host_key differs from the key for {alias} in "
                       f"{', '.join(opts.known_hosts_files)}", "keep one of them")
    if pinned or found:
        return pinned or found[0].line()
    if opts.strict_host_keys:
        where = ", ".join(opts.known_hosts_files) or "any known_hosts file given"
        raise BadInput(f"host {host}: StrictHostKeyChecking=yes, but no key for {alias} is in {where}",
                       "add it there (ssh-keyscan) or pin it with vmlab_host_key")
    return None


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)


def _open_vault(host: str, var: str, value: Any, password: bytes | None) -> Any:
    if isinstance(value, Mapping):
        return {k: _open_vault(host, var, v, password) for k, v in value.items()}
    if isinstance(value, list):
        return [_open_vault(host, var, v, password) for v in value]
    if not isinstance(value, VaultValue):
        return value
    from vmlab.inventory.vault import VaultError, decrypt

    if password is None:
        raise BadInput(f"host {host}: variable {var} is an !vault value, and vault values need a password",
                       "give --vault-password-file FILE or set ANSIBLE_VAULT_PASSWORD_FILE")
    try:
        return Unsafe(decrypt(value, password))  # a secret is data: never rendered as a template
    except VaultError as exc:
        raise BadInput(f"host {host}: cannot decrypt variable {var}: {exc}", "check the vault password file") \
            from None


class RenderedVars(Mapping[str, Any]):
    """A host's variables where a string is rendered as a template when it is read (once, cycles refused)."""

    def __init__(self, raw: Mapping[str, Any], magic: Mapping[str, Any], host: str) -> None:
        self.raw, self.magic, self.host = raw, magic, host
        self._done: dict[str, Any] = {}
        self._busy: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        if key in self._done:
            return self._done[key]
        if key in self.magic and key not in self.raw:
            return self.magic[key]
        value = self.raw[key]
        if isinstance(value, str) and not isinstance(value, Unsafe) and ("{{" in value or "{%" in value):
            if key in self._busy:
                raise BadInput(f"host {self.host}: variable {key} refers to itself", "break the loop")
            self._busy.add(key)
            try:
                value = render(value, self, f"host {self.host}: {key}")
            finally:
                self._busy.discard(key)
        self._done[key] = value
        return value

    def __iter__(self) -> Iterator[str]:
        return iter({**self.magic, **self.raw})

    def __len__(self) -> int:
        return len({**self.magic, **self.raw})


def render(text: str, variables: RenderedVars, where: str) -> str:
    """Render `text` in Jinja's sandbox with StrictUndefined; every problem is one BadInput line."""
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
    try:
        template = env.from_string(text)
        return jinja2.utils.concat(template.root_render_func(template.new_context(_Lazy(variables), shared=True)))
    except jinja2.UndefinedError as exc:
        raise BadInput(f"{where}: {exc.message}", "define the variable in the inventory") from None
    except jinja2.TemplateSyntaxError as exc:
        raise BadInput(f"{where}: template syntax error: {exc.message}", "fix the {{ }} expression") from None
    except jinja2.exceptions.SecurityError as exc:
        raise BadInput(f"{where}: refused by the template sandbox: {exc}", "use plain variables") from None


class _Lazy(dict):  # type: ignore[type-arg]
    """Jinja reads a shared context's variables with `in` and `[]`; route both to RenderedVars."""

    def __init__(self, inner: RenderedVars) -> None:
        super().__init__()
        self.inner = inner

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (key in self.inner.raw or key in self.inner.magic)

    def __getitem__(self, key: str) -> Any:
        return self.inner[key]

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return self.inner[key] if key in self else default
