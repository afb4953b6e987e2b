"""The end state every tool in the no-op benchmark must leave behind, checked on disk, and the wheel its pip
step installs.

The target is this machine (the sshd listens on 127.0.0.1), so `verify` reads the files directly instead of
trusting any tool's report. Example::

    build_wheel(Path("/tmp/wheels"))
    problems = verify(Path("/tmp/target-vmlab"))   # [] when the state is exactly right
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import zipfile
from pathlib import Path

PEERS = Path(__file__).resolve().parent / "peers"

TEMPLATE_VALUES = {"app_name": "benchapp", "app_port": 8099, "workers": 4, "greeting": "Hello"}
DIRS = {"app": "0755", "app/conf": "0755", "app/data": "0750", "app/logs": "0755", "app/bin": "0755",
        "app/www": "0755"}
FILES = {  # destination -> (source in bench/peers/files, mode)
    "app/README.txt": ("README.txt", "0644"),
    "app/conf/logging.ini": ("logging.ini", "0644"),
    "app/conf/hosts.allow": ("hosts.allow", "0640"),
    "app/requirements.txt": ("requirements.txt", "0644"),
    "app/www/index.html": ("index.html", "0644"),
}
TEMPLATES = {  # destination -> (template in bench/peers/templates, mode)
    "app/conf/app.conf": ("app.conf.j2", "0644"),
    "app/conf/site.conf": ("site.conf.j2", "0644"),
    "app/bin/env.sh": ("env.sh.j2", "0755"),
    "app/motd": ("motd.j2", "0644"),
}
WHEEL_NAME = "vmlab_bench_pkg"
WHEEL_VERSION = "1.0"


def render_template(name: str, root: Path) -> bytes:
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    text = (PEERS / "templates" / name).read_text()
    return env.from_string(text).render(root=str(root), **TEMPLATE_VALUES).encode()


def expected_files(root: Path) -> dict[str, tuple[bytes, str]]:
    """Relative path -> (exact bytes, mode) for every file the recipe manages."""
    out = {dest: ((PEERS / "files" / src).read_bytes(), mode) for dest, (src, mode) in FILES.items()}
    out.update({dest: (render_template(src, root), mode) for dest, (src, mode) in TEMPLATES.items()})
    out["app/conf/settings.ini"] = (b"debug = false\n", "0644")
    out["app/data/stamp"] = (b"built\n", "0644")
    out["app/logs/init.log"] = (b"initialised\n", "0644")  # exactly once: the `unless` guard held
    out["app/data/app.conf.orig"] = (render_template("app.conf.j2", root), "0644")
    return out


def verify(root: Path) -> list[str]:
    """Problems with the end state under `root` (the target is this machine, so it is read directly)."""
    problems: list[str] = []
    for rel, mode in DIRS.items():
        p = root / rel
        if not p.is_dir():
            problems.append(f"{rel}: missing directory")
        elif f"{p.stat().st_mode & 0o7777:04o}" != mode:
            problems.append(f"{rel}: mode {p.stat().st_mode & 0o7777:04o}, expected {mode}")
    for rel, (data, mode) in expected_files(root).items():
        p = root / rel
        if not p.is_file():
            problems.append(f"{rel}: missing file")
            continue
        if p.read_bytes() != data:
            problems.append(f"{rel}: content differs ({p.stat().st_size} bytes, expected {len(data)})")
        if f"{p.stat().st_mode & 0o7777:04o}" != mode:
            problems.append(f"{rel}: mode {p.stat().st_mode & 0o7777:04o}, expected {mode}")
    py = root / "venv" / "bin" / "python"
    if not py.exists():
        problems.append("venv: no venv/bin/python")
    else:
        r = subprocess.run([str(py), "-c", f"import {WHEEL_NAME}; print({WHEEL_NAME}.__version__)"],
                           capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
        if r.stdout.strip() != WHEEL_VERSION:
            problems.append(f"venv: {WHEEL_NAME} not importable at {WHEEL_VERSION} ({r.stderr.strip()[-200:]})")
    return problems


def build_wheel(directory: Path) -> Path:
    """A minimal pure-Python wheel written by hand (no build backend, no network)."""
    directory.mkdir(parents=True, exist_ok=True)
    dist = f"{WHEEL_NAME}-{WHEEL_VERSION}"
    members = {
        f"{WHEEL_NAME}/__init__.py": f'__version__ = "{WHEEL_VERSION}"\n'.encode(),
        f"{dist}.dist-info/METADATA": (f"Metadata-Version: 2.1\nName: vmlab-bench-pkg\nVersion: {WHEEL_VERSION}\n"
                                       "Summary: a tiny package for vmlab's provisioning benchmark\n").encode(),
        f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: vmlab-bench\nRoot-Is-Purelib: true\n"
                                   b"Tag: py3-none-any\n",
    }
    record = []
    for name, data in members.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist}.dist-info/RECORD,,")
    members[f"{dist}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    path = directory / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path
