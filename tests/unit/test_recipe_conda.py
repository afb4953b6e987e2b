"""recipes/conda.py planned against fresh hosts (the Miniforge download is pinned and checked, conda-forge only,
environments and kernels), against a host that already has conda, and refused for unusable environment files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from recipehost import DEBIAN_12, UBUNTU_2204, UBUNTU_2404, FreshHost, planned, skipped

from vmlab.engine.facts import FileStat
from vmlab.engine.loader import load_recipe
from vmlab.engine.runner import apply
from vmlab.errors import BadInput

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
SHA = "2e1ad2188fe69fcdd522c2b20c08c800a5c7411b775eca768318b1540ed32e53"
URL = "https://github.com/conda-forge/miniforge/releases/download/24.11.3-0/Miniforge3-24.11.3-0-Linux-x86_64.sh"
INSTALLER = "/var/cache/vmlab/Miniforge3-24.11.3-0.sh"


def conda_recap(os_release: str, variables: dict[str, object] | None = None, answers: dict | None = None):
    return apply(load_recipe(RECIPES / "conda.py"), FreshHost(os_release, answers=answers),
                 variables=variables or {}, check=True)


@pytest.mark.parametrize("os_release", [UBUNTU_2204, UBUNTU_2404, DEBIAN_12])
def test_fresh_host_downloads_the_pinned_installer_and_checks_it(os_release: str) -> None:
    recap = conda_recap(os_release)
    plan = planned(recap)
    assert plan["Miniforge installer"] == (f"download {URL} to {INSTALLER}",)
    download = next(r for r in recap.results if r.name == "Miniforge installer")
    assert download.status == "changed"
    assert plan["Miniforge"] == (f"""sh -c 'bash "$1" -b -p "$2" && rm -f -- "$1"' sh {INSTALLER} /opt/conda""",)
    assert plan["environment lab"] and plan["kernel lab"] == (
        "/opt/conda/envs/lab/bin/python -m ipykernel install --prefix /opt/conda --name lab "
        "--display-name 'Python (lab)'",)


def test_download_carries_the_sha256() -> None:
    """The sha256 reaches the write command, which refuses a file that does not match before it is used."""
    from vmlab.engine.facts import FactCache, Facts
    from vmlab.operations.files import Download

    op = Download(URL, INSTALLER, sha256=SHA, mode="0700")
    commands = list(op.plan(Facts(FactCache(FreshHost(DEBIAN_12)), True)))
    assert commands[0].argv[4:9] == (INSTALLER, "0700", "", SHA, "curl")


def test_condarc_has_only_the_chosen_channel() -> None:
    recap = apply(load_recipe(RECIPES / "conda.py"), FreshHost(UBUNTU_2404),
                  variables={"conda_channel": "https://conda.example.org/conda-forge"}, check=True, diff=True)
    condarc = next(r for r in recap.results if r.name == "conda-forge only")
    assert condarc.diff is not None
    assert '+  - "https://conda.example.org/conda-forge"\n' in condarc.diff
    assert "defaults" not in condarc.diff


def test_mirror_and_pinned_release_are_variables() -> None:
    plan = planned(conda_recap(UBUNTU_2404, {"miniforge_version": "25.1.1-0",
                                             "miniforge_mirror": "https://mirror.example.org/miniforge",
                                             "miniforge_sha256": "ab" * 32}))
    assert plan["Miniforge installer"] == (
        "download https://mirror.example.org/miniforge/25.1.1-0/Miniforge3-25.1.1-0-Linux-x86_64.sh to "
        "/var/cache/vmlab/Miniforge3-25.1.1-0.sh",)


def test_host_with_conda_skips_the_installer() -> None:
    from vmlab.engine.facts import PathInfo

    conda = PathInfo("file", "0755", "root", "root", 100)
    recap = conda_recap(UBUNTU_2404, answers={})
    assert "Miniforge installer" in planned(recap)
    host = FreshHost(UBUNTU_2404)
    host._answers[FileStat("/opt/conda/bin/conda").command()] = _stat_output(conda)
    recap = apply(load_recipe(RECIPES / "conda.py"), host, check=True)
    assert {"installer folder", "Miniforge installer"} <= skipped(recap)
    assert "Miniforge" not in planned(recap)  # `creates` holds


def _stat_output(info):
    from vmlab.engine.command import RunResult

    return RunResult(0, f"regular file|{info.mode[1:]}|{info.owner}|{info.group}|{info.size}\n{'0' * 64}\n", "")


@pytest.mark.parametrize("text, message", [
    ("name: lab\ndependencies: [python=3.12, ipykernel\n", "environment file does not parse (line 3)"),
    ("dependencies:\n  - ipykernel\n", "has no usable `name`"),
    ("name: lab\ndependencies:\n  - numpy\n", "has no ipykernel"),
])
def test_unusable_environment_file_stops_the_recipe_as_it_loads(tmp_path: Path, text: str, message: str) -> None:
    shutil.copy(RECIPES / "conda.py", tmp_path / "conda.py")
    (tmp_path / "environment.yml").write_text(text)
    with pytest.raises(BadInput) as err:
        load_recipe(tmp_path / "conda.py")
    assert message in str(err.value)
    assert str(tmp_path / "environment.yml") in str(err.value)
    assert "\n" not in str(err.value)


def test_shipped_environment_file_is_usable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(RECIPES))
    import conda  # the recipe module

    assert conda.environment_name(RECIPES / "environment.yml") == "lab"


MD5 = "0123456789abcdef0123456789abcdef"


def test_explicit_lock_next_to_the_file_makes_the_environment(tmp_path: Path) -> None:
    shutil.copy(RECIPES / "conda.py", tmp_path / "conda.py")
    shutil.copy(RECIPES / "environment.yml", tmp_path / "environment.yml")
    (tmp_path / "environment.lock").write_text(
        f"# platform: linux-64\n@EXPLICIT\nhttps://conda.anaconda.org/conda-forge/linux-64/numpy-2.1.3-py312h1.conda#{MD5}\n")
    recap = apply(load_recipe(tmp_path / "conda.py"), FreshHost(DEBIAN_12), check=True)
    plan = planned(recap)
    assert plan["environment lab lock"][0].startswith("write /opt/conda/vmlab-envs/lab.lock (")
    (command,) = plan["environment lab"]
    assert '--file "$lock"' in command and command.endswith(" sh /opt/conda lab")
    # without a lock, an old one on the host is removed so it is never used again
    old_lock = {FileStat("/opt/conda/vmlab-envs/lab.lock"): "regular file|644|root|root|120\n" + "ab" * 32 + "  -\n"}
    plain = apply(load_recipe(RECIPES / "conda.py"), FreshHost(DEBIAN_12, answers=old_lock), check=True)
    assert planned(plain)["environment lab lock"] == ("rm -f /opt/conda/vmlab-envs/lab.lock",)


@pytest.mark.parametrize("text", ["numpy=2.1\n", f"@EXPLICIT\nhttp://x/numpy.conda#{MD5}\n", "@EXPLICIT\n",
                                  "@EXPLICIT\nhttps://x/numpy.conda\n"])
def test_a_lock_that_is_not_explicit_stops_the_recipe_as_it_loads(tmp_path: Path, text: str) -> None:
    shutil.copy(RECIPES / "conda.py", tmp_path / "conda.py")
    shutil.copy(RECIPES / "environment.yml", tmp_path / "environment.yml")
    (tmp_path / "environment.lock").write_text(text)
    with pytest.raises(BadInput, match="not an explicit conda lock"):
        load_recipe(tmp_path / "conda.py")
