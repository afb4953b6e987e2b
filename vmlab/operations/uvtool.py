"""uv for the pip operations: where it lives on a host, the hash-pinned lock it comes from, and the install
commands that use it, or plain pip when uv cannot be had.

uv is installed once per host into `UV_DIR` (``pip install --target``, so it needs no venv of its own) from
`locks/uv.txt` (exact version, sha256 of every wheel; `--only-binary :all:`, never built from source), by the
first pip operation that wants it, with that operation's Python's pip or, where it has none (a distribution's
python3), pip run from the wheel Python ships for ensurepip. uv then also makes the operations' new venvs
(`uv venv`): without pip, as ensurepip unpacking and byte-compiling pip is most of `python -m venv`'s time; pip
is put in only if the pip fallback runs. Example of what an operation plans::

    install_commands(facts, "uv", "/opt/lab/bin/python", ("--require-hashes", "--no-deps", "-r", "/opt/lab/r.lock"))
    # uv there:     [uv pip install --python /opt/lab/bin/python --compile-bytecode ... -r ..., pip if uv fails]
    # uv missing:   [get uv from its lock (never fails)], [the same: uv if it came and works, else pip]
    venv_commands(facts, "uv", "python3", "/opt/lab")
    # uv there:     [uv venv --python python3 /opt/lab (python3 -m venv /opt/lab if uv fails)]
    # uv missing:   [get uv from its lock with python3], [the same uv venv]
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

# pip into the interpreter $py when it has none (a venv uv made), from the copy Python ships (ensurepip): only the
# pip fallback needs it
ENSURE_PIP = '"$py" -m pip --version >/dev/null 2>&1 || "$py" -m ensurepip --default-pip >/dev/null 2>&1\n'
# The pip wheel Python ships for ensurepip (CPython's own folder, or Debian's python3-pip-whl), or "": pip runs
# from it (`python WHEEL/pip`) where the interpreter has no pip, so uv can be fetched before any venv with pip
# exists (a distribution's python3 has none). No single quote in it: FETCH_UV quotes it with them.
PIP_WHEEL = """\
import glob, os, ensurepip
here = os.path.join(os.path.dirname(ensurepip.__file__), "_bundled", "pip-*.whl")
found = sorted(glob.glob(here)) + sorted(glob.glob("/usr/share/python-wheels/pip-*.whl"))
print(found[-1] if found else "")
"""
# $1 uv dir, $2 where its lock goes, $3 the interpreter whose pip (or shipped pip wheel) fetches uv, then pip
# options (index, find-links). Never fails: without uv the install falls back to pip. The lock is kept only once
# uv is in, so "lock there and same" means "this uv is installed". `--target` keeps pip out of the interpreter's
# own packages (and is allowed on an externally managed Python, PEP 668).
FETCH_UV = """\
dir=$1 lock=$2 py=$3
shift 3
whl=
"$py" -m pip --version >/dev/null 2>&1 || whl=$("$py" -c '""" + PIP_WHEEL + """' 2>/dev/null)
pip() { if [ -n "$whl" ]; then "$py" "$whl/pip" "$@"; else "$py" -m pip "$@"; fi; }
if mkdir -p "$dir" && cat > "$lock.new" && pip install --quiet --disable-pip-version-check --upgrade \\
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
""" + ENSURE_PIP + """\
exec "$py" -m pip install "$@"
"""
# $1 uv, $2 the Python to make the venv from, $3 the venv. Only the given Python (never one uv downloads or
# manages), no uv.toml or project settings; files already in the folder stay (as with `python -m venv`: the agent
# recipe puts its wheel folder there first); `python -m venv` when uv fails.
UV_VENV = """\
uv=$1 py=$2 venv=$3
if [ -x "$uv" ]; then
  "$uv" venv --quiet --allow-existing --python "$py" --no-managed-python --no-python-downloads --no-project \\
    --no-config "$venv" && exit 0
  echo "vmlab: uv venv failed (above); python -m venv makes the venv" >&2
fi
exec "$py" -m venv "$venv"
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


def fetch_command(python: str, fetch_options: tuple[str, ...] = (), uv_dir: str = UV_DIR) -> Command:
    """The command that installs uv into `uv_dir` from its lock with `python`'s pip (or the pip wheel Python
    ships); it never fails (without uv, pip installs)."""
    return sh(FETCH_UV, uv_dir, f"{uv_dir}/requirements.lock", python, *fetch_options, stdin=lock_text(),
              label=f"install uv into {uv_dir} from its lock (if it cannot be, pip installs)")


def venv_commands(facts: Facts, installer: str, python: str, venv: str, fetch_options: tuple[str, ...] = (),
                  uv_dir: str = UV_DIR) -> list[Command]:
    """The commands that make the new venv `venv` from `python`. With uv as the installer: uv itself first when
    the host lacks it (`fetch_command` with `python`), then `uv venv` (no pip in the venv; `python -m venv` if uv
    fails); else `python -m venv`."""
    if installer != "uv":
        return [Command(python, "-m", "venv", venv)]
    make = sh(UV_VENV, f"{uv_dir}/bin/uv", python, venv, label=f"uv venv {venv} from {python} (or python -m venv)")
    return [make] if uv_ready(facts, uv_dir) else [fetch_command(python, fetch_options, uv_dir), make]


def install_commands(facts: Facts, installer: str, interpreter: str, args: tuple[str, ...],
                     fetch_options: tuple[str, ...] = (), uv_dir: str = UV_DIR, *,
                     new_venv: bool = False) -> list[Command]:
    """The commands that run ``pip install ARGS`` for `interpreter` with `installer`; `fetch_options` are the
    pip options (index, find-links) used to fetch uv itself. `new_venv`: the venv was just planned with
    `venv_commands`, which fetches uv when needed."""
    if installer != "uv":
        return [Command(interpreter, "-m", "pip", "install", *args)]
    install = sh(UV_OR_PIP, interpreter, f"{uv_dir}/bin/uv", *args,
                 label=f"uv (or pip) for {interpreter}: pip install {' '.join(args)}")
    if new_venv or uv_ready(facts, uv_dir):
        return [install]
    return [fetch_command(interpreter, fetch_options, uv_dir), install]


__all__ = ["INSTALLERS", "LOCK", "UV_DIR", "check_installer", "fetch_command", "install_commands", "uv_ready",
           "venv_commands"]
