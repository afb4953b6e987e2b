"""The smallest lab image for the container lab tests: JupyterLab (locked, in its venv) and the vmlab agent on the
Debian base, no conda, no CUDA. `vmlab up --provider container` runs `vmlab-agent run --jupyter` from it."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "recipes"))  # the repository's recipes

from agent import recipe as agent  # noqa: E402
from jupyterlab import recipe as jupyterlab  # noqa: E402

from vmlab.engine import Recipe  # noqa: E402

recipe = Recipe("ctr-lab", become=True)
recipe.include(jupyterlab)
recipe.include(agent)
