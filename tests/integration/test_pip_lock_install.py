"""pip.Locked for real: pip installs a locked wheel into a venv under tmp_path with --require-hashes, and refuses
it when its hash in the lock is wrong. The wheel is built here and pip is kept off every index (no internet)."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from planning import apply_locally  # noqa: E402

from vmlab.operations.pip import Locked  # noqa: E402

pytestmark = pytest.mark.timeout(300)


def tiny_wheel(folder: Path) -> Path:
    """A pure-Python wheel `vmlabtiny-1.0` with one module, made by hand (the wheel format is a zip)."""
    files = {"vmlabtiny.py": b"VERSION = '1.0'\n",
             "vmlabtiny-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: vmlabtiny\nVersion: 1.0\n",
             "vmlabtiny-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: vmlab-tests\nRoot-Is-Purelib: true\n"
                                              b"Tag: py3-none-any\n"}
    record = "".join(f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()}"
                     f",{len(data)}\n" for name, data in files.items()) + "vmlabtiny-1.0.dist-info/RECORD,,\n"
    wheel = folder / "vmlabtiny-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in {**files, "vmlabtiny-1.0.dist-info/RECORD": record.encode()}.items():
            zf.writestr(name, data)
    return wheel


def test_real_install_offline_and_a_wrong_hash_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real pip, no index (only tmp_path's wheel), the machine's pip config ignored: the locked wheel installs;
    a changed hash stops pip."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    digest = hashlib.sha256(tiny_wheel(wheels).read_bytes()).hexdigest()
    for name, value in {"PIP_CONFIG_FILE": "/dev/null", "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels),
                        "PIP_DISABLE_PIP_VERSION_CHECK": "1"}.items():
        monkeypatch.setenv(name, value)
    venv = tmp_path / "venv"
    lock = tmp_path / "lock.txt"
    lock.write_text(f"vmlabtiny==1.0 \\\n    --hash=sha256:{digest}\n")
    op = Locked(str(lock), dest=str(tmp_path / "requirements.lock"), venv=str(venv), python=sys.executable)
    commands = apply_locally(op)
    assert commands[-1].argv[3:6] == ("install", "--require-hashes", "--no-deps")
    assert subprocess.run([venv / "bin" / "python", "-c", "import vmlabtiny; assert vmlabtiny.VERSION == '1.0'"],
                          timeout=60).returncode == 0
    assert apply_locally(op) == []  # installed and the same lock: nothing to do

    subprocess.run([venv / "bin" / "python", "-m", "pip", "uninstall", "-qy", "vmlabtiny"], check=True, timeout=120)
    lock.write_text(f"vmlabtiny==1.0 \\\n    --hash=sha256:{'0' * 8}{digest[8:]}\n")
    tampered = Locked(str(lock), dest=str(tmp_path / "requirements.lock"), venv=str(venv), python=sys.executable)
    with pytest.raises(AssertionError, match="DO NOT MATCH THE HASHES"):
        apply_locally(tampered)
