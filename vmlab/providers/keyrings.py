"""An archive keyring that this machine has no package for (Ubuntu's, on Debian), fetched from the archive itself.

The trust anchor is the sha256 pinned in vmlab's code, never the download: the keyring's .deb is fetched from
the mirror (plain http is fine), kept in the cache, and checked against its pin before each use; a package that
does not match is removed and refused. Only then is the keyring file taken out of it (`dpkg-deb`, which reads
Ubuntu's zstd-compressed packages).

Example::

    keys = PinnedKeyring("pool/main/u/ubuntu-keyring/ubuntu-keyring_2023.11.28.1_all.deb", "36de43...",
                         "usr/share/keyrings/ubuntu-archive-keyring.gpg")
    path = keys.fetch("http://archive.ubuntu.com/ubuntu", cache / "keyrings")   # .../ubuntu-archive-keyring.gpg
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from vmlab.errors import HostError

#: a keyring package is a few kilobytes; anything much larger is not one
MAX_BYTES = 1024**2
TIMEOUT = 60.0


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class PinnedKeyring:
    """The keyring file `member` of the package at `pool_path` (relative to a mirror), whose sha256 must be
    `sha256`."""

    pool_path: str
    sha256: str
    member: str

    def fetch(self, mirror_url: str, folder: Path) -> Path:
        """The keyring file, taken from the package (downloaded into `folder` first unless a copy matching the
        pin is there). HostError when the download fails or does not match the pin."""
        deb = folder / Path(self.pool_path).name
        if not (deb.is_file() and sha256_file(deb) == self.sha256):
            self._download(f"{mirror_url.rstrip('/')}/{self.pool_path}", deb)
        return self._extract(deb, folder / Path(self.pool_path).stem)

    def _download(self, url: str, deb: Path) -> None:
        deb.parent.mkdir(parents=True, exist_ok=True)
        # a new file of its own (O_EXCL: never a symlink left there, never another build's download)
        fd, name = tempfile.mkstemp(dir=deb.parent, prefix=deb.name + ".", suffix=".part")
        partial = Path(name)
        try:
            with open(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT) as answer:  # noqa: S310
                out.write(answer.read(MAX_BYTES + 1))  # (the pin checks what came)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise HostError(f"downloading {url} failed: {exc}", "check the mirror can be reached") from exc
        got = sha256_file(partial)
        if got != self.sha256:
            partial.unlink()
            raise HostError(f"{url} has sha256 {got}, not the {self.sha256} vmlab pins: refusing it as a keyring",
                            "use a mirror that serves the genuine package")
        partial.rename(deb)

    def _extract(self, deb: Path, into: Path) -> Path:
        """`member` of `deb` copied to `into/`; the package is checked against the pin again just before."""
        if sha256_file(deb) != self.sha256:
            raise HostError(f"{deb} changed after it was checked", "remove it and try again")
        into.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=into) as tmp:
            proc = subprocess.run(["dpkg-deb", "-x", str(deb), tmp], capture_output=True, text=True, check=False)
            source = Path(tmp) / self.member
            if proc.returncode != 0 or not source.is_file():
                raise HostError(f"{deb.name} has no {self.member}: {proc.stderr.strip()[-200:]}")
            target = into / source.name
            shutil.copyfile(source, target)
        return target
