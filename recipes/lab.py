"""The default lab: base system, CUDA when the lab will have a GPU, Miniforge, JupyterLab and the vmlab agent.

`vmlab bake` uses this recipe when none is given; `vmlab up` then writes a fresh token into a root-only file
(`/etc/vmlab/jupyter.env`, never baked) and starts JupyterLab on the VM's 127.0.0.1:8888. Reach it with
`vmlab tunnel`.

    vmlab bake recipes/lab.py --provider local                 # Debian 12 in QEMU: no CUDA
    vmlab bake recipes/lab.py --provider ec2 --base ubuntu-24.04 --builder-type t3.large   # CUDA, no GPU needed
    vmlab bake recipes/lab.py -e conda=false -e agent=false    # JupyterLab in a plain venv, nothing else

Switches (each part's own variables are in its file: base.py, cuda.py, conda.py, jupyterlab.py, agent.py):
- `cuda`: "auto" (default) installs the NVIDIA driver and toolkit on EC2 (a lab image there is meant for GPU
  instances, and the builder may be a CPU one) and on any host with an NVIDIA GPU; true always; false never.
  In a container (cuda.py installs the toolkit only there) "auto" goes by a GPU on the machine alone: a
  container image is not meant for the cloud it was baked on.
- `conda` (true): Miniforge with the environments of environment.yml (each a kernel); JupyterLab goes into its
  own venv made from the conda Python (never into the conda base); false: that venv from the system Python.
- `agent` (true): the on-VM agent (bucket sync of ~/data, idle stop).
"""

from agent import recipe as agent  # the recipes next to this file (the loader puts their folder on sys.path)
from base import recipe as base
from conda import recipe as conda
from cuda import recipe as cuda
from jupyterlab import recipe as jupyterlab

from vmlab.engine import Recipe
from vmlab.engine.facts import Container
from vmlab.errors import BadInput
from vmlab.operations.nvidia import Cloud, NvidiaGpus

recipe = Recipe("lab", become=True, vars={"cuda": "auto", "conda": True, "agent": True})


@recipe.check
def _switches(v):
    if v["cuda"] not in (True, False, "auto"):
        raise BadInput(f"cuda {v['cuda']!r} is not auto, true or false", "use -e cuda=auto (or true, or false)")
    for name in ("conda", "agent"):
        if not isinstance(v[name], bool):
            raise BadInput(f"{name} {v[name]!r} is not true or false", f"use -e {name}=true or -e {name}=false")


def wants_cuda(ctx):
    if ctx.vars["cuda"] == "auto":
        gpu_here = ctx.facts.get(NvidiaGpus()) > 0
        return gpu_here if ctx.facts.get(Container()) else ctx.facts.get(Cloud()) == "ec2" or gpu_here
    return ctx.vars["cuda"] is True


recipe.include(base)
recipe.include(cuda, when=wants_cuda)
recipe.include(conda, when="conda")
recipe.include(jupyterlab)
recipe.include(agent, when="agent")
