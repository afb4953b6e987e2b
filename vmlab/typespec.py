"""Generic instance types: `--type m+t4` asks for "at least a medium machine with one NVIDIA T4", and a provider
that knows its offers (`ChoosesTypes`) picks the cheapest type that fits. Pure parsing and matching; no cloud.

The form: words joined by `+` or `,`, each one of

- a size word, a minimum of vCPUs and memory: `s` (2 vCPU, 8 GiB), `m` (4, 16), `l` (8, 32), `xl` (16, 64),
  `2xl` (32, 128);
- a GPU model, optionally with a count: `t4`, `a10g`, `l4`, `v100`, `a100`, `2xt4`; or `gpu` (any GPU);
- a key=value: `cpu=8` (vCPUs), `mem=32` (GiB), `gpu=t4`, `gpus=2`, `gpumem=24` (GiB of GPU memory in all),
  `arch=arm64` (default x86_64).

A concrete type (`g4dn.xlarge`) has a dot and no `=`; anything else given to `--type` is this form.

Example::

    wanted = parse_request("m+t4")        # TypeRequest(vcpus=4, memory_gib=16, gpu="t4", gpus=1, ...)
    wanted.fits(vcpus=4, memory_mib=16384, gpu_names=("NVIDIA T4",), gpu_count=1, gpu_memory_mib=16384,
                architectures=("x86_64",))  # True
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from vmlab.errors import BadInput

#: size word -> (vCPUs, GiB of memory), minimums
SIZES: dict[str, tuple[int, int]] = {"s": (2, 8), "m": (4, 16), "l": (8, 32), "xl": (16, 64), "2xl": (32, 128)}
ARCHES = ("x86_64", "arm64")
_GPU_WORD = re.compile(r"^(?:(\d{1,2})x)?([a-z][a-z0-9-]{0,15})$")
_FORMS = "e.g. m+t4, l+a10g, gpu=t4, cpu=8,mem=32 (sizes s, m, l, xl, 2xl; see docs/ec2-provider.md)"
#: GPU model words vmlab knows (lower case, as EC2 names them); an unknown word is refused rather than never matched
GPU_MODELS = ("t4", "t4g", "a10g", "l4", "l40s", "v100", "a100", "h100", "h200", "k80", "m60", "v520")


@dataclass(frozen=True)
class TypeRequest:
    """What a generic type asks for: minimums, a GPU model (None: any, or no GPU when `gpus` is 0)."""

    text: str
    vcpus: int = 0
    memory_gib: float = 0
    gpu: str | None = None
    gpus: int = 0
    gpu_memory_gib: float = 0
    arch: str = "x86_64"

    def fits(self, *, vcpus: int | None, memory_mib: int | None, gpu_names: Iterable[str], gpu_count: int,
             gpu_memory_mib: int | None, architectures: Iterable[str]) -> bool:
        """Whether a type with these properties gives at least what is asked (unknown numbers never fit)."""
        if self.arch not in tuple(architectures):
            return False
        if (vcpus or 0) < self.vcpus or (memory_mib or 0) < self.memory_gib * 1024:
            return False
        if gpu_count < self.gpus or (gpu_memory_mib or 0) < self.gpu_memory_gib * 1024:
            return False
        if self.gpu is not None:
            names = [n.lower().split()[-1] for n in gpu_names if n.strip()]  # "NVIDIA T4" -> "t4"
            return self.gpu in names
        return True

    def describe(self) -> str:
        """Human words, e.g. "at least 4 vCPU, 16 GiB, 1x T4"."""
        parts = [f"{self.vcpus} vCPU" if self.vcpus else "", f"{self.memory_gib:g} GiB" if self.memory_gib else ""]
        if self.gpus:
            parts.append(f"{self.gpus}x {self.gpu.upper() if self.gpu else 'any GPU'}")
        if self.gpu_memory_gib:
            parts.append(f"{self.gpu_memory_gib:g} GiB GPU memory")
        if self.arch != "x86_64":
            parts.append(self.arch)
        shown = ", ".join(p for p in parts if p)
        return f"at least {shown}" if shown else "any type"


def is_generic(text: str) -> bool:
    """Whether `--type` text is the generic form (a concrete EC2 type has a dot and no `=`)."""
    return "." not in text or "=" in text


def _bad(text: str, why: str) -> BadInput:
    return BadInput(f"--type {text!r}: {why}", f"give an instance type (g4dn.xlarge) or a size and GPU, {_FORMS}")


def _number(text: str, key: str, value: str, whole: bool = True) -> float:
    try:
        number = int(value) if whole else float(value)
    except ValueError:
        raise _bad(text, f"{key}={value!r} is not a {'whole ' if whole else ''}number") from None
    if number <= 0 or number > 100_000:
        raise _bad(text, f"{key}={value} is out of range")
    return number


def _gpu_model(text: str, word: str) -> str:
    if word not in GPU_MODELS:
        raise _bad(text, f"unknown GPU model {word!r} (known: {', '.join(GPU_MODELS)})")
    return word


def parse_request(text: str) -> TypeRequest:
    """The TypeRequest of a generic `--type`; BadInput (one line, with the forms) when it is malformed."""
    words = [w.strip() for w in re.split(r"[+,]", text.strip().lower())]
    if not text.strip() or any(not w for w in words):
        raise _bad(text, "empty word")
    found: dict[str, object] = {}
    any_gpu = False

    def put(key: str, value: object) -> None:
        if key in found and found[key] != value:
            raise _bad(text, f"{key} is given twice")
        found[key] = value

    for word in words:
        key, eq, value = word.partition("=")
        if eq:
            if key == "cpu":
                put("vcpus", int(_number(text, key, value)))
            elif key == "mem":
                put("memory_gib", _number(text, key, value, whole=False))
            elif key == "gpu":
                put("gpu", _gpu_model(text, value))
            elif key == "gpus":
                put("gpus", int(_number(text, key, value)))
            elif key == "gpumem":
                put("gpu_memory_gib", _number(text, key, value, whole=False))
            elif key == "arch":
                if value not in ARCHES:
                    raise _bad(text, f"arch={value!r} is not one of {', '.join(ARCHES)}")
                put("arch", value)
            else:
                raise _bad(text, f"unknown key {key!r} (keys: cpu, mem, gpu, gpus, gpumem, arch)")
        elif word in SIZES:
            cpus, gib = SIZES[word]
            put("vcpus", cpus)
            put("memory_gib", float(gib))
        elif word == "gpu":
            any_gpu = True
        elif (match := _GPU_WORD.match(word)) is not None:
            put("gpu", _gpu_model(text, match.group(2)))
            if match.group(1):
                put("gpus", int(_number(text, "count", match.group(1))))
        else:
            raise _bad(text, f"{word!r} is neither a size (s, m, l, xl, 2xl), a GPU model nor key=value")
    if (any_gpu or found.get("gpu")) and not found.get("gpus"):
        found["gpus"] = 1
    return TypeRequest(text=text, **found)  # type: ignore[arg-type]
