"""Where an SSH connection goes: `SSHTarget`, a plain frozen dataclass (no paramiko import here).

Kept separate from `ssh.py` so that inventories, lab records and the CLI can describe hosts without loading
paramiko (it costs ~100 ms of start-up).
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field
from pathlib import Path

from vmlab.errors import BadInput


@dataclass(frozen=True)
class SSHTarget:
    """One SSH endpoint and how to trust and reach it.

    `host_key_alias` is the name its key is recorded under in vmlab's known_hosts: a lab keyed by its instance
    id keeps its identity when a new local VM reuses the same `[127.0.0.1]:port`. `pinned_host_key` (an
    OpenSSH public key line) must match exactly and disables trust-on-first-use. `proxy_command` is an
    OpenSSH-style command (`%h`, `%p`, `%r`, `%%` are substituted) whose stdin/stdout carry the connection;
    `proxy_jump` is `[user@]host[:port]` of a bastion reached with the same key and known_hosts.

    Example::

        target = SSHTarget("203.0.113.7", user="ubuntu", key_file=Path("~/.vmlab/keys/lab").expanduser(),
                           name="lab", host_key_alias="i-0abc123")
        with SSHConnection(target) as conn:
            conn.run("nvidia-smi")
    """

    host: str
    port: int = 22
    user: str = field(default_factory=getpass.getuser)
    key_file: Path | None = None
    name: str = ""
    host_key_alias: str = ""
    pinned_host_key: str | None = None
    proxy_command: str | None = None
    proxy_jump: str | None = None
    connect_timeout: float = 10.0
    known_hosts: Path | None = None

    def __post_init__(self) -> None:
        # Frozen: fill derived defaults through object.__setattr__. Strings are accepted for paths because
        # inventories and lab records hand them over as text.
        if not self.host:
            raise BadInput("an SSH target needs a host name or address")
        try:
            port = int(self.port)
        except (TypeError, ValueError):
            raise BadInput(f"SSH port {self.port!r} of {self.host} is not a number") from None
        if not 0 < port < 65536:
            raise BadInput(f"SSH port {port} of {self.host} is out of range (1-65535)")
        object.__setattr__(self, "port", port)
        if self.key_file is not None:
            object.__setattr__(self, "key_file", Path(self.key_file).expanduser())
        if self.known_hosts is not None:
            object.__setattr__(self, "known_hosts", Path(self.known_hosts).expanduser())
        if not self.name:
            object.__setattr__(self, "name", self.host)
        if not self.host_key_alias:
            object.__setattr__(self, "host_key_alias", default_alias(self.host, port))
        if self.proxy_command and self.proxy_jump:
            raise BadInput(f"{self.name}: give proxy_command or proxy_jump, not both")
        if self.pinned_host_key is not None:
            from vmlab.transport.hostkeys import HostKey

            HostKey.from_line(self.pinned_host_key, what=f"pinned host key of {self.name}")
        if self.connect_timeout <= 0:
            raise BadInput(f"{self.name}: connect_timeout must be positive, got {self.connect_timeout}")

    @classmethod
    def parse(cls, spec: str, **fields: object) -> SSHTarget:
        """`[user@]host[:port]` (IPv6 as `[addr]:port`) plus any other field:
        `SSHTarget.parse("ubuntu@h:2222", key_file=key)`."""
        user, host, port = split_spec(spec)
        if user:
            fields.setdefault("user", user)
        if port:
            fields.setdefault("port", port)
        return cls(host, **fields)  # type: ignore[arg-type]

    def known_hosts_path(self) -> Path:
        """The known_hosts file this target trusts: its own, or vmlab's (never ~/.ssh/known_hosts)."""
        if self.known_hosts is not None:
            return self.known_hosts
        from vmlab.paths import known_hosts_file

        return known_hosts_file()

    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    def describe(self) -> str:
        """`name (user@host:port)`, or just the address when the name is the host."""
        return self.address() if self.name == self.host else f"{self.name} ({self.address()})"

    def proxy_command_argv(self) -> str | None:
        """The proxy command with `%h %p %r %%` substituted, or None."""
        if not self.proxy_command:
            return None
        subs = {"h": self.host, "p": str(self.port), "r": self.user, "%": "%"}
        out: list[str] = []
        text = self.proxy_command
        i = 0
        while i < len(text):
            if text[i] == "%" and i + 1 < len(text):
                token = text[i + 1]
                if token not in subs:
                    raise BadInput(f"{self.name}: unknown token %{token} in proxy_command {text!r}",
                                   "use %h (host), %p (port), %r (user) or %% (a literal %)")
                out.append(subs[token])
                i += 2
            else:
                out.append(text[i])
                i += 1
        return "".join(out)

    def jump_target(self) -> SSHTarget | None:
        """The bastion of `proxy_jump` as a target of its own (same key and known_hosts, TOFU-trusted)."""
        if not self.proxy_jump:
            return None
        user, host, port = split_spec(self.proxy_jump)
        return SSHTarget(host, port=port or 22, user=user or self.user, key_file=self.key_file,
                         name=f"jump host {host}", connect_timeout=self.connect_timeout,
                         known_hosts=self.known_hosts)


def default_alias(host: str, port: int) -> str:
    """The known_hosts name OpenSSH uses: `host` on port 22, `[host]:port` otherwise."""
    return host if port == 22 else f"[{host}]:{port}"


def split_spec(spec: str) -> tuple[str | None, str, int | None]:
    """`[user@]host[:port]` -> (user, host, port); `[::1]:22` style brackets for IPv6."""
    user: str | None = None
    rest = spec.strip()
    if "@" in rest:
        user, rest = rest.rsplit("@", 1)
    port: int | None = None
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        if tail.startswith(":"):
            port = _port(tail[1:], spec)
    elif rest.count(":") == 1:
        host, port_text = rest.split(":")
        port = _port(port_text, spec)
    else:
        host = rest
    if not host or user == "" or "," in spec:  # a comma: a ProxyJump chain, never one address
        raise BadInput(f"cannot read SSH address {spec!r}", "write it as [user@]host[:port]")
    return user, host, port


def _port(text: str, spec: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise BadInput(f"bad port in SSH address {spec!r}", "write it as [user@]host[:port]")
    return int(text)
