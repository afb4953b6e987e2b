"""SSH key pairs vmlab makes: a client key per lab or bake, and a host key it installs and then pins."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class KeyPair:
    """An ed25519 key pair in OpenSSH formats: `private` (PEM-like text) and `public` ("ssh-ed25519 AAAA... c")."""

    private: str = field(repr=False)
    public: str

    def save(self, path: Path) -> Path:
        """Write the private key 0600 (created with that mode, never world-readable for an instant)."""
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.private)
        os.chmod(path, 0o600)
        path.with_name(path.name + ".pub").write_text(self.public + "\n")
        return path


def generate(comment: str = "vmlab") -> KeyPair:
    """A fresh ed25519 key pair."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return KeyPair(private=private, public=f"{public} {comment}")


def remove(path: Path) -> None:
    """Delete a saved key pair (both files); missing files are fine."""
    for p in (path, path.with_name(path.name + ".pub")):
        p.unlink(missing_ok=True)
