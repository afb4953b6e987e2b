"""NVIDIA driver and CUDA toolkit from NVIDIA's apt repository, for Ubuntu 22.04/24.04 and Debian 12.

    vmlab bake recipes/cuda.py --provider ec2 --base ubuntu-24.04 --builder-type t3.large
    vmlab bake recipes/lab.py --provider ec2 -e cuda=true -e cuda_version=12.8

The builder needs no GPU: the driver's kernel module is built by DKMS for every kernel on the disk, so you can
bake on a cheap CPU instance and run the image on a g4dn. Where a GPU is present, the last step loads the
driver and checks that `nvidia-smi` sees it. A host whose driver vmlab did not install (a Deep Learning AMI,
say: `nvidia-smi` is there but the `cuda_driver` package is not) is left alone: every step is skipped.

In a container (`vmlab bake --provider container`, or any host that is one: the `Container` fact) only the
toolkit and its libraries are installed: no driver package, kernel headers, DKMS or modprobe. A container has
no kernel of its own; the host's driver (kernel module, `libcuda`, `nvidia-smi`) comes in when the container
starts, through the NVIDIA container toolkit (`docker run --gpus all`, CDI, the Kubernetes device plugin: see
docs/containers.md). An `nvidia-smi` found there is the host's, so it does not make the recipe skip.

Variables:
- `cuda_version` ("12.6"): the toolkit, `cuda-toolkit-12-6`; must be offered for the release (see
  `vmlab.operations.nvidia.OFFERED`), or the run stops before installing anything.
- `cuda_driver` ("cuda-drivers"): the driver package; "nvidia-open" for the open kernel modules (Turing and
  newer), "cuda-drivers-570" to hold a driver branch.
- `cuda_repo_url`: the folder holding `ubuntu2404/x86_64/...`; point it at your organisation's mirror.
- `cuda_keyring_version` ("1.1-1"): the `cuda-keyring` package fetched from that repository; it is checked
  against a pinned sha256 before it is installed (`vmlab.operations.nvidia.KEYRING_SHA256`).
- `cuda_keyring_sha256` (""): that package's sha256, needed only for a keyring version vmlab does not pin.
"""

from vmlab.engine import Recipe, varcheck
from vmlab.engine.facts import Container, OsRelease, Which
from vmlab.errors import BadInput
from vmlab.operations import apt, files, nvidia, shell
from vmlab.operations.apt import DpkgInstalled

recipe = Recipe("cuda", become=True, vars={
    "cuda_version": "12.6",
    "cuda_driver": "cuda-drivers",
    "cuda_repo_url": "https://developer.download.nvidia.com/compute/cuda/repos",
    "cuda_keyring_version": "1.1-1",
    "cuda_keyring_sha256": "",
})


def in_container(ctx):
    """The host is a container: its kernel and driver are the machine's it runs on."""
    return ctx.facts.get(Container()) != ""


def preinstalled(ctx):
    """A driver vmlab did not install (a Deep Learning AMI): `nvidia-smi` is there, our driver package is not.
    Never in a container, where an `nvidia-smi` is the host's, mounted in."""
    return (not in_container(ctx) and ctx.facts.get(Which("nvidia-smi")) is not None
            and not ctx.facts.get(DpkgInstalled((ctx.vars["cuda_driver"],))))


def wanted(ctx):
    return not preinstalled(ctx)


def with_driver(ctx):
    """A VM or a machine: the driver, its kernel module and what builds it are installed here."""
    return wanted(ctx) and not in_container(ctx)


def toolkit_only(ctx):
    return wanted(ctx) and in_container(ctx)


def on_debian(ctx):
    return wanted(ctx) and ctx.facts.get(OsRelease()).get("ID") == "debian"


def with_gpu(ctx):
    return with_driver(ctx) and ctx.facts.get(nvidia.NvidiaGpus()) > 0


@recipe.check
def _variables(v):
    varcheck.package(v, "cuda_driver", "cuda-drivers")
    varcheck.url(v, "cuda_repo_url", "https://developer.download.nvidia.com/compute/cuda/repos")
    varcheck.version(v, "cuda_keyring_version", "1.1-1")


@recipe.check_host
def _release_and_version(ctx):
    """Unsupported release or a CUDA version its repository does not offer: stop before anything is installed."""
    if preinstalled(ctx):
        return
    nvidia.check_version(nvidia.repo_dir(ctx.facts.get(OsRelease())), ctx.vars["cuda_version"])
    if ctx.facts.get(nvidia.Machine()) not in nvidia.ARCHES:
        raise BadInput(f"cuda: no CUDA repository for {ctx.facts.get(nvidia.Machine())}",
                       "use an x86_64 or aarch64 host, or -e cuda=false")


# NVIDIA's driver packages for Debian need libraries from its `contrib` component
CONTRIB = """\
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
  sed -i -E '/^Components:/{/contrib/!s/$/ contrib/}' /etc/apt/sources.list.d/debian.sources
fi
if [ -f /etc/apt/sources.list ]; then
  sed -i -E '/^deb(-src)? .* main/{/contrib/!s/ main/ main contrib/}' /etc/apt/sources.list
fi
"""
HAS_CONTRIB = ("grep -Rqs -E '^(deb .* main.* contrib|Components:.* contrib)' "
               "/etc/apt/sources.list /etc/apt/sources.list.d/")
# kernel headers for every installed kernel, so DKMS builds the module for the kernel the lab will boot
HEADERS = """\
for d in /lib/modules/*/; do
  k=$(basename "$d")
  [ -e "/boot/vmlinuz-$k" ] || continue  # modules left behind by a removed kernel
  [ -e "$d/build" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "linux-headers-$k"
done
"""
HAS_HEADERS = ('for d in /lib/modules/*/; do k=$(basename "$d"); [ ! -e "/boot/vmlinuz-$k" ] || [ -e "$d/build" ] '
               '|| exit 1; done')
TOOLKIT = "cuda-toolkit-{{ cuda_version | string | replace('.', '-') }}"

recipe.step("contrib component", shell.Shell(CONTRIB, unless=HAS_CONTRIB), when=on_debian)
recipe.step("package lists", apt.UpdateCache(max_age=6 * 3600), when=wanted)
recipe.step("kernel headers", shell.Shell(HEADERS, unless=HAS_HEADERS), when=with_driver)
recipe.step("DKMS and downloader", apt.Packages(("dkms", "curl", "ca-certificates")), when=with_driver)
recipe.step("downloader", apt.Packages(("curl", "ca-certificates")), when=toolkit_only)
recipe.step("CUDA repository", nvidia.CudaRepository(url="{{ cuda_repo_url }}",
                                                     keyring_version="{{ cuda_keyring_version }}",
                                                     keyring_sha256="{{ cuda_keyring_sha256 }}"), when=wanted)
recipe.step("driver and toolkit", apt.Packages(("{{ cuda_driver }}", TOOLKIT)), when=with_driver)
recipe.step("toolkit", apt.Packages((TOOLKIT,)), when=toolkit_only)
recipe.step("CUDA on PATH", files.File("/etc/profile.d/cuda.sh", content="export PATH=/usr/local/cuda/bin:$PATH\n",
                                       mode="0644"), when=wanted)
# on a GPU host: load the module just built and ask the driver; a CPU builder skips this
recipe.step("driver answers", shell.Shell("modprobe nvidia && nvidia-smi -L", unless="nvidia-smi -L"),
            when=with_gpu)
