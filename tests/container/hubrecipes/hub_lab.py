"""The lab image of the container lab tests (recipes/lab.py's small sibling: JupyterLab and the vmlab agent) plus
JupyterHub's single-user server at the hub's own version (`-e jupyterhub_spec=jupyterhub==X`) in its Jupyter venv:
what `vmlab.hub.LabSpawner` runs on the container provider. Baked on the lab image (conftest's hub_lab_image), so
only this step runs."""

from vmlab.engine import Recipe
from vmlab.operations import pip

recipe = Recipe("ctr-hub-lab", become=True, vars={"jupyterhub_spec": "jupyterhub>=5,<6"})
# (pip trusts the host's CA bundle: the container provider mounts it into builders, never into the image)
recipe.step("jupyterhub-singleuser", pip.Packages(("{{ jupyterhub_spec }}",), venv="/opt/jupyter"))
