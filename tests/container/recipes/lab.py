"""The smallest lab image for the container lab tests: JupyterLab (locked, in its venv) and the vmlab agent on the
Debian base, no conda, no CUDA. `vmlab up --provider container` runs `vmlab-agent run --jupyter` from it.
The repository's recipes/ must be on sys.path (conftest's lab_image puts it there, as tests/e2e does)."""

from agent import recipe as agent
from jupyterlab import recipe as jupyterlab

from vmlab.engine import Recipe

recipe = Recipe("ctr-lab", become=True)
recipe.include(jupyterlab)
recipe.include(agent)
