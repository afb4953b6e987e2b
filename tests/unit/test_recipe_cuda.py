"""recipes/cuda.py and lab.py's `cuda` switch, planned (check mode) against fresh hosts of each supported release,
with and without a GPU, on EC2 and in QEMU, on a Deep Learning AMI, and refused for what it cannot do."""

from __future__ import annotations

from pathlib import Path

import pytest
from recipehost import AMAZON_2023, DEBIAN_12, UBUNTU_2004, UBUNTU_2204, UBUNTU_2404, FreshHost, planned, skipped

from vmlab.engine.facts import Which
from vmlab.engine.loader import load_recipe
from vmlab.engine.runner import apply
from vmlab.errors import BadInput
from vmlab.operations.nvidia import OFFERED, CudaRepository, check_version, repo_dir

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
NVIDIA = "https://developer.download.nvidia.com/compute/cuda/repos"


def cuda_plan(os_release: str, **host: object) -> dict[str, tuple[str, ...]]:
    recipe = load_recipe(RECIPES / "cuda.py")
    variables = host.pop("variables", {})
    return planned(apply(recipe, FreshHost(os_release, **host), variables=variables, check=True))  # type: ignore


@pytest.mark.parametrize("os_release, folder", [
    (UBUNTU_2204, "ubuntu2204"), (UBUNTU_2404, "ubuntu2404"), (DEBIAN_12, "debian12"),
])
@pytest.mark.parametrize("gpus", [0, 1])
def test_fresh_host_gets_the_release_repository_driver_and_toolkit(os_release: str, folder: str, gpus: int) -> None:
    plan = cuda_plan(os_release, gpus=gpus)
    repo = plan["CUDA repository"]
    assert f"download {NVIDIA}/{folder}/x86_64/cuda-keyring_1.1-1_all.deb to /tmp/cuda-keyring_1.1-1_all.deb" in repo
    assert "dpkg -i /tmp/cuda-keyring_1.1-1_all.deb" in repo
    assert any(c.startswith(f"write /etc/apt/sources.list.d/cuda-{folder}-x86_64.list") for c in repo)
    assert repo[-1] == "apt-get update"
    install = plan["driver and toolkit"][0]
    assert install.startswith("env DEBIAN_FRONTEND=noninteractive apt-get install -y")
    assert install.endswith("cuda-drivers cuda-toolkit-12-6")
    assert "kernel headers" in plan and "DKMS and downloader" in plan
    # contrib is a Debian matter; the GPU check only where there is a GPU
    assert ("contrib component" in plan) == (folder == "debian12")
    assert ("driver answers" in plan) == (gpus > 0)
    if gpus:
        assert plan["driver answers"] == ("sh -c 'modprobe nvidia && nvidia-smi -L'",)


def test_source_list_uses_the_keyring_and_a_mirror() -> None:
    op = CudaRepository(url="https://mirror.example.org/cuda/repos/")
    plan = cuda_plan(UBUNTU_2404, variables={"cuda_repo_url": "https://mirror.example.org/cuda/repos/",
                                             "cuda_version": "12.8", "cuda_driver": "nvidia-open"})
    assert ("download https://mirror.example.org/cuda/repos/ubuntu2404/x86_64/cuda-keyring_1.1-1_all.deb to "
            "/tmp/cuda-keyring_1.1-1_all.deb") in plan["CUDA repository"]
    assert plan["driver and toolkit"][0].endswith("nvidia-open cuda-toolkit-12-8")
    assert op.url.endswith("/")  # the trailing slash is dropped when the repository URL is built


def test_source_line_text() -> None:
    from vmlab.engine.facts import FactCache, Facts

    host = FreshHost(DEBIAN_12, machine="aarch64")
    commands = list(CudaRepository().plan(Facts(FactCache(host), True)))
    write = next(c for c in commands if c.label and c.label.startswith("write /etc/apt/sources.list.d/"))
    assert write.label.startswith("write /etc/apt/sources.list.d/cuda-debian12-sbsa.list")
    assert write.stdin == (b"deb [signed-by=/usr/share/keyrings/cuda-archive-keyring.gpg] "
                           b"https://developer.download.nvidia.com/compute/cuda/repos/debian12/sbsa/ /\n")


def test_deep_learning_ami_is_left_alone() -> None:
    # nvidia-smi is there, vmlab's driver package is not: every step skipped, even on a release vmlab's CUDA
    # recipe would refuse (the DLAMI on Amazon Linux)
    for release in (UBUNTU_2204, AMAZON_2023):
        host = FreshHost(release, gpus=1, cloud="Amazon EC2", answers={Which("nvidia-smi"): "/usr/bin/nvidia-smi\n"})
        recap = apply(load_recipe(RECIPES / "cuda.py"), host, check=True)
        assert planned(recap) == {}
        assert skipped(recap) == {r.name for r in recap.results}


@pytest.mark.parametrize("os_release, variables, message", [
    (UBUNTU_2004, {}, "cuda: ubuntu 20.04 has no CUDA repository vmlab supports"),
    (AMAZON_2023, {}, "cuda: amzn 2023 has no CUDA repository vmlab supports"),
    (UBUNTU_2404, {"cuda_version": "12.2"}, "cuda_version '12.2' is not offered for ubuntu2404"),
    (DEBIAN_12, {"cuda_version": "11.8"}, "cuda_version '11.8' is not offered for debian12"),
])
def test_unsupported_release_or_version_is_refused_before_anything(os_release: str, variables: dict[str, str],
                                                                   message: str) -> None:
    host = FreshHost(os_release, gpus=1)
    with pytest.raises(BadInput) as err:
        apply(load_recipe(RECIPES / "cuda.py"), host, variables=variables, check=False)
    assert message in str(err.value)
    assert "-e cuda" in str(err.value)  # the fix is named
    assert "\n" not in str(err.value)
    # only facts were read: nothing was installed
    assert all(c.argv[0] in ("cat", "sh", "uname", "dpkg-query") and "apt-get install" not in str(c.argv)
               for c in host.asked)


def test_version_table_helpers() -> None:
    assert repo_dir({"ID": "ubuntu", "VERSION_ID": "24.04"}) == "ubuntu2404"
    for folder, versions in OFFERED.items():
        for v in versions:
            check_version(folder, v)
    with pytest.raises(BadInput, match="set e.g. -e cuda_version="):
        check_version("ubuntu2204", "12.10")


def test_machine_without_repository_is_refused() -> None:
    with pytest.raises(BadInput, match="no CUDA repository for riscv64"):
        apply(load_recipe(RECIPES / "cuda.py"), FreshHost(UBUNTU_2404, machine="riscv64"), check=True)


# ---- lab.py's switch --------------------------------------------------------------------------------------


def lab_plan(os_release: str, variables: dict[str, object] | None = None, **host: object):
    recipe = load_recipe(RECIPES / "lab.py")
    return apply(recipe, FreshHost(os_release, **host), variables={"user": "admin", **(variables or {})},  # type: ignore
                 check=True)


def cuda_steps(names: set[str]) -> set[str]:
    return {n for n in names if n.startswith("cuda: ")}


@pytest.mark.parametrize("cloud, gpus, cuda, installs", [
    ("QEMU", 0, "auto", False),        # the local provider / the e2e VM
    ("QEMU", 1, "auto", True),         # a workstation with a GPU
    ("Amazon EC2", 0, "auto", True),   # a CPU builder baking for g4dn
    ("Amazon EC2", 1, "auto", True),
    ("Amazon EC2", 1, False, False),
    ("QEMU", 0, True, True),
])
def test_lab_installs_cuda_when_the_lab_will_have_a_gpu(cloud: str, gpus: int, cuda: object, installs: bool) -> None:
    recap = lab_plan(UBUNTU_2404, {"cuda": cuda}, gpus=gpus, cloud=cloud)
    plan = planned(recap)
    assert bool(cuda_steps(set(plan))) == installs
    if not installs:
        assert {n for n in skipped(recap) if n.startswith("cuda: ")} == {
            r.name for r in recap.results if r.name.startswith("cuda: ")}


def test_lab_refuses_cuda_on_an_unsupported_release_only_when_cuda_applies() -> None:
    with pytest.raises(BadInput, match="ubuntu 20.04"):
        lab_plan(UBUNTU_2004, cloud="Amazon EC2")
    assert planned(lab_plan(UBUNTU_2004, {"cuda": False}, cloud="Amazon EC2"))


def test_lab_switches_are_checked_before_any_host() -> None:
    from vmlab.engine.runner import prepare

    recipe = load_recipe(RECIPES / "lab.py")
    with pytest.raises(BadInput, match="cuda 'maybe' is not auto, true or false"):
        prepare(recipe, {**recipe.vars, "user": "admin", "cuda": "maybe"})
    with pytest.raises(BadInput, match="conda 'no' is not true or false"):
        prepare(recipe, {**recipe.vars, "user": "admin", "conda": "no"})


# ---- the keyring package is a trust anchor: pinned by sha256 ------------------------------------------------


@pytest.mark.parametrize("os_release, folder, machine, arch", [
    (UBUNTU_2204, "ubuntu2204", "x86_64", "x86_64"), (UBUNTU_2404, "ubuntu2404", "aarch64", "sbsa"),
    (DEBIAN_12, "debian12", "x86_64", "x86_64"),
])
def test_keyring_download_is_checked_against_the_pin(os_release: str, folder: str, machine: str, arch: str) -> None:
    from vmlab.engine.facts import FactCache, Facts
    from vmlab.operations.nvidia import KEYRING_SHA256

    commands = list(CudaRepository().plan(Facts(FactCache(FreshHost(os_release, machine=machine)), True)))
    download = next(c for c in commands if c.label and c.label.startswith("download "))
    pin = KEYRING_SHA256[("1.1-1", folder, arch)]
    # write_file's sha256 argument: the file is moved into place (and dpkg runs) only when it matches
    assert download.argv[4:8] == ("/tmp/cuda-keyring_1.1-1_all.deb", "0644", "", pin)
    assert f"/{folder}/{arch}/cuda-keyring_1.1-1_all.deb" in download.argv[-1]


def test_every_supported_repository_has_a_pin() -> None:
    from vmlab.operations.nvidia import KEYRING_SHA256

    for folder in OFFERED:
        for arch in ("x86_64", "sbsa"):
            assert len(KEYRING_SHA256[("1.1-1", folder, arch)]) == 64


def test_unpinned_keyring_version_is_refused_before_any_host() -> None:
    from vmlab.engine.runner import prepare

    recipe = load_recipe(RECIPES / "cuda.py")
    with pytest.raises(BadInput) as err:
        prepare(recipe, {**recipe.vars, "cuda_keyring_version": "1.2-1"})
    assert "cuda-keyring 1.2-1 has no pinned sha256" in str(err.value) and "cuda_keyring_sha256" in str(err.value)
    pin = "ab" * 32
    plan = cuda_plan(UBUNTU_2404, variables={"cuda_keyring_version": "1.2-1", "cuda_keyring_sha256": pin})
    assert any("cuda-keyring_1.2-1_all.deb" in c for c in plan["CUDA repository"])
    with pytest.raises(BadInput, match="is not a sha256"):
        prepare(recipe, {**recipe.vars, "cuda_keyring_sha256": "nope"})


# ---- in a container: the toolkit and its libraries only, the driver is the host's ----------------------------

DRIVER_WORDS = ("cuda-drivers", "nvidia-open", "nvidia-driver", "dkms", "linux-headers", "modprobe")


@pytest.mark.parametrize("os_release", [UBUNTU_2204, UBUNTU_2404, DEBIAN_12])
@pytest.mark.parametrize("gpus", [0, 1])
def test_container_plans_the_toolkit_only(os_release: str, gpus: int) -> None:
    vm = cuda_plan(os_release, gpus=gpus)
    ctr = cuda_plan(os_release, gpus=gpus, container="podman")
    (install,) = ctr["toolkit"]
    assert install.startswith("env DEBIAN_FRONTEND=noninteractive apt-get install -y")
    assert install.endswith(" cuda-toolkit-12-6")
    assert ctr["downloader"][0].endswith(" curl ca-certificates")
    assert ctr["CUDA repository"] == vm["CUDA repository"] and "CUDA on PATH" in ctr
    # what a VM plans and a container does not: exactly the driver, its kernel module and their check
    assert set(vm) - set(ctr) == {"kernel headers", "DKMS and downloader", "driver and toolkit",
                                  *(("driver answers",) if gpus else ())}
    assert set(ctr) - set(vm) == {"toolkit", "downloader"}
    commands = " ".join(c for step in ctr.values() for c in step)
    assert not [w for w in DRIVER_WORDS if w in commands]
    assert "cuda-drivers" in " ".join(vm["driver and toolkit"])  # the words are the ones a VM does plan


def test_container_with_the_hosts_nvidia_smi_still_gets_the_toolkit() -> None:
    """The NVIDIA container toolkit mounts the host's nvidia-smi: in a container that is no preinstalled driver
    (a Deep Learning AMI's is left alone, see above), and no driver package is asked for, whichever is named."""
    host = {"gpus": 1, "container": "docker", "answers": {Which("nvidia-smi"): "/usr/bin/nvidia-smi\n"}}
    plan = cuda_plan(UBUNTU_2404, variables={"cuda_driver": "nvidia-open", "cuda_version": "12.8"}, **host)
    assert plan["toolkit"][0].endswith(" cuda-toolkit-12-8")
    assert "nvidia-open" not in " ".join(c for step in plan.values() for c in step)


@pytest.mark.parametrize("cloud, gpus, container, installs", [
    ("Amazon EC2", 0, "podman", False),  # `--provider container` on an EC2 build machine: not a GPU image
    ("Amazon EC2", 1, "podman", True),
    ("QEMU", 1, "docker", True),
    ("Amazon EC2", 0, "", True),         # the same machine as a VM builder: the image is for g4dn
])
def test_lab_auto_cuda_in_a_container_goes_by_the_gpu(cloud: str, gpus: int, container: str,
                                                       installs: bool) -> None:
    plan = planned(lab_plan(UBUNTU_2404, gpus=gpus, cloud=cloud, container=container))
    assert bool(cuda_steps(set(plan))) == installs
    assert ("cuda: toolkit" in plan) == (installs and bool(container))
    assert ("cuda: driver and toolkit" in plan) == (installs and not container)
