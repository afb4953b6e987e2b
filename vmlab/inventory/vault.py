"""Decrypt `!vault` values written by `ansible-vault encrypt_string` (format 1.1/1.2, AES256).

The envelope is `$ANSIBLE_VAULT;1.1;AES256` (or `1.2;AES256;LABEL`) and hex lines; inside, three hex fields:
salt, HMAC and ciphertext. PBKDF2-HMAC-SHA256 (10,000 rounds) of the password and salt gives 80 bytes: the
AES-256-CTR key, the HMAC-SHA256 key and the counter's initial block. The HMAC is checked before decrypting.

    >>> decrypt(VaultValue(encrypted_text), b"password")   # doctest: +SKIP
    'the secret'
"""

from __future__ import annotations

import binascii
import hmac
import os
from pathlib import Path

from vmlab.errors import BadInput

ROUNDS = 10_000


class VaultError(ValueError):
    """The text is not an ansible-vault value, or the password does not open it."""


def decrypt(text: str, password: bytes) -> str:
    """The plaintext of one vault value; VaultError if malformed or the password is wrong."""
    from cryptography.hazmat.primitives import hashes, padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

    lines = text.strip().splitlines()
    header = lines[0].strip().split(";") if lines else []
    if len(header) < 3 or header[0] != "$ANSIBLE_VAULT" or header[1] not in ("1.1", "1.2") \
            or header[2].strip() != "AES256":
        raise VaultError("not an ansible-vault 1.1/1.2 AES256 value")
    try:
        fields = binascii.unhexlify("".join(line.strip() for line in lines[1:])).decode("ascii").split("\n")
        salt, mac, ciphertext = (binascii.unhexlify(f) for f in fields[:3])
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise VaultError("the vault value is damaged (not the hex ansible-vault writes)") from None
    material = PBKDF2HMAC(algorithm=hashes.SHA256(), length=80, salt=salt, iterations=ROUNDS).derive(password)
    key, mac_key, counter = material[:32], material[32:64], material[64:]
    if not hmac.compare_digest(hmac.new(mac_key, ciphertext, "sha256").digest(), mac):
        raise VaultError("the vault password does not open it")
    decryptor = Cipher(algorithms.AES(key), modes.CTR(counter)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return (unpadder.update(padded) + unpadder.finalize()).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise VaultError("the decrypted value is damaged") from None


def read_password_file(path: str | None) -> bytes | None:
    """The vault password from `path` (or ANSIBLE_VAULT_PASSWORD_FILE), trailing whitespace removed."""
    path = path or os.environ.get("ANSIBLE_VAULT_PASSWORD_FILE") or None
    if path is None:
        return None
    p = Path(path).expanduser()
    if p.is_file() and os.access(p, os.X_OK):
        raise BadInput(f"{path}: vault password scripts are not run by vmlab",
                       "give a file holding the password (chmod 600, not executable)")
    try:
        return p.read_bytes().strip()
    except OSError as exc:
        raise BadInput(f"{path}: cannot read the vault password file ({exc.strerror})",
                       "give the path of a file holding the vault password") from None
