"""Miniforge (conda with conda-forge only, never Anaconda's `defaults` channel) in /opt/conda, plus the
environments described by `environment.yml` files, each registered as a Jupyter kernel.

    vmlab bake recipes/conda.py --provider local
    vmlab provision recipes/conda.py -i inventory.yaml -e conda_channel=https://conda.example.org/conda-forge

The installer is checked against `miniforge_sha256` before it runs. An environment is created once, and
updated (`conda env update --prune`) whenever its file changes; a file that does not parse, has no `name` or
lacks `ipykernel` stops the recipe as it loads, before any host is touched.

Pinned environments: an explicit lock next to the file (`environment.lock` beside `environment.yml`: exact
package URLs with their md5, conda's `@EXPLICIT` format) is used instead of solving the file: the environment
is made (again, when the lock changes) with `conda create --file LOCK`, which installs exactly those packages
and checks each one's md5. Make it on a host where the environment was solved once::

    vmlab ssh LAB /opt/conda/bin/conda list -n lab --explicit --md5 > recipes/environment.lock

None ships with vmlab (solving needs conda, which vmlab's own machines do not run): without a lock, the file's
specs are solved at bake time, and `vmlab images show` lists the exact conda packages each image got.

Variables: `conda_prefix` (/opt/conda), `miniforge_version` and `miniforge_sha256` (pin another release:
its sha256 is on the release page), `miniforge_mirror` (a mirror of the GitHub release downloads, same
layout: VERSION/Miniforge3-VERSION-Linux-x86_64.sh), `conda_channel` (conda-forge, or a mirror's URL).
The environment files are `ENVIRONMENTS` below.
"""

import re
from pathlib import Path

import yaml

from vmlab.engine import Recipe, varcheck
from vmlab.engine.facts import FileStat
from vmlab.errors import BadInput
from vmlab.operations import apt, files, shell

HERE = Path(__file__).resolve().parent
#: environment.yml files to create; each `name:` becomes /opt/conda/envs/NAME and the kernel "Python (NAME)"
ENVIRONMENTS = [HERE / "environment.yml"]


def environment_name(path):
    """The `name` of a conda environment file; BadInput (naming the file and the fix) when it cannot be used."""
    try:
        spec = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise BadInput(f"{path}: cannot read the environment file: {exc.strerror}",
                       "fix the path in ENVIRONMENTS") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise BadInput(f"{path}: environment file does not parse{where}: {getattr(exc, 'problem', exc)}",
                       "fix the YAML; `conda env create -f FILE --dry-run` checks it") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"].isidentifier():
        raise BadInput(f"{path}: environment file has no usable `name`", "add e.g. `name: lab` (letters, digits, _)")
    deps = spec.get("dependencies") or []
    if not any(isinstance(d, str) and d.split("=")[0].split(">")[0].split("<")[0].strip() == "ipykernel"
               for d in deps):
        raise BadInput(f"{path}: environment {spec['name']!r} has no ipykernel, so it cannot be a Jupyter kernel",
                       "add `- ipykernel` to its dependencies")
    return spec["name"]


EXPLICIT_LINE = re.compile(r"https://\S+#([0-9a-f]{32}|sha256:[0-9a-f]{64})")


def check_lock(path):
    """BadInput unless `path` is an explicit lock: `@EXPLICIT`, then https package URLs each with its md5."""
    lines = [x.strip() for x in Path(path).read_text().splitlines() if x.strip() and not x.startswith("#")]
    bad = next((x for x in lines[1:] if not EXPLICIT_LINE.fullmatch(x)), None)
    if not lines or lines[0] != "@EXPLICIT" or bad is not None or len(lines) < 2:
        raise BadInput(f"{path}: not an explicit conda lock" + (f" (line {bad!r})" if bad else ""),
                       "make it with `conda list -n NAME --explicit --md5 > FILE`")


recipe = Recipe("conda", become=True, vars={
    "conda_prefix": "/opt/conda",
    "miniforge_version": "24.11.3-0",
    "miniforge_mirror": "https://github.com/conda-forge/miniforge/releases/download",
    "miniforge_sha256": "2e1ad2188fe69fcdd522c2b20c08c800a5c7411b775eca768318b1540ed32e53",
    "conda_channel": "conda-forge",
})
CHANNEL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@recipe.check
def _variables(v):
    varcheck.abs_path(v, "conda_prefix", "/opt/conda")
    varcheck.version(v, "miniforge_version", "24.11.3-0")
    varcheck.url(v, "miniforge_mirror", "https://github.com/conda-forge/miniforge/releases/download")
    varcheck.sha256(v, "miniforge_sha256")
    channel = v["conda_channel"]
    if not (isinstance(channel, str) and (CHANNEL.fullmatch(channel) or varcheck.URL.fullmatch(channel))):
        raise BadInput(f"conda_channel {channel!r} is not a channel name or an http(s) URL",
                       "use e.g. -e conda_channel=conda-forge")


# variables hold no templates themselves: the URL is put together here
URL = "{{ miniforge_mirror }}/{{ miniforge_version }}/Miniforge3-{{ miniforge_version }}-Linux-x86_64.sh"
INSTALLER = "/var/cache/vmlab/Miniforge3-{{ miniforge_version }}.sh"


def no_conda_yet(ctx):
    return ctx.facts.get(FileStat(ctx.vars["conda_prefix"] + "/bin/conda")) is None


recipe.step("downloader", apt.Packages(("ca-certificates", "curl", "bzip2")))
recipe.step("installer folder", files.Directory("/var/cache/vmlab", mode="0755"), when=no_conda_yet)
recipe.step("Miniforge installer", files.Download(URL, INSTALLER, sha256="{{ miniforge_sha256 }}",
                                                  mode="0700"), when=no_conda_yet)
# values are arguments ($1 the installer, $2 the prefix), never shell text
recipe.step("Miniforge", shell.Run(("sh", "-c", 'bash "$1" -b -p "$2" && rm -f -- "$1"', "sh", INSTALLER,
                                    "{{ conda_prefix }}"), creates="{{ conda_prefix }}/bin/conda"))
# the channel as a JSON string (which YAML reads as the same string), so no value can add a key
recipe.step("conda-forge only", files.Template("{{ conda_prefix }}/.condarc", mode="0644", source=(
    "channels:\n  - {{ conda_channel | tojson }}\nchannel_priority: strict\nauto_update_conda: false\n")))
recipe.step("conda for login shells", files.Template("/etc/profile.d/conda.sh", mode="0644", source=(
    ". {{ (conda_prefix ~ '/etc/profile.d/conda.sh') | quote }}\n")))
recipe.step("environment files", files.Directory("{{ conda_prefix }}/vmlab-envs", mode="0755"))

# create, or update when the file changed since it was last applied (the `.applied` copy says what was); with
# an explicit lock, made from the lock alone, exactly; $1 the conda prefix, $2 the environment's name
ENV_SCRIPT = """\
set -e
p=$1 n=$2
f=$p/vmlab-envs/$n.yml lock=$p/vmlab-envs/$n.lock
if [ -f "$lock" ]; then
  [ ! -d "$p/envs/$n" ] || "$p/bin/conda" env remove -y -n "$n"
  "$p/bin/conda" create -y -n "$n" --file "$lock"
  cp "$lock" "$lock.applied"
elif [ -d "$p/envs/$n" ]; then "$p/bin/conda" env update -n "$n" -f "$f" --prune
else "$p/bin/conda" env create -n "$n" -f "$f"; fi
"$p/bin/conda" clean -afy >/dev/null
cp "$f" "$f.applied"
"""
for env_file in ENVIRONMENTS:
    name = environment_name(env_file)
    yml = f"{{{{ conda_prefix }}}}/vmlab-envs/{name}.yml"
    lock = Path(env_file).with_suffix(".lock")
    recipe.step(f"environment {name} file", files.Copy(str(env_file), yml, mode="0644"))
    quoted = f"{{{{ (conda_prefix ~ '/vmlab-envs/{name}') | quote }}}}"
    applied = f"cmp -s {quoted}.yml {quoted}.yml.applied"
    if lock.exists():
        check_lock(lock)
        recipe.step(f"environment {name} lock", files.Copy(str(lock), yml[:-4] + ".lock", mode="0644"))
        applied += f" && cmp -s {quoted}.lock {quoted}.lock.applied"
    else:  # a lock dropped since the last run must not be used again
        recipe.step(f"environment {name} lock", files.File(yml[:-4] + ".lock", present=False))
    recipe.step(f"environment {name}", shell.Run(("sh", "-c", ENV_SCRIPT, "sh", "{{ conda_prefix }}", name),
                                                 unless=applied))
    recipe.step(f"kernel {name}", shell.Run(
        (f"{{{{ conda_prefix }}}}/envs/{name}/bin/python", "-m", "ipykernel", "install", "--prefix",
         "{{ conda_prefix }}", "--name", name, "--display-name", f"Python ({name})"),
        creates=f"{{{{ conda_prefix }}}}/share/jupyter/kernels/{name}/kernel.json"))
