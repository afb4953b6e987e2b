"""uv for the pip operations: where it lives on a host, the hash-pinned lock it comes from, and the install
commands that use it, or plain pip when uv cannot be had.

uv is installed once per host into `UV_DIR` (``pip install --target``, so it needs no venv of its own) from
`locks/uv.txt` (exact version, sha256 of every wheel; `--only-binary :all:`, never built from source), by the
first pip operation that wants it, with that operation's interpreter. Example of what an operation plans::

    install_commands(facts, "uv", "/opt/lab/bin/python", ("--require-hashes", "--no-deps", "-r", "/opt/lab/r.lock"))
    # uv there:     [uv pip install --python /opt/lab/bin/python --compile-bytecode ... -r ..., pip if uv fails]
    # uv missing:   [get uv from its lock (never fails)], [the same: uv if it came and works, else pip]
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from vmlab.engine.command import Command, sh
from vmlab.engine.facts import Facts, FileStat
from vmlab.errors import BadInput
from vmlab.operations._write import is_pending

INSTALLERS = ("uv", "pip")
UV_DIR = "/opt/vmlab/uv"
#: uv's own lock (made by scripts/lock.sh from locks/uv.in)
LOCK = Path(__file__).resolve().parent / "locks" / "uv.txt"

# $1 uv dir, $2 where its lock goes, $3 the interpreter whose pip fetches uv, then pip options (index, find-links).
# Never fails: without uv the install falls back to pip. The lock is kept only once uv is in, so "lock there and
# same" means "this uv is installed".
FETCH_UV = """\
dir=$1 lock=$2 py=$3
shift 3
if mkdir -p "$dir" && cat > "$lock.new" && "$py" -m pip install --quiet --disable-pip-version-check --upgrade \\
    --target "$dir" --only-binary :all: --require-hashes --no-deps "$@" -r "$lock.new"; then
  mv -f "$lock.new" "$lock"
else
  rm -f "$lock.new" "$lock" "$dir/bin/uv"  # an older uv left here must not run in place of pip
  echo "vmlab: uv could not be installed from its lock; plain pip installs instead" >&2
fi
"""
# $1 interpreter, $2 uv, then the install arguments (pip's, which uv's `pip install` takes too). uv byte-compiles
# like pip does (the lab user cannot write .pyc files into a root-owned venv, so without them every start would
# compile again) and trusts the host's certificate store, as pip does through /etc/pip.conf. When uv fails
# (an index only pip knows of, from /etc/pip.conf; a proxy uv cannot pass), pip tries the same install: a real
# error (a hash that does not match) fails there too.
UV_OR_PIP = """\
py=$1 uv=$2
shift 2
if [ -x "$uv" ]; then
  "$uv" pip install --python "$py" --compile-bytecode --system-certs "$@" && exit 0
  echo "vmlab: uv pip install failed (above); plain pip tries the same install" >&2
fi
exec "$py" -m pip install "$@"
"""


def check_installer(op: object, installer: str) -> None:
    if is_pending(installer) or installer in INSTALLERS:
        return
    raise BadInput(f"{type(op).__name__}: installer {installer!r} is not uv or pip",
                   "use installer='uv' (pip when uv cannot be installed) or installer='pip'")


@functools.cache
def lock_text() -> bytes:
    return LOCK.read_bytes()


def uv_ready(facts: Facts, uv_dir: str) -> bool:
    """Whether uv from the current lock is installed in `uv_dir`."""
    uv = facts.get(FileStat(f"{uv_dir}/bin/uv"))
    lock = facts.get(FileStat(f"{uv_dir}/requirements.lock"))
    return (uv is not None and uv.kind == "file" and lock is not None
            and lock.sha256 == hashlib.sha256(lock_text()).hexdigest())


def install_commands(facts: Facts, installer: str, interpreter: str, args: tuple[str, ...],
                     fetch_options: tuple[str, ...] = (), uv_dir: str = UV_DIR) -> list[Command]:
    """The commands that run ``pip install ARGS`` for `interpreter` with `installer`; `fetch_options` are the
    pip options (index, find-links) used to fetch uv itself."""
    if installer != "uv":
        return [Command(interpreter, "-m", "pip", "install", *args)]
    uv = f"{uv_dir}/bin/uv"
    install = sh(UV_OR_PIP, interpreter, uv, *args,
                 label=f"uv (or pip) for {interpreter}: pip install {' '.join(args)}")
    if uv_ready(facts, uv_dir):
        return [install]
    return [sh(FETCH_UV, uv_dir, f"{uv_dir}/requirements.lock", interpreter, *fetch_options, stdin=lock_text(),
               label=f"install uv into {uv_dir} from its lock (if it cannot be, pip installs)"), install]


__all__ = ["INSTALLERS", "LOCK", "UV_DIR", "check_installer", "install_commands", "uv_ready"]
