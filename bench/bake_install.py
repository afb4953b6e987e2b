"""Benchmark: installing the JupyterLab lock into a fresh venv with pip vs uv, the way vmlab's pip.Locked does.

    .venv/bin/python bench/bake_install.py                # 1 run each
    .venv/bin/python bench/bake_install.py --runs 2 --lock recipes/locks/agent.txt

Both installers read the same local wheelhouse (filled once from PyPI by `pip download`, the lock's hashes
checked; kept in /tmp/vmlab-bench-wheels, `--wheelhouse` to move it) with `--no-index --find-links`, so no
network is timed; each run starts from a cold tool cache (pip `--no-cache-dir`, uv a new `--cache-dir`). The
commands are vmlab's: `VENV/bin/python -m pip install --require-hashes --no-deps -r LOCK` (pip byte-compiles)
and `uv pip install --python VENV/bin/python --compile-bytecode --require-hashes --no-deps -r LOCK`, uv being the
version vmlab pins (vmlab/operations/locks/uv.txt). Venv creation (`python -m venv`, the same for both) is timed
apart. Prints the times and the uv/pip ratio; writes bench/results/bake_install.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UV_LOCK = ROOT / "vmlab" / "operations" / "locks" / "uv.txt"


def run(argv: list[str], **kw: object) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    took = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(argv)}\n{done.stderr[-2000:]}")
    return took


def fill_wheelhouse(lock: Path, wheelhouse: Path) -> None:
    wheelhouse.mkdir(parents=True, exist_ok=True)
    for requirements in (lock, UV_LOCK):
        run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
             "--only-binary", ":all:", "--require-hashes", "-r", str(requirements), "-d", str(wheelhouse)],
            timeout=1800)


def one(tool: str, lock: Path, wheelhouse: Path, work: Path, uv: Path) -> dict[str, float]:
    venv = work / f"venv-{tool}"
    shutil.rmtree(venv, ignore_errors=True)
    made = run([sys.executable, "-m", "venv", str(venv)], timeout=600)
    python = str(venv / "bin" / "python")
    where = ["--no-index", "--find-links", str(wheelhouse), "--require-hashes", "--no-deps", "-r", str(lock)]
    if tool == "pip":
        took = run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-cache-dir", *where],
                   timeout=1800)
    else:
        cache = work / "uv-cache"
        shutil.rmtree(cache, ignore_errors=True)
        compile_ = ["--compile-bytecode"] if tool == "uv" else []
        took = run([str(uv), "pip", "install", "-q", "--python", python, *compile_, "--cache-dir", str(cache), *where],
                   timeout=1800)
    shutil.rmtree(venv, ignore_errors=True)
    return {"venv": made, "install": took}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lock", type=Path, default=ROOT / "recipes" / "locks" / "jupyterlab.txt")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--wheelhouse", type=Path, default=Path("/tmp/vmlab-bench-wheels"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "bake_install.json")
    args = ap.parse_args()
    fill_wheelhouse(args.lock, args.wheelhouse)
    with tempfile.TemporaryDirectory(prefix="vmlab-bench-install-") as tmp:
        work = Path(tmp)
        # uv as vmlab installs it on a host: pip --target from its lock (here from the wheelhouse)
        run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--target",
             str(work / "uvtool"), "--no-index", "--find-links", str(args.wheelhouse), "--only-binary", ":all:",
             "--require-hashes", "--no-deps", "-r", str(UV_LOCK)], timeout=600)
        uv = work / "uvtool" / "bin" / "uv"
        # uv-nocompile: uv without byte-compiling, to show what the .pyc files cost (vmlab keeps them: see uvtool)
        times: dict[str, list[dict[str, float]]] = {"pip": [], "uv": [], "uv-nocompile": []}
        for _ in range(args.runs):
            for tool in times:  # alternating, so a load change hits all
                times[tool].append(one(tool, args.lock, args.wheelhouse, work, uv))
                print(f"{tool}: install {times[tool][-1]['install']:.1f} s (venv {times[tool][-1]['venv']:.1f} s)",
                      flush=True)
        version = subprocess.run([str(uv), "--version"], capture_output=True, text=True).stdout.strip()
    median = {tool: statistics.median(t["install"] for t in runs) for tool, runs in times.items()}
    venv = statistics.median(t["venv"] for runs in times.values() for t in runs)
    packages = sum(1 for line in args.lock.read_text().splitlines() if "==" in line and not line.startswith("#"))
    ratio = median["uv"] / median["pip"]
    print(f"{args.lock.name} ({packages} pinned entries), median of {args.runs}: pip {median['pip']:.1f} s, "
          f"uv {median['uv']:.1f} s -> uv/pip = {ratio:.2f}x (venv creation {venv:.1f} s, not included; "
          f"uv without byte-compiling {median['uv-nocompile']:.1f} s)")
    pip_version = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True)
    result = {"lock": str(args.lock.relative_to(ROOT)), "runs": args.runs, "times": times, "median": median,
              "ratio_uv_over_pip": round(ratio, 3), "venv_median": venv, "uv": version,
              "pip": pip_version.stdout.split(" from ")[0], "python": platform.python_version(),
              "cache": "cold tool caches, local wheelhouse (--no-index --find-links)",
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
