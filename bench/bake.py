"""Benchmark: baking the e2e lab recipe on the local QEMU VM with pip and with uv, and in a container, one run.

    .venv/bin/python bench/bake.py                         # qemu-pip, qemu-uv, container (uv)
    .venv/bin/python bench/bake.py --only qemu-uv,container

Each variant is one `vmlab bake tests/e2e/recipes/e2e_lab.py --force --json` through the real CLI, with its own
state dir and the shared cache of base images (`--cache`, default the test suite's /var/tmp/vmlab-test-cache, so a
base built once is reused; building it is not timed). The image each bake makes is deleted afterwards. Reported:
the bake's wall time and phases (builder start, recipe, scrub, image), the recipe's ten slowest steps, and the
ratios issues #17 and #15 ask for: the recipe's time with uv over pip on the QEMU VM (target <= 0.5x) and the
container bake over the QEMU bake with the same installer (target <= 0.2x); and for the container image,
`vmlab up` to JupyterLab answering, three times (target <= 5 s). Both installers download from PyPI (the
lock's hashes checked); apt from Debian's mirror. Results go to bench/results/bake.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "tests" / "e2e" / "recipes" / "e2e_lab.py"
RESULTS = REPO / "bench" / "results" / "bake.json"
VARIANTS = {  # name -> (provider, installer)
    "qemu-pip": ("local", "pip"),
    "qemu-uv": ("local", "uv"),
    "container": ("container", "uv"),
}


def vmlab(env: dict[str, str], *args: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "vmlab", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        sys.exit(f"vmlab {' '.join(args)} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return done


def bake(name: str, cache: Path) -> dict[str, Any]:
    provider, installer = VARIANTS[name]
    state = Path(tempfile.mkdtemp(prefix=f"vmlab-bench-bake-{name}-"))
    env = {**os.environ, "VMLAB_STATE_DIR": str(state), "VMLAB_CACHE_DIR": str(cache), "NO_COLOR": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "recipes"), str(REPO)])}
    if provider == "local":
        vmlab(env, "local", "init")  # the base image, built once per cache; not timed
    print(f"{name}: baking ({provider}, installer={installer})", flush=True)
    t0 = time.monotonic()
    done = vmlab(env, "bake", str(RECIPE), "--provider", provider, "--force", "--json", "-e", f"installer={installer}")
    wall = time.monotonic() - t0
    result = json.loads(done.stdout)
    ups = container_ups(env, result["image"]) if provider == "container" else []
    vmlab(env, "images", "rm", result["image"], "--provider", provider)
    steps = result["runs"][0]["steps"]
    recipe_s = result["runs"][0]["elapsed"]  # the steps and the fact reads between them
    slowest = sorted(steps, key=lambda step: -step["elapsed"])[:10]
    print(f"{name}: wall {wall:.0f} s, recipe {recipe_s:.0f} s, phases {result['timings']}", flush=True)
    return {"provider": provider, "installer": installer, "wall_s": round(wall, 1), "recipe_s": round(recipe_s, 1),
            "timings": result["timings"], "size_bytes": result.get("size_bytes"), "up_s": ups,
            "slowest_steps": [{"step": s["name"], "seconds": round(s["elapsed"], 1), "status": s["status"]}
                              for s in slowest]}


def container_ups(env: dict[str, str], image: str, rounds: int = 3) -> list[float]:
    """`vmlab up` of a lab container from the image just baked, until JupyterLab answers with its fresh token (what
    `up` waits for), then `down`; `rounds` times. Seconds of each `up`."""
    times = []
    for i in range(rounds):
        name = f"bench-up-{os.getpid()}-{i}"
        t0 = time.monotonic()
        vmlab(env, "up", name, "--provider", "container", "--image", image, "--json", timeout=600)
        times.append(round(time.monotonic() - t0, 2))
        vmlab(env, "down", name, "--provider", "container", "--force", timeout=600)
    print(f"container up to JupyterLab answering: {times} s", flush=True)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(VARIANTS), help="comma-separated variants, in this order")
    parser.add_argument("--cache", type=Path,
                        default=Path(os.environ.get("VMLAB_TEST_CACHE", "/var/tmp/vmlab-test-cache")))
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant {unknown[0]}: choose from {', '.join(VARIANTS)}")
    args.cache.mkdir(parents=True, exist_ok=True)
    runs = {name: bake(name, args.cache) for name in names}
    ratios = {}
    if {"qemu-pip", "qemu-uv"} <= runs.keys():
        ratios["recipe_uv_over_pip_qemu"] = round(runs["qemu-uv"]["recipe_s"] / runs["qemu-pip"]["recipe_s"], 3)
    if {"qemu-uv", "container"} <= runs.keys():
        ratios["bake_container_over_qemu"] = round(runs["container"]["wall_s"] / runs["qemu-uv"]["wall_s"], 3)
    print()
    for name, run in runs.items():
        print(f"{name:10} wall {run['wall_s']:7.1f} s  recipe {run['recipe_s']:7.1f} s  {run['timings']}")
        for step in run["slowest_steps"]:
            print(f"    {step['seconds']:7.1f} s  {step['step']}")
    targets = {"recipe_uv_over_pip_qemu": 0.5, "bake_container_over_qemu": 0.2}
    for key, value in ratios.items():
        print(f"{key}: {value}x (target <= {targets[key]}x): {'pass' if value <= targets[key] else 'FAIL'}")
    if runs.get("container", {}).get("up_s"):
        slowest_up = max(runs["container"]["up_s"])
        print(f"container up to JupyterLab answering, slowest of {len(runs['container']['up_s'])}: {slowest_up} s "
              f"(target <= 5 s): {'pass' if slowest_up <= 5 else 'FAIL'}")
    if not args.no_save:
        RESULTS.write_text(json.dumps({"runs": runs, "ratios": ratios, "python": platform.python_version(),
                                       "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                       "load_average": os.getloadavg()}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
