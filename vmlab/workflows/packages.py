"""What an image holds: the list of its Debian, Python and conda packages with versions, taken on the builder.

`vmlab bake` collects it after the recipe ran (before the scrub and the secret scan, since listing runs each
environment's python as root), writes it into the image (`/usr/share/vmlab/packages.json`, so a
lab made from a shared image still carries it), tags the image with a summary and the list's sha256, and keeps a
copy in the cache folder for `vmlab images show`::

    manifest = take(conn)     # collect(conn) then write_into(conn, ...): {"apt": {name: version}, "python": ...}
    tags = summary_tags(manifest)          # {"vmlab:packages": "apt 412, python 153, conda 210", ...}
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from vmlab import paths
from vmlab.engine.command import Command
from vmlab.engine.host import Host
from vmlab.errors import HostError

#: where the list lives inside every image vmlab bakes
IMAGE_FILE = "/usr/share/vmlab/packages.json"
SECTIONS = ("apt", "python", "conda")

# Runs on the builder with its python3, given the folders to look in (/opt). Python environments: every
# FOLDER/*/bin/python (venvs, the conda base) and conda's named environments; conda packages are read from
# conda-meta (no slow `conda list`).
COLLECT_SCRIPT = r"""
import glob, json, os, subprocess, sys
def run(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=300).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
out = {"apt": {}, "python": {}, "conda": {}}
for line in run(["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${db:Status-Abbrev}\n"]).splitlines():
    parts = line.split("\t")
    if len(parts) == 3 and parts[2].startswith("ii"):
        out["apt"][parts[0]] = parts[1]
LIST = ("import json, importlib.metadata as m; "
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions() if d.metadata['Name']}))")
found = set()
for root in sys.argv[1:]:
    found.update(glob.glob(root + "/*/bin/python") + glob.glob(root + "/*/envs/*/bin/python"))
for py in sorted(found):
    prefix = os.path.dirname(os.path.dirname(py))
    try:
        out["python"][prefix] = json.loads(run([py, "-c", LIST]) or "{}")
    except ValueError:
        pass
    meta = os.path.join(prefix, "conda-meta")
    if os.path.isdir(meta):
        pkgs = {}
        for f in sorted(glob.glob(os.path.join(meta, "*.json"))):
            try:
                with open(f) as fh:
                    d = json.load(fh)
                pkgs[d["name"]] = "%s=%s" % (d["version"], d.get("build", ""))
            except (OSError, ValueError, KeyError):
                pass
        out["conda"][prefix] = pkgs
print(json.dumps(out, sort_keys=True))
"""


def collect(host: Host, roots: tuple[str, ...] = ("/opt",)) -> dict[str, Any]:
    """The builder's package list (Python environments found under `roots`); HostError when it cannot be read."""
    result = host.execute(Command("python3", "-", *roots, stdin=COLLECT_SCRIPT.encode(),
                                  label="list installed packages"), sudo=True)
    try:
        manifest = json.loads(result.stdout) if result.rc == 0 else None
    except ValueError:
        manifest = None
    if not isinstance(manifest, dict) or set(manifest) != set(SECTIONS):
        last = (result.stderr.strip().splitlines() or [""])[-1]
        raise HostError(f"could not list the builder's packages (exit {result.rc}): {last}",
                        "the builder needs python3 and dpkg")
    return manifest


def take(host: Host) -> dict[str, Any]:
    """Collect the builder's package list and write it into its disk (so into the image); returns the list."""
    manifest = collect(host)
    write_into(host, manifest)
    return manifest


def encode(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()


def write_into(host: Host, manifest: dict[str, Any]) -> None:
    """Write the list into the builder's disk (so into the image), world-readable."""
    command = Command("sh", "-c", 'mkdir -p -m 0755 "$(dirname "$1")" && cat > "$1" && chmod 0644 "$1"', "sh",
                      IMAGE_FILE, stdin=encode(manifest), label=f"write {IMAGE_FILE}")
    result = host.execute(command, sudo=True)
    if result.rc != 0:
        raise HostError(f"could not write {IMAGE_FILE} on the builder: {result.stderr.strip()[-200:]}")


def counts(manifest: dict[str, Any]) -> dict[str, int]:
    """Packages per section, Python and conda environments added up."""
    return {"apt": len(manifest.get("apt", {})),
            **{s: sum(len(v) for v in manifest.get(s, {}).values()) for s in ("python", "conda")}}


def summary_tags(manifest: dict[str, Any]) -> dict[str, str]:
    """Image tags: a one-line count and the sha256 of the list as written into the image."""
    summary = ", ".join(f"{k} {v}" for k, v in counts(manifest).items())
    return {"vmlab:packages": summary, "vmlab:packages-sha256": hashlib.sha256(encode(manifest)).hexdigest()}


def _local(image_id: str) -> Any:
    return paths.cache_dir() / "packages" / f"{image_id.replace('/', '_')}.json"


def save_local(image_id: str, manifest: dict[str, Any]) -> None:
    path = _local(image_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(manifest))


def load_local(image_id: str) -> dict[str, Any] | None:
    """The list kept when this machine baked the image, or None."""
    try:
        data = json.loads(_local(image_id).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


__all__ = ["IMAGE_FILE", "collect", "counts", "load_local", "save_local", "summary_tags", "take", "write_into"]
