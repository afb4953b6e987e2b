"""The smallest image a hub can spawn: a non-root user with a home and `~/data`, and a venv with
`jupyterhub-singleuser` at the hub's own JupyterHub version (`-e jupyterhub_spec=jupyterhub==X`) plus JupyterLab.
The DockerSpawner tests bake it once per machine (the image is saved to the shared test cache)."""

from vmlab.engine import Recipe
from vmlab.operations import files, pip, shell, users

recipe = Recipe("ctr-hub-user", become=True, vars={
    "jupyterhub_spec": "jupyterhub>=5,<6",
    "jupyterlab_spec": "jupyterlab>=4,<5",
})
recipe.step("the user", users.User("jovyan", shell="/bin/bash"))
recipe.step("the data folder", files.Directory("/home/jovyan/data", mode="0750", owner="jovyan", group="jovyan"))
# (pip trusts the host's CA bundle: the container provider mounts it into builders, never into the image)
recipe.step("jupyter", pip.Packages(("{{ jupyterhub_spec }}", "{{ jupyterlab_spec }}"), venv="/opt/jupyter"))
recipe.step("on the path", shell.Run(("ln", "-sf", "/opt/jupyter/bin/jupyterhub-singleuser", "/usr/local/bin/"),
                                     unless="test -L /usr/local/bin/jupyterhub-singleuser"))
